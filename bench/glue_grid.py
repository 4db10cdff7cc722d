"""A GLUE task's DynaBERT grid against the teacher and baselines A and B, and what the importance rows are worth.

Made for the small tasks (CoLA, STS-B), where the held-out importance slice is 10 % of train:

  DynaBERT   the pipeline as it ships: the width and depth stages also train on the importance rows
  without    the same teacher and rewired model, width and depth stages without the importance rows
             (train.reuse_importance_rows false, the behaviour before 0.3)
  A          the fine-tuned teacher sliced, no rewiring, no further training
  B          the rewired teacher sliced, no further training

Every stage runs as a child `dynastudio run --until STAGE` (its wall time and peak memory are measured).
Writes bench/results/<task>.{md,json}.

    python bench/glue_grid.py --task cola
    python bench/glue_grid.py --task stsb --teacher-epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sst2 import DEPTHS, GLUE, OUT, WIDTHS, mib, run_stage, teacher_metrics, trajectory, write_md  # noqa: E402

from dynastudio.core.config import DataConfig, ProjectConfig, profile_config  # noqa: E402
from dynastudio.core.dynamic import SubnetSpec, subnet_grid  # noqa: E402
from dynastudio.core.evaluate import chance_score, predict  # noqa: E402
from dynastudio.core.metrics import compute_metric  # noqa: E402
from dynastudio.core.prepare import new_project, prepare_inputs  # noqa: E402
from dynastudio.core.project import Project  # noqa: E402
from dynastudio.core.store import final_model_name  # noqa: E402

TASKS = {
    "cola": ("CoLA", "Matthews correlation"),
    "stsb": ("STS-B", "Pearson/Spearman (their mean is the score)"),
    "sst2": ("SST-2", "accuracy"),
}


def make_config(a, name: str, reuse: bool) -> ProjectConfig:
    train = profile_config(
        "paper",
        batch_size=32,
        max_seq_length=a.seq,
        teacher_epochs=a.teacher_epochs,
        teacher_lr=a.teacher_lr,
        width_epochs=a.width_epochs,
        width_lr=a.lr,
        depth_epochs=a.depth_epochs,
        depth_lr=a.lr,
        depth_rule=a.depth_rule,
        seed=a.seed,
        checkpoint_every=10_000,
        importance_examples=a.importance_examples,
        reuse_importance_rows=reuse,
        width_l2=0.1,
        depth_l2=1.0,
    )
    return ProjectConfig(
        model="builtin:minilm", data=DataConfig(kind="glue", task=a.task, data_dir=str(GLUE)), train=train, name=name
    )


def grid_metrics(ws, model) -> dict[str, dict]:
    """Every cell's full dev metrics (STS-B: pearson and spearman as well as their mean)."""
    y = np.asarray(ws.dev.labels)
    args = (ws.cfg.train.depth_rule, ws.cfg.train.eval_batch_size, ws.pad_id, ws.device)
    return {
        s.label: compute_metric(ws.task.metric, predict(model, ws.dev, s, *args), y)
        for s in subnet_grid(WIDTHS, DEPTHS)
    }


