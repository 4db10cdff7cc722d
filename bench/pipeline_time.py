"""The calibration pipeline, timed: SST-2 with MiniLM on this machine, length-grouped batches vs random ones.

The settings are those of ../shared/CALIBRATION.md (20,000 train rows, 2,000 other train rows for
importance, the 872 dev rows; batch 32, max length 64; one epoch per stage; teacher lr 5e-5, distillation
lr 2e-5, l1 = 1 and l2 = 0.1 in both stages; the paper's depth rule), whose plain implementation took
106 minutes on this machine class. The same pipeline runs twice, side by side in one invocation: once with
`group_by_length` on (the default) and once with random batches. Every stage runs as its own
`dynastudio run --until STAGE` child, so its wall time is the stage's own.

Reports, in bench/results/pipeline_time.{md,json}:
  - wall time per stage and in all, both ways, and their ratio;
  - real and padded tokens of a training epoch, both ways;
  - dev accuracy of the 12 width x depth cells both ways, with a 95% paired bootstrap interval of each
    cell's difference (grouped minus random), dev examples resampled.

    python bench/pipeline_time.py            # about 1.5 hours on 2 cores; resumable (stages done are kept)
    python bench/pipeline_time.py --fresh    # start over
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

GLUE = ROOT.parent / "shared" / "data" / "glue"
OUT = ROOT / "bench" / "results"
STAGES = ("finetune", "rewire", "width", "depth", "evaluate")
MODES = {"grouped": True, "random": False}
CALIBRATION_MINUTES = 106  # ../shared/CALIBRATION.md: the plain implementation, same rows and settings


def make_config(a, group_by_length: bool, name: str) -> ProjectConfig:
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
        precision="fp32",
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
    ap.add_argument("--work", default=str(ROOT / "bench" / ".cache" / "pipeline_time"))
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--render-only", action="store_true")
    a = ap.parse_args()
    if a.render_only:
        render(json.loads((OUT / "pipeline_time.json").read_text()))
        return
    if not (GLUE / "SST-2" / "train.tsv").is_file():
        raise SystemExit(f"SST-2 not found under {GLUE}: this benchmark reads ../shared/data/glue/SST-2")
    work = Path(a.work)
    if a.fresh:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    times_file = work / "stages.json"
    times = json.loads(times_file.read_text()) if times_file.is_file() else {}
    load = {"before": loadavg()}
    started = time.strftime("%Y-%m-%d %H:%M:%S")

    for mode, grouped in MODES.items():
        folder = work / mode
        if not (folder / "project.json").is_file():
            new_project(folder, make_config(a, grouped, mode))
        for stage in STAGES:
            if Project.open(folder).is_done(stage):
                continue
            times[f"{mode}/{stage}"] = run_stage(folder, stage)
            times_file.write_text(json.dumps(times, indent=2))
            print(f"{mode}/{stage}: {times[f'{mode}/{stage}']['seconds']:.0f} s", flush=True)
    load["after"] = loadavg()

    projects = {m: Project.open(work / m) for m in MODES}
    inputs = {m: prepare_inputs(p) for m, p in projects.items()}
    ws = inputs["grouped"]
    y = np.asarray(ws.dev.labels)
    args = (ws.cfg.train.depth_rule, 64, ws.pad_id, "cpu")
    specs = subnet_grid((1.0, 0.75, 0.5, 0.25), (1.0, 0.75, 0.5))
    models = {m: projects[m].load_model("depth") for m in MODES}
    cells = {}
    for spec in specs:
        ok = {m: predict(models[m], inputs[m].dev, spec, *args).argmax(-1) == y for m in MODES}
        cells[spec.label] = {
            "width_mult": spec.width_mult,
            "depth_mult": spec.depth_mult,
            **{m: 100 * float(ok[m].mean()) for m in MODES},
            "grouped_minus_random": paired_bootstrap(ok["grouped"], ok["random"]),
        }
    teacher = {m: 100 * projects[m].stage_info("finetune")["metrics"]["score"] for m in MODES}
    padding = {m: padding_stats(inputs[m].train, 32, seed=0, epoch=0, group_by_length=g) for m, g in MODES.items()}
    stage_s = {m: {s: times[f"{m}/{s}"]["seconds"] for s in STAGES} for m in MODES}
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
            "precision": "fp32",
            "threads": torch.get_num_threads(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "torch": torch.__version__,
        },
        "load_average": load,
        "stage_seconds": stage_s,
        "peak_rss_mib": {m: {s: times[f"{m}/{s}"].get("peak_rss_mib") for s in STAGES} for m in MODES},
        "total_minutes": {m: sum(stage_s[m].values()) / 60 for m in MODES},
        "calibration_minutes": CALIBRATION_MINUTES,
        "padding": padding,
        "teacher_dev_accuracy": teacher,
        "cells": cells,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "pipeline_time.json").write_text(json.dumps(report, indent=2))
    render(report)


def render(r: dict) -> None:
    s, st, pad = r["settings"], r["stage_seconds"], r["padding"]
    g, rnd = r["total_minutes"]["grouped"], r["total_minutes"]["random"]
    lines = [
        "# The calibration pipeline, timed: length-grouped vs random batches (MiniLM, SST-2, 2 CPU cores)",
        "",
        f"`{r['command']}` (finished {r['finished']})",
        "",
        f"Settings of ../shared/CALIBRATION.md: {s['train_rows']} train rows, {s['importance_rows']} importance rows, "
        f"{s['dev_rows']} dev rows; batch {s['batch_size']}, max length {s['max_seq_length']}, one epoch per stage; "
        f"teacher lr {s['teacher_lr']}, distillation lr {s['distill_lr']}, l1/l2 {s['l1_l2']} in both stages; depth rule "
        f"{s['depth_rule']}; {s['precision']}; {s['threads']} threads, {s['machine']}, torch {s['torch']}. "
        f"Load average before/after (1, 5, 15 min): {r['load_average']['before']} / {r['load_average']['after']}.",
        "",
        "## Wall time",
        "",
        "| stage | grouped s | random s | random / grouped |",
        "|---|---|---|---|",
    ]
    for stage in STAGES:
        a, b = st["grouped"][stage], st["random"][stage]
        lines.append(f"| {stage} | {a:.0f} | {b:.0f} | {b / a:.2f} |")
    lines += [
        f"| **all** | **{g * 60:.0f}** ({g:.1f} min) | **{rnd * 60:.0f}** ({rnd:.1f} min) | **{rnd / g:.2f}** |",
        "",
        f"Target: at most 35 minutes with grouping. The plain implementation of CALIBRATION.md took "
        f"{r['calibration_minutes']} minutes on this machine class (its figure, not measured in this run): "
        f"{r['calibration_minutes'] / g:.1f}x the grouped time.",
        "",
        "## Padding in one training epoch (the same order every stage uses)",
        "",
        "| batches | real tokens | padded tokens | padded / real |",
        "|---|---|---|---|",
    ]
    for m in ("grouped", "random"):
        p = pad[m]
        lines.append(f"| {m} | {p['real_tokens']:,} | {p['padded_tokens']:,} | {p['ratio']:.2f} |")
    t = r["teacher_dev_accuracy"]
    lines += [
        "",
        "## Dev accuracy of every cell",
        "",
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
    lines += [
        "",
        f"Mean difference over the 12 cells: {mean:+.2f} points; the interval holds 0 in {inside} of 12 cells.",
        "",
    ]
    (OUT / "pipeline_time.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
