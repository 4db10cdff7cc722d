"""The calibration pipeline, timed: SST-2 with MiniLM on this machine, as a user's `dynastudio run` trains it.

The settings are those of ../shared/CALIBRATION.md (20,000 train rows, 2,000 other train rows for
importance, the 872 dev rows; batch 32, max length 64; one epoch per stage; teacher lr 5e-5, distillation
lr 2e-5, l1 = 1 and l2 = 0.1 in both stages; the paper's depth rule), whose plain implementation took
106 minutes on this machine class. The pipeline runs as one `dynastudio run` child process, as a user runs it
(each stage in a child process of the run's, as the command does by default): its wall time is the total, and
each stage's own time is what the stage recorded in state.json. `--one-process` passes `--one-process` to the run
(every stage in the run's own process, the method of round 5's first report); `--per-stage` runs every stage as
its own `dynastudio run --until STAGE` instead (the method of the earlier rounds). Batches are length-grouped (the default);
`--compare-random` also runs the pipeline with random batches, side by side in one invocation, and compares
the two.

`--precision` is train.precision: auto (the default, what a user gets: bf16 autocast on a CPU that computes
bf16 natively, fp32 elsewhere), fp32 or bf16. Reports, in bench/results/pipeline_time[_<precision>].{md,json}
(no suffix for fp32):
  - wall time per stage and in all;
  - real and padded tokens of a training epoch;
  - dev accuracy of the 12 width x depth cells (each dev row's right/wrong is kept in the JSON, so a later run
    can be compared row by row); with --compare-random, a 95% paired bootstrap interval of each cell's
    difference (grouped minus random), dev examples resampled; otherwise the cells next to the fp32 report's.

    python bench/pipeline_time.py                      # about 20 minutes on 2 cores with bf16; resumable
    python bench/pipeline_time.py --precision fp32 --compare-random   # the round-2 comparison, about 2 hours
    python bench/pipeline_time.py --fresh              # start over
Nothing else may run on the machine meanwhile: the load average is recorded before and after.
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
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sst2 import run_stage  # noqa: E402  (a stage in a child process: wall time and peak memory)

from dynastudio.core.config import DataConfig, ProjectConfig, profile_config  # noqa: E402
from dynastudio.core.data.batching import padding_stats  # noqa: E402
from dynastudio.core.dynamic import subnet_grid  # noqa: E402
from dynastudio.core.evaluate import predict  # noqa: E402
from dynastudio.core.prepare import new_project, prepare_inputs  # noqa: E402
from dynastudio.core.project import Project  # noqa: E402
from dynastudio.core.runtime import resolve_precision  # noqa: E402

GLUE = ROOT.parent / "shared" / "data" / "glue"
OUT = ROOT / "bench" / "results"
STAGES = ("finetune", "rewire", "width", "depth", "evaluate")
CALIBRATION_MINUTES = 106  # ../shared/CALIBRATION.md: the plain implementation, same rows and settings


def make_config(a, group_by_length: bool, name: str, precision: str = "fp32") -> ProjectConfig:
    train = profile_config(
        "paper",
        batch_size=32,
        max_seq_length=64,
        max_train_examples=a.train_examples,
        importance_examples=2000,
        teacher_epochs=1.0,
        teacher_lr=5e-5,
        width_epochs=1.0,
        width_lr=2e-5,
        depth_epochs=1.0,
        depth_lr=2e-5,
        width_l1=1.0,
        width_l2=0.1,
        depth_l1=1.0,
        depth_l2=0.1,
        depth_rule="paper",
        seed=0,
        checkpoint_every=100_000,
        group_by_length=group_by_length,
        precision=precision,
    )
    return ProjectConfig(
        model="builtin:minilm", data=DataConfig(kind="glue", task="sst2", data_dir=str(GLUE)), train=train, name=name
    )


def paired_bootstrap(a_ok: np.ndarray, b_ok: np.ndarray, n_boot: int = 5000, seed: int = 0) -> dict:
    """a minus b, in points of accuracy, with a 95% interval: dev rows resampled, both scored on the same rows."""
    diff = a_ok.astype(float) - b_ok.astype(float)
    idx = np.random.default_rng(seed).integers(0, len(diff), size=(n_boot, len(diff)))
    boot = 100 * diff[idx].mean(axis=1)
    return {
        "diff": 100 * diff.mean(),
        "ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
        "only_a_right": int((a_ok & ~b_ok).sum()),
        "only_b_right": int((~a_ok & b_ok).sum()),
    }


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-examples", type=int, default=20_000)
    ap.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    ap.add_argument("--compare-random", action="store_true", help="also run with random batches and compare")
    ap.add_argument("--per-stage", action="store_true", help="each stage in its own process (earlier rounds)")
    ap.add_argument("--one-process", action="store_true", help="every stage in the run's own process")
    ap.add_argument("--work", help="work folder (default bench/.cache/pipeline_time_<precision>)")
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--render-only", action="store_true")
    a = ap.parse_args()
    precision = resolve_precision(a.precision, torch.device("cpu"))
    stem = "pipeline_time" if precision == "fp32" else f"pipeline_time_{precision}"
    if a.render_only:
        render(json.loads((OUT / f"{stem}.json").read_text()), stem)
        return
    modes = {"grouped": True, "random": False} if a.compare_random else {"grouped": True}
    if not (GLUE / "SST-2" / "train.tsv").is_file():
        raise SystemExit(f"SST-2 not found under {GLUE}: this benchmark reads ../shared/data/glue/SST-2")
    work = Path(a.work or ROOT / "bench" / ".cache" / f"pipeline_time_{precision}")
    if a.fresh:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    times_file = work / "stages.json"
    times = json.loads(times_file.read_text()) if times_file.is_file() else {}
    load = {"before": loadavg()}
    started = time.strftime("%Y-%m-%d %H:%M:%S")

    for mode, grouped in modes.items():
        folder = work / mode
        if not (folder / "project.json").is_file():
            new_project(folder, make_config(a, grouped, mode, precision))
        if not a.per_stage:
            if not Project.open(folder).is_done(STAGES[-1]):
                resumed = any(Project.open(folder).is_done(stage) for stage in STAGES)
                extra = ("--one-process",) if a.one_process else ()
                times[f"{mode}/run"] = {**run_stage(folder, STAGES[-1], extra), "resumed": resumed}
                times_file.write_text(json.dumps(times, indent=2))
            print(f"{mode}: {times[f'{mode}/run']['seconds']:.0f} s in one run", flush=True)
            continue
        for stage in STAGES:
            if Project.open(folder).is_done(stage):
                continue
            times[f"{mode}/{stage}"] = run_stage(folder, stage)
            times_file.write_text(json.dumps(times, indent=2))
            print(f"{mode}/{stage}: {times[f'{mode}/{stage}']['seconds']:.0f} s", flush=True)
    load["after"] = loadavg()

    projects = {m: Project.open(work / m) for m in modes}
    inputs = {m: prepare_inputs(p) for m, p in projects.items()}
    ws = inputs["grouped"]
    y = np.asarray(ws.dev.labels)
    args = (ws.cfg.train.depth_rule, 64, ws.pad_id, "cpu")
    specs = subnet_grid((1.0, 0.75, 0.5, 0.25), (1.0, 0.75, 0.5))
    models = {m: projects[m].load_model("depth") for m in modes}
    cells = {}
    for spec in specs:
        ok = {m: predict(models[m], inputs[m].dev, spec, *args).argmax(-1) == y for m in modes}
        cells[spec.label] = {
            "width_mult": spec.width_mult,
            "depth_mult": spec.depth_mult,
            **{m: 100 * float(ok[m].mean()) for m in modes},
            "dev_correct": {m: np.packbits(ok[m]).tobytes().hex() for m in modes},
        }
        if "random" in modes:
            cells[spec.label]["grouped_minus_random"] = paired_bootstrap(ok["grouped"], ok["random"])
    teacher = {m: 100 * projects[m].stage_info("finetune")["metrics"]["score"] for m in modes}
    padding = {m: padding_stats(inputs[m].train, 32, seed=0, epoch=0, group_by_length=g) for m, g in modes.items()}
    if a.per_stage:
        stage_s = {m: {s: times[f"{m}/{s}"]["seconds"] for s in STAGES} for m in modes}
        process_s = {m: sum(stage_s[m].values()) for m in modes}
        peak = {m: {s: times[f"{m}/{s}"].get("peak_rss_mib") for s in STAGES} for m in modes}
    else:  # each stage's own time as it recorded it; the total is the one process's wall time
        stage_s = {m: {s: projects[m].stage_info(s)["seconds"] for s in STAGES} for m in modes}
        process_s = {m: times[f"{m}/run"]["seconds"] for m in modes}
        peak = {m: {"run": times[f"{m}/run"].get("peak_rss_mib")} for m in modes}
        if any(times[f"{m}/run"].get("resumed") for m in modes):
            raise SystemExit("the run resumed a pipeline begun earlier: its wall time is not the total; use --fresh")
    report = {
        "command": "python bench/pipeline_time.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "last_invocation_started": started,
        "settings": {
            "model": "MiniLM-L6-H384 (builtin:minilm)",
            "train_rows": len(ws.train),
            "importance_rows": len(ws.heldout),
            "dev_rows": len(ws.dev),
            "batch_size": 32,
            "max_seq_length": 64,
            "epochs_per_stage": 1,
            "teacher_lr": 5e-5,
            "distill_lr": 2e-5,
            "l1_l2": [1.0, 0.1],
            "depth_rule": "paper",
            "precision": precision,
            "threads": torch.get_num_threads(),
            # what the run's own process ran with (its stage processes inherit it): tcmalloc when installed
            "malloc": sorted({str(v.get("malloc")) for k, v in times.items() if k.split("/")[0] in modes}),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "torch": torch.__version__,
        },
        "load_average": load,
        "method": (
            "per-stage processes" if a.per_stage else "one process" if a.one_process else "one run, stage processes"
        ),
        "stage_seconds": stage_s,
        "process_seconds": process_s,
        "peak_rss_mib": peak,
        "total_minutes": {m: process_s[m] / 60 for m in modes},
        "calibration_minutes": CALIBRATION_MINUTES,
        "padding": padding,
        "teacher_dev_accuracy": teacher,
        "cells": cells,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{stem}.json").write_text(json.dumps(report, indent=2))
    render(report, stem)


def render(r: dict, stem: str) -> None:
    s, st, pad = r["settings"], r["stage_seconds"], r["padding"]
    modes = list(st)
    total = r["total_minutes"]
    both = len(modes) == 2
    title = "length-grouped vs random batches" if both else "length-grouped batches"
    lines = [
        f"# The calibration pipeline, timed: {title}, {s['precision']} (MiniLM, SST-2, 2 CPU cores)",
        "",
        f"`{r['command']}` (finished {r['finished']})",
        "",
        *([r["note"], ""] if r.get("note") else []),
        f"Settings of ../shared/CALIBRATION.md: {s['train_rows']} train rows, {s['importance_rows']} importance rows, "
        f"{s['dev_rows']} dev rows; batch {s['batch_size']}, max length {s['max_seq_length']}, one epoch per stage; "
        f"teacher lr {s['teacher_lr']}, distillation lr {s['distill_lr']}, l1/l2 {s['l1_l2']} in both stages; depth rule "
        f"{s['depth_rule']}; {s['precision']}; {s['threads']} threads, {s['machine']}, torch {s['torch']}. "
        f"Load average before/after (1, 5, 15 min): {r['load_average']['before']} / {r['load_average']['after']}."
        + (f" malloc: {', '.join(s['malloc'])} (core/malloc.py)." if s.get("malloc") else ""),
        "",
        "## Wall time",
        "",
        "| stage | " + " | ".join(f"{m} s" for m in modes) + (" | random / grouped |" if both else " |"),
        "|---|" + "---|" * (len(modes) + both),
    ]
    for stage in STAGES:
        row = f"| {stage} | " + " | ".join(f"{st[m][stage]:.0f}" for m in modes) + " |"
        lines.append(row + (f" {st['random'][stage] / st['grouped'][stage]:.2f} |" if both else ""))
    one = r.get("method") in ("one process", "one run, stage processes")
    children = r.get("method") == "one run, stage processes"
    if one:  # older reports (per-stage processes) have no such row: their total is the sum of the stages
        row = "| the processes' start and the skipped stages | "
        row += " | ".join(f"{total[m] * 60 - sum(st[m].values()):.0f}" for m in modes) + " |"
        lines.append(row + (" |" if both else ""))
    label = (
        "**all, one `dynastudio run`**" if children else "**all, one `dynastudio run` process**" if one else "**all**"
    )
    row = f"| {label} | " + " | ".join(f"**{total[m] * 60:.0f}** ({total[m]:.1f} min)" for m in modes) + " |"
    lines.append(row + (f" **{total['random'] / total['grouped']:.2f}** |" if both else ""))
    g = total["grouped"]
    lines += [
        "",
        (
            "Each stage's time is the one it recorded in state.json; the total is the wall time of the one "
            "`dynastudio run` that ran them all, as a user runs the pipeline, the long training stages each in a child "
            "process of the run's (the command's default; a stage's time does not include its process's start)."
            if children
            else "Each stage's time is the one it recorded in state.json; the total is the wall time of the one "
            "`dynastudio run` process that ran them all (`--one-process`)."
            if one
            else "Each stage ran as its own `dynastudio run --until STAGE` process; its time includes that process's "
            "start (importing torch and transformers, reading the project: about 5 s)."
        ),
        "",
        f"The plain implementation of CALIBRATION.md took {r['calibration_minutes']} minutes on this machine class "
        f"(its figure, not measured in this run): {r['calibration_minutes'] / g:.1f}x the grouped time.",
        "",
        "## Padding in one training epoch (the same order every stage uses)",
        "",
        "| batches | real tokens | padded tokens | padded / real |",
        "|---|---|---|---|",
    ]
    for m in modes:
        p = pad[m]
        lines.append(f"| {m} | {p['real_tokens']:,} | {p['padded_tokens']:,} | {p['ratio']:.2f} |")
    t = r["teacher_dev_accuracy"]
    lines += ["", "## Dev accuracy of every cell", ""]
    if both:
        lines += _paired_table(r, t, s)
    else:
        lines += _cells_against_fp32(r, t, stem)
    (OUT / f"{stem}.md").write_text("\n".join(lines))
    print("\n".join(lines))


def _paired_table(r: dict, t: dict, s: dict) -> list[str]:
    lines = [
        f"Teacher: grouped {t['grouped']:.2f}, random {t['random']:.2f}. Difference = grouped minus random, points; "
        "95% paired bootstrap interval over the dev rows (5,000 resamples); one dev row is "
        f"{100 / s['dev_rows']:.2f} points.",
        "",
        "| width | depth | grouped | random | difference | 95% interval | rows only grouped / only random gets right |",
        "|---|---|---|---|---|---|---|",
    ]
    inside = 0
    for c in r["cells"].values():
        d = c["grouped_minus_random"]
        inside += d["ci95"][0] <= 0 <= d["ci95"][1]
        lines.append(
            f"| {c['width_mult']:g} | {c['depth_mult']:g} | {c['grouped']:.2f} | {c['random']:.2f} | {d['diff']:+.2f} | "
            f"{d['ci95'][0]:+.2f} to {d['ci95'][1]:+.2f} | {d['only_a_right']} / {d['only_b_right']} |"
        )
    mean = np.mean([c["grouped_minus_random"]["diff"] for c in r["cells"].values()])
    return [
        *lines,
        "",
        f"Mean difference over the 12 cells: {mean:+.2f} points; the interval holds 0 in {inside} of 12.",
        "",
    ]


def _cells_against_fp32(r: dict, t: dict, stem: str) -> list[str]:
    """This run's cells next to the fp32 report's grouped cells, when this run is not that report."""
    ref_file = OUT / "pipeline_time.json"
    ref = json.loads(ref_file.read_text()) if stem != "pipeline_time" and ref_file.is_file() else None
    if ref is None:
        lines = [f"Teacher: {t['grouped']:.2f}.", "", "| width | depth | dev accuracy |", "|---|---|---|"]
        lines += [f"| {c['width_mult']:g} | {c['depth_mult']:g} | {c['grouped']:.2f} |" for c in r["cells"].values()]
        return [*lines, ""]
    when = ref["finished"]
    lines = [
        f"Next to the fp32 pipeline of [pipeline_time.md](pipeline_time.md) (grouped batches, finished {when}). Both "
        "pipelines trained their own teacher, so this is not a paired comparison of precisions from one teacher; "
        "that one is bench/bf16_cpu.py (bf16_cpu.md). One dev row is "
        f"{100 / r['settings']['dev_rows']:.2f} points.",
        "",
        f"Teacher: {t['grouped']:.2f} here, {ref['teacher_dev_accuracy']['grouped']:.2f} in fp32.",
        "",
        f"| width | depth | {r['settings']['precision']} | fp32 | difference |",
        "|---|---|---|---|---|",
    ]
    diffs = []
    for label, c in r["cells"].items():
        other = ref["cells"][label]["grouped"]
        diffs.append(c["grouped"] - other)
        lines.append(
            f"| {c['width_mult']:g} | {c['depth_mult']:g} | {c['grouped']:.2f} | {other:.2f} | {diffs[-1]:+.2f} |"
        )
    return [*lines, "", f"Mean difference over the 12 cells: {np.mean(diffs):+.2f} points.", ""]


if __name__ == "__main__":
    main()
