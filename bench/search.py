"""The search against the grid: does a searched shape beat a cell at the cell's own latency, and how good is the
latency predictor?

Given a project whose depth stage is done (run on it in place: give a copy), this
1. times the grid and the per-layer shape table on this machine, unless latency.json already has both (--retime);
2. checks the predictor: --check random shapes of the search space (seeded), each predicted from the table and
   timed for real in one child process; the median and worst absolute error in percent;
3. for each --cells label: searches within that cell's measured latency (`dynastudio search`'s job, scored on
   held-out train rows), then times the chosen shape and the cell side by side in one child, and compares them on
   dev with a 95 % paired bootstrap (dev only reports: nothing here is chosen by it). Target: +1 point.
Writes bench/results/search[_NAME].{md,json}.

    python bench/search.py PROJECT [--cells w0.5_d0.5 w0.25_d0.5] [--check 20] [--generations 12]
        [--population 20] [--rows 1000] [--name NAME]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from augment import paired_differences  # noqa: E402
from sst2 import OUT, write_md  # noqa: E402

from dynastudio.core import jobs  # noqa: E402
from dynastudio.core.dynamic import ArchSpec, SubnetSpec  # noqa: E402
from dynastudio.core.evaluate import predict  # noqa: E402
from dynastudio.core.events import StopToken  # noqa: E402
from dynastudio.core.metrics import compute_metric  # noqa: E402
from dynastudio.core.prepare import prepare_inputs  # noqa: E402
from dynastudio.core.project import Project  # noqa: E402
from dynastudio.core.search import Space, _time_specs, as_arch, predicted  # noqa: E402
from dynastudio.core.store import final_model_name  # noqa: E402
from dynastudio.core.store.shapes import shape_table, shapes_of  # noqa: E402


def cell_spec(label: str) -> SubnetSpec:
    w, d = label[1:].split("_d")
    return SubnetSpec(float(w), float(d))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("project", type=Path)
    ap.add_argument("--cells", nargs="*", default=["w0.5_d0.5", "w0.25_d0.5"])
    ap.add_argument("--check", type=int, default=20)
    ap.add_argument("--generations", type=int, default=12)
    ap.add_argument("--population", type=int, default=20)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--retime", action="store_true")
    ap.add_argument("--name", default="")
    a = ap.parse_args()
    stem = OUT / ("search" + (f"_{a.name}" if a.name else ""))
    project = Project.open(a.project)
    t0 = time.perf_counter()
    timing = {}
    latency = project.load_latency() or {}
    if a.retime or not latency.get("rows"):
        t = time.perf_counter()
        jobs.run("latency", project, jobs.LatencyRequest())
        timing["grid_latency_s"] = time.perf_counter() - t
    if a.retime or shapes_of(project.load_latency(), None) is None:
        t = time.perf_counter()
        jobs.run("latency", project, jobs.LatencyRequest(shapes=True))
        timing["shape_table_s"] = time.perf_counter() - t
    latency = project.load_latency() or {}
    table = shape_table(latency, None, "fp32")
    assert table is not None
    cell_ms = {r["label"]: r["values"]["latency_fp32_ms"] for r in latency["rows"]}

    name = final_model_name(project)
    model = project.load_model(name)
    cfg = project.config
    rule = cfg.train.depth_rule
    space = Space.of(model.config, cfg.train)

    # 2. the predictor on random shapes
    rng = np.random.default_rng(1)
    shapes = []
    while len(shapes) < a.check:
        s = space.random(rng)
        if s.label not in {x.label for x in shapes}:
            shapes.append(s)
    t = time.perf_counter()
    measured = _time_specs(project, shapes, "fp32", StopToken())
    timing["predictor_check_s"] = time.perf_counter() - t
    check = []
    for s in shapes:
        m = measured[s.label]["latency_fp32_ms"]
        p = predicted(table, s)
        check.append(
            {
                "label": s.label,
                "shape": s.describe(),
                "predicted_ms": p,
                "measured_ms": m,
                "error_pct": 100 * (p - m) / m,
            }
        )
    errors = np.abs([c["error_pct"] for c in check])
    # and on the 12 cells (timed by the latency job)
    cells_check = []
    for label, m in cell_ms.items():
        p = predicted(table, as_arch(model.config, cell_spec(label), rule))
        cells_check.append({"label": label, "predicted_ms": p, "measured_ms": m, "error_pct": 100 * (p - m) / m})

    # 3. the search at each cell's latency
    inputs = prepare_inputs(project)
    y = np.asarray(inputs.dev.labels)
    metric = inputs.task.metric
    batch = cfg.train.eval_batch_size
    results: list[dict] = []
    save(a, stem, name, space, latency, table, check, errors, cells_check, results, timing, t0)
    for label in a.cells:
        # the cell's measured latency; when the table predicts the cell itself above it (the prediction's error),
        # the cell's prediction, so that the cell is among the shapes searched. Judged below on latency measured
        # side by side.
        # the cell timed again just before its search, alone in a fresh process: the latency job's figure from the
        # start of the run can be a few per cent off by now (this machine's speed drifts)
        cell_arch = as_arch(model.config, cell_spec(label), rule)
        measured_ms = _time_specs(project, [cell_arch], "fp32", StopToken())[cell_arch.label]["latency_fp32_ms"]
        cell_pred = predicted(table, cell_arch)
        budget = max(measured_ms, cell_pred)
        t = time.perf_counter()
        run = jobs.run(
            "search",
            project,
            jobs.SearchRequest(budget, None, "fp32", a.generations, a.population, a.rows),
        )
        search_s = time.perf_counter() - t
        chosen = next(p for p in run["points"] if p["label"] == run["chosen"])
        arch = ArchSpec.from_json(chosen["searched"])
        side = _time_specs(project, [arch, cell_arch], "fp32", StopToken())
        lg_s = predict(model, inputs.dev, arch, rule, batch, inputs.pad_id, inputs.device)
        lg_c = predict(model, inputs.dev, cell_spec(label), rule, batch, inputs.pad_id, inputs.device)
        s_s = float(compute_metric(metric, lg_s, y)["score"])
        s_c = float(compute_metric(metric, lg_c, y)["score"])
        d = paired_differences(metric, lg_s, lg_c, y, a.boot)
        results.append(
            {
                "cell": label,
                "budget_ms": budget,
                "cell_measured_ms": measured_ms,
                "cell_grid_ms": cell_ms[label],
                "cell_held_out_score": run["cells"].get(label),
                "cell_predicted_ms": cell_pred,
                "chosen": chosen["label"],
                "shape": arch.describe(),
                "is_a_cell": chosen.get("cell"),
                "held_out_score": chosen["search_score"],
                "dev_searched": s_s,
                "dev_cell": s_c,
                "dev_diff_points": 100 * (s_s - s_c),
                "ci95_points": [100 * float(np.percentile(d, 2.5)), 100 * float(np.percentile(d, 97.5))],
                "ms_searched_side_by_side": side[arch.label]["latency_fp32_ms"],
                "ms_cell_side_by_side": side[cell_arch.label]["latency_fp32_ms"],
                "predicted_ms": chosen["predicted_fp32_ms"],
                "scored": run["scored"],
                "search_minutes": search_s / 60,
                "rows": run["rows"],
                "history": run["history"],
                "predictor_check_finalists": run["predictor_check"],
            }
        )
        save(a, stem, name, space, latency, table, check, errors, cells_check, results, timing, t0)
    save(a, stem, name, space, latency, table, check, errors, cells_check, results, timing, t0)


def save(a, stem, name, space, latency, table, check, errors, cells_check, results, timing, t0) -> None:
    """Write the report as it stands (after each search, so a long run keeps what it measured)."""
    report = {
        "project": str(a.project),
        "model": name,
        "settings": {
            "generations": a.generations,
            "population": a.population,
            "rows": a.rows,
            "check": a.check,
            "boot": a.boot,
            "space": {
                "depths": [list(x) for x in space.depths],
                "heads": list(space.heads),
                "neurons": list(space.neurons),
            },
            "latency_setup": latency.get("setup"),
            "shape_setup": shapes_of(latency, None).get("setup"),
        },
        "shape_table": {
            "base_ms": table.base_ms,
            "layer_ms": {f"h{h}-n{n}": v for (h, n), v in table.layer_ms.items()},
        },
        "predictor": {
            "random": check,
            "median_abs_error_pct": float(np.median(errors)) if len(errors) else None,
            "worst_abs_error_pct": float(errors.max()) if len(errors) else None,
            "cells": cells_check,
        },
        "searches": results,
        "timing": timing,
        "seconds": time.perf_counter() - t0,
    }
    if stem.with_suffix(".json").is_file():
        old = json.loads(stem.with_suffix(".json").read_text())
        report["analysis"] = old.get("analysis")
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    render(report, stem)


def render(r: dict, stem: Path) -> None:
    p = r["predictor"]
    s = r["settings"]
    md = [
        "# The search against the grid (bench/search.py)",
        "",
        f"Project `{r['project']}`, model `{r['model']}`. Search space: depths "
        + ", ".join(f"{len(d)} layers ({','.join(map(str, d))})" for d in s["space"]["depths"])
        + f"; heads per layer {s['space']['heads']}; neurons per layer {s['space']['neurons']}.",
        f"Latency: {s['latency_setup'].get('device')}, {s['latency_setup'].get('runtime')}, batch "
        f"{s['latency_setup'].get('batch')}, seq {s['latency_setup'].get('seq')}, {s['latency_setup'].get('threads')} "
        "thread(s), median of 50 runs.",
        f"Search: {s['generations']} generations of {s['population']} shapes, each scored on {s['rows']} held-out "
        "train rows; dev only reports.",
        "",
        "## The latency predictor",
        "",
        (
            f"{s['check']} random shapes of the space, predicted from the shape table and timed in one child process: "
            f"**median absolute error {p['median_abs_error_pct']:.1f} %, worst {p['worst_abs_error_pct']:.1f} %** "
            "(target: median within 10 %)."
            if p["random"]
            else "No random shapes checked in this run (--check 0)."
        ),
        "",
        "| shape | predicted ms | measured ms | error |",
        "|---|---:|---:|---:|",
    ]
    for c in p["random"]:
        md.append(f"| {c['shape']} | {c['predicted_ms']:.2f} | {c['measured_ms']:.2f} | {c['error_pct']:+.1f} % |")
    cell_err = np.abs([c["error_pct"] for c in p["cells"]])
    md += [
        "",
        f"The 12 grid cells (timed by the latency job): median absolute error {np.median(cell_err):.1f} %, worst "
        f"{cell_err.max():.1f} %.",
        "",
        "## Searched shape against the cell, at the cell's latency",
        "",
        "The budget is the cell's latency, timed alone just before its search, or the table's prediction for the "
        "cell itself when that is higher (so the cell is among the shapes searched); the chosen shape and the cell "
        "are then timed again side by side in one process, and 'fits' says whether the chosen one measured no "
        "slower than the cell there. The held-out scores are on the rows the search chose by (the cell's, when it "
        "fit and was scored).",
        "",
        "| cell | cell ms (timed / predicted) | budget ms | chosen | shape | ms side by side (chosen / cell) | fits "
        "| held-out (chosen / cell) | dev chosen | dev cell | difference, points [95 % CI] | target +1 | search min |",
        "|---|---|---:|---|---|---|---|---|---:|---:|---|---|---:|",
    ]
    for x in r["searches"]:
        met = (
            x["dev_diff_points"] >= 1.0
            and x["ci95_points"][0] > 0
            and x["ms_searched_side_by_side"] <= x["ms_cell_side_by_side"]
        )
        fits = x["ms_searched_side_by_side"] <= x["ms_cell_side_by_side"]
        md.append(
            f"| {x['cell']} | {x['cell_measured_ms']:.2f} / {x['cell_predicted_ms']:.2f} | {x['budget_ms']:.2f} | "
            f"{x['chosen']}{' (= ' + x['is_a_cell'] + ')' if x['is_a_cell'] else ''}"
            f" | {x['shape']} | {x['ms_searched_side_by_side']:.2f} / {x['ms_cell_side_by_side']:.2f} | "
            f"{'yes' if fits else 'no'} | "
            f"{100 * x['held_out_score']:.2f} / "
            + (f"{100 * x['cell_held_out_score']:.2f}" if x.get("cell_held_out_score") is not None else "-")
            + f" | {100 * x['dev_searched']:.2f} | {100 * x['dev_cell']:.2f} | "
            f"{x['dev_diff_points']:+.2f} [{x['ci95_points'][0]:+.2f}, {x['ci95_points'][1]:+.2f}] | "
            f"{'met' if met else 'missed'} | {x['search_minutes']:.1f} |"
        )
    md += ["", f"Rows the search scored on: {r['searches'][0]['rows'] if r['searches'] else '-'}.", ""]
    md.append(
        "Timing: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in r["timing"].items())
        + f"; the whole benchmark {r['seconds'] / 60:.1f} min."
    )
    write_md(md, r, stem.with_suffix(".md"))


if __name__ == "__main__":
    main()