def paired_interval(ws, model_a, model_b, spec: SubnetSpec, n_boot: int = 2000, seed: int = 0) -> list[float]:
    """95 % paired bootstrap interval of score(a) - score(b) for one cell (dev rows resampled, both scored on each)."""
    y = np.asarray(ws.dev.labels)
    args = (ws.cfg.train.depth_rule, ws.cfg.train.eval_batch_size, ws.pad_id, ws.device)
    la, lb = predict(model_a, ws.dev, spec, *args), predict(model_b, ws.dev, spec, *args)
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        diffs.append(
            compute_metric(ws.task.metric, la[i], y[i])["score"] - compute_metric(ws.task.metric, lb[i], y[i])["score"]
        )
    return [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", required=True, choices=sorted(TASKS))
    ap.add_argument("--render-only", action="store_true", help="re-render the .md from the saved JSON")
    ap.add_argument("--importance-examples", type=int, default=2000, help="capped at 10 %% of train")
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--teacher-epochs", type=float, default=3.0)
    ap.add_argument("--teacher-lr", type=float, default=5e-5)
    ap.add_argument("--width-epochs", type=float, default=1.0)
    ap.add_argument("--depth-epochs", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=5e-5, help="distillation learning rate")
    ap.add_argument("--depth-rule", default="paper", choices=("paper", "keep-last"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-without", action="store_true", help="skip the run without the importance rows")
    ap.add_argument("--work", default=None, help="work folder (default bench/.cache/<task>)")
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--name", default=None, help="results file stem (default: the task's name)")
    a = ap.parse_args()
    if a.render_only:
        render(json.loads((OUT / f"{a.name or a.task}.json").read_text()), OUT / f"{a.name or a.task}.md")
        return
    folder, metric_name = TASKS[a.task]
    if not (GLUE / folder / "train.tsv").is_file():
        raise SystemExit(f"{folder} not found under {GLUE}: this benchmark reads ../shared/data/glue/{folder}")
    work = Path(a.work or ROOT / "bench" / ".cache" / a.task)
    if a.fresh:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    stages_file = work / "stages.json"
    stages: dict[str, dict] = json.loads(stages_file.read_text()) if stages_file.is_file() else {}
    argv = "python bench/glue_grid.py " + " ".join(sys.argv[1:])

    def record(key: str, folder_: Path, stage: str) -> None:
        stages[key] = run_stage(folder_, stage)
        stages_file.write_text(json.dumps(stages, indent=2))
        print(f"{key}: {stages[key]['seconds']:.0f}s, peak {mib(stages[key])} MiB", flush=True)

    dyn_dir = work / "dynabert"
    if not (dyn_dir / "project.json").exists():
        new_project(dyn_dir, make_config(a, "dynabert", True))
    for stage in ("finetune", "rewire", "width", "depth", "evaluate"):
        if not Project.open(dyn_dir).is_done(stage):
            record(f"dynabert/{stage}", dyn_dir, stage)
    dyn = Project.open(dyn_dir)
    ws = prepare_inputs(dyn)
    final = dyn.load_model(final_model_name(dyn))
    grids = {"dynabert": grid_metrics(ws, final)}

    if not a.skip_without:
        # the same teacher and rewired model; only the width and depth stages' rows differ
        w_dir = work / "without_importance_rows"
        if not (w_dir / "project.json").exists():
            w = new_project(w_dir, make_config(a, "without_importance_rows", False))
            w.save_model("teacher", dyn.load_model("teacher"))
            w.save_model("rewired", dyn.load_model("rewired"))
            shutil.copy2(dyn.root / "importance.safetensors", w.root / "importance.safetensors")
            for stage in ("finetune", "rewire"):
                w.mark_done(stage, dyn.stage_info(stage))
        for stage in ("width", "depth", "evaluate"):
            if not Project.open(w_dir).is_done(stage):
                record(f"without_importance_rows/{stage}", w_dir, stage)
        wp = Project.open(w_dir)
        without = wp.load_model(final_model_name(wp))
        grids["without_importance_rows"] = grid_metrics(ws, without)
        intervals = {s.label: paired_interval(ws, final, without, s) for s in subnet_grid(WIDTHS, DEPTHS)}
    else:
        intervals = {}
    grids["A_teacher_sliced"] = grid_metrics(ws, dyn.load_model("teacher"))
    grids["B_rewired_sliced"] = grid_metrics(ws, dyn.load_model("rewired"))

    wp_inputs = {
        "train_rows_teacher": len(ws.train),
        "importance_rows": len(ws.heldout),
        "train_rows_students": len(ws.student_rows),
        "dev_rows": len(ws.dev),
    }
    report = {
        "argv": argv,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "task": a.task,
        "metric": ws.task.metric,
        "metric_name": metric_name,
        "settings": {
            "model": "MiniLM-L6-H384 (builtin:minilm)",
            **wp_inputs,
            "seq_len": a.seq,
            "batch_size": 32,
            "teacher_epochs": a.teacher_epochs,
            "teacher_lr": a.teacher_lr,
            "width_epochs": a.width_epochs,
            "depth_epochs": a.depth_epochs,
            "distill_lr": a.lr,
            "width_l1_l2": [1.0, 0.1],
            "depth_l1_l2": [1.0, 1.0],
            "depth_rule": a.depth_rule,
            "seed": a.seed,
            "threads": torch.get_num_threads(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "torch": torch.__version__,
        },
        "teacher": teacher_metrics(dyn),
        "teacher_check": dyn.stage_info("finetune").get("teacher_check"),
        "constant": chance_score(ws),
        "grid": grids,
        "reuse_minus_without_ci95": intervals,
        "trajectory": {
            "dynabert": trajectory(dyn),
            **(
                {"without_importance_rows": trajectory(Project.open(work / "without_importance_rows"))}
                if not a.skip_without
                else {}
            ),
        },
        "stages_measured": stages,
        "wall_seconds_all_stages": sum(v["seconds"] for v in stages.values()),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{a.name or a.task}.json").write_text(json.dumps(report, indent=2))
    render(report, OUT / f"{a.name or a.task}.md")


NAMES = {
    "dynabert": "DynaBERT",
    "without_importance_rows": "DynaBERT without the importance rows",
    "A_teacher_sliced": "A: teacher sliced",
    "B_rewired_sliced": "B: rewired teacher sliced",
}


def render(report: dict, path: Path) -> None:
    s, g, t = report["settings"], report["grid"], report["teacher"]
    folder = TASKS[report["task"]][0]
    pts = lambda v: 100 * v  # noqa: E731
    labels = [f"w{w:g}_d{d:g}" for d in DEPTHS for w in WIDTHS]
    md = [
        f"# {folder}: the DynaBERT grid against the teacher and baselines (MiniLM-L6-H384)",
        "",
        f"`{report['argv'].strip()}` (finished {report['finished']})",
        "",
        "## Settings",
        "",
    ]
    md += [f"- {k.replace('_', ' ')}: {v}" for k, v in s.items()]
    md += [f"- wall time of all stages: {report['wall_seconds_all_stages'] / 60:.1f} min", ""]
    teacher = ", ".join(f"{k} {pts(v):.2f}" for k, v in t.items() if k != "score")
    md += [
        f"Teacher (fine-tuned full model) on dev: **{teacher}** (score {pts(t['score']):.2f}); always predicting "
        f"the {'mean label' if report['metric'] == 'pearson_spearman' else 'majority class'} scores "
        f"{pts(report['constant']):.2f}.",
        "",
    ]
    keys = [k for k in NAMES if k in g]
    parts = ["score"] + (
        [k for k in ("pearson", "spearman") if k in next(iter(g["dynabert"].values()))]
        if report["metric"] == "pearson_spearman"
        else []
    )
    for part in parts:
        title = {
            "score": f"{report['metric_name']} per cell"
            if report["metric"] != "pearson_spearman"
            else "score (mean of Pearson and Spearman) per cell"
        }.get(part, f"{part.capitalize()} per cell")
        md += [
            f"## {title}, x100",
            "",
            "| width | depth | " + " | ".join(NAMES[k] for k in keys) + " |",
            "|---|---|" + "---|" * len(keys),
        ]
        for lab in labels:
            w, d = lab[1:].split("_d")
            md.append(f"| {w} | {d} |" + "".join(f" {pts(g[k][lab][part]):.2f} |" for k in keys))
        md.append("")
    dyn = {k: v["score"] for k, v in g["dynabert"].items()}
    smaller = [k for k in labels if k != "w1_d1"]
    md += ["## Checks", ""]
    for base in ("A_teacher_sliced", "B_rewired_sliced"):
        wins = [k for k in smaller if dyn[k] > g[base][k]["score"]]
        md.append(f"- DynaBERT above {base[0]} in {len(wins)} of the {len(smaller)} smaller cells")
    md.append(
        f"- full-size cell: {pts(dyn['w1_d1']):.2f} against the teacher's {pts(t['score']):.2f} "
        f"(gap {pts(t['score'] - dyn['w1_d1']):+.2f}); smallest cell (w0.25_d0.5): {pts(dyn['w0.25_d0.5']):.2f}"
    )
    if "without_importance_rows" in g:
        wo = {k: v["score"] for k, v in g["without_importance_rows"].items()}
        diffs = [pts(dyn[k] - wo[k]) for k in labels]
        ci = report["reuse_minus_without_ci95"]
        sig = [k for k in labels if ci[k][0] > 0 or ci[k][1] < 0]
        md += [
            f"- with minus without the importance rows ({s['importance_rows']} rows, "
            f"{100 * s['importance_rows'] / s['train_rows_teacher']:.1f} % more for the width and depth stages): mean "
            f"{np.mean(diffs):+.2f} points over the 12 cells, between {min(diffs):+.2f} and {max(diffs):+.2f}; higher in "
            f"{sum(d > 0 for d in diffs)} of 12; the 95 % paired bootstrap interval excludes 0 in {len(sig)} of 12"
            + (f" ({', '.join(sig)})" if sig else ""),
            "",
        ]
        md += ["| cell | with | without | difference | 95 % interval |", "|---|---|---|---|---|"]
        md += [
            f"| {k} | {pts(dyn[k]):.2f} | {pts(wo[k]):.2f} | {pts(dyn[k] - wo[k]):+.2f} | "
            f"{pts(ci[k][0]):+.2f} to {pts(ci[k][1]):+.2f} |"
            for k in labels
        ]
    if report.get("trajectory"):
        cells = ["w1_d1", "w0.5_d1", "w1_d0.5", "w0.25_d0.5"]
        md += [
            "",
            "## Dev score at the end of each epoch",
            "",
            "| model | after | " + " | ".join(cells) + " |",
            "|---|---|" + "---|" * len(cells),
        ]
        for key, evals in report["trajectory"].items():
            for e in evals:
                md.append(
                    f"| {NAMES.get(key, key)} | {e['stage']} epoch {e['epoch']} | "
                    + " | ".join(f"{pts(e['scores'][c]):.2f}" if c in e["scores"] else "" for c in cells)
                    + " |"
                )
    md += ["", "## Stage wall time and peak memory", "", "| stage | seconds | peak MiB |", "|---|---|---|"]
    md += [f"| {k} | {v['seconds']:.0f} | {mib(v)} |" for k, v in report["stages_measured"].items()]
    write_md(md, report, path)


if __name__ == "__main__":
    main()
