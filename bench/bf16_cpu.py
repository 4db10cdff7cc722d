"""bf16 autocast on a CPU with native bf16, against fp32: step time, and the accuracy of the grid from one teacher.

Two parts, in one invocation, with nothing else running on the machine (the load average is recorded):

1. Step time. A MiniLM-shaped BERT (6 layers, hidden 384, 12 heads, FFN 1,536; random weights), batch 32,
   sequence 64, at this process's thread count: a training step (forward, backward, AdamW) and an inference
   forward, fp32 and bf16 autocast interleaved round by round, so a load that comes and goes hits both alike.
2. Accuracy. SST-2 with the built-in MiniLM at the calibration settings (../shared/CALIBRATION.md: batch 32,
   max length 64, one epoch per stage, teacher lr 5e-5, distillation lr 2e-5, l1/l2 1/0.1, paper depth rule).
   The teacher is fine-tuned and rewired once, in fp32; then the width and depth stages run twice from that same
   rewired teacher, once in fp32 and once in bf16 autocast. Every cell of both grids is scored on the dev rows in
   fp32, and each cell's difference (bf16 minus fp32) gets a 95 % paired bootstrap interval over the dev rows.

    python bench/bf16_cpu.py                          # the calibration size: 20,000 train rows (about 1 hour)
    python bench/bf16_cpu.py --train-examples 4000    # a smaller check (about 15 minutes on 2 cores)

Writes bench/results/bf16_cpu.{md,json} (the file names carry the row count when it is not 20,000). Each stage runs
as its own `dynastudio run --until STAGE` child; the work folder keeps finished stages, so a rerun resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from pipeline_time import loadavg, make_config, paired_bootstrap  # noqa: E402
from sst2 import run_stage  # noqa: E402

from dynastudio.core.dynamic import subnet_grid  # noqa: E402
from dynastudio.core.evaluate import predict  # noqa: E402
from dynastudio.core.prepare import new_project, prepare_inputs  # noqa: E402
from dynastudio.core.project import Project  # noqa: E402
from dynastudio.core.runtime import cpu_native_bf16  # noqa: E402

GLUE = ROOT.parent / "shared" / "data" / "glue"
OUT = ROOT / "bench" / "results"
PRECISIONS = ("fp32", "bf16")


# ---- 1. step time ------------------------------------------------------------------------------------
def step_times(rounds: int = 6, steps: int = 3) -> dict:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536
    )
    model = BertForSequenceClassification(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = torch.randint(1000, 20000, (32, 64))
    mask = torch.ones_like(ids)
    labels = torch.randint(0, 2, (32,))

    def autocast(p):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=p == "bf16")

    def train_step(p) -> None:
        model.train()
        with autocast(p):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def infer(p) -> None:
        model.eval()
        with torch.inference_mode(), autocast(p):
            model(input_ids=ids, attention_mask=mask)

    times: dict[str, dict[str, list[float]]] = {k: {p: [] for p in PRECISIONS} for k in ("train", "infer")}
    for p in PRECISIONS:  # warm-up: oneDNN picks its kernels on first use
        train_step(p)
        infer(p)
    for _ in range(rounds):
        for p in PRECISIONS:
            for kind, fn in (("train", train_step), ("infer", infer)):
                t0 = time.perf_counter()
                for _ in range(steps):
                    fn(p)
                times[kind][p].append(1000 * (time.perf_counter() - t0) / steps)
    out = {}
    for kind, per in times.items():
        med = {p: float(np.median(v)) for p, v in per.items()}
        out[kind] = {"median_ms": med, "fp32_over_bf16": med["fp32"] / med["bf16"], "all_ms": per}
    return out


# ---- 2. accuracy -------------------------------------------------------------------------------------
def set_precision(folder: Path, precision: str) -> None:
    path = folder / "project.json"
    cfg = json.loads(path.read_text())
    cfg["train"]["precision"] = precision
    path.write_text(json.dumps(cfg, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-examples", type=int, default=20_000)
    ap.add_argument("--work", default=str(ROOT / "bench" / ".cache" / "bf16_cpu"))
    ap.add_argument("--fresh", action="store_true")
    a = ap.parse_args()
    if not (GLUE / "SST-2" / "train.tsv").is_file():
        raise SystemExit(f"SST-2 not found under {GLUE}: this benchmark reads ../shared/data/glue/SST-2")
    if not cpu_native_bf16():
        print("note: this CPU has no native bf16; bf16 autocast is emulated here and `auto` keeps fp32 on it")
    work = Path(a.work) / str(a.train_examples)
    if a.fresh:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    load = {"before": loadavg()}
    started = time.strftime("%Y-%m-%d %H:%M:%S")

    print("step times, fp32 and bf16 interleaved…", flush=True)
    steps = step_times()
    for kind, r in steps.items():
        print(
            f"  {kind}: fp32 {r['median_ms']['fp32']:.0f} ms, bf16 {r['median_ms']['bf16']:.0f} ms: x{r['fp32_over_bf16']:.2f}"
        )

    times_file = work / "stages.json"
    times = json.loads(times_file.read_text()) if times_file.is_file() else {}

    def stage(folder: Path, name: str, key: str) -> None:
        if Project.open(folder).is_done(name):
            return
        times[key] = run_stage(folder, name)
        times_file.write_text(json.dumps(times, indent=2))
        print(f"{key}: {times[key]['seconds']:.0f} s", flush=True)

    base = work / "fp32"
    if not (base / "project.json").is_file():
        cfg = make_config(a, True, "fp32")
        # the calibration's 2,000 importance rows, fewer for a small check (a quarter of its train rows)
        train = dataclasses.replace(cfg.train, importance_examples=min(2000, a.train_examples // 4))
        new_project(base, dataclasses.replace(cfg, train=train))
    for name in ("finetune", "rewire"):
        stage(base, name, f"shared/{name}")
    other = work / "bf16"
    if not (other / "project.json").is_file():
        # the same teacher and rewired model, nothing after them: the copy trains its own width and depth stages
        shutil.copytree(base, other, ignore=shutil.ignore_patterns("checkpoints", "run"))
        for name in ("width", "depth", "evaluate"):
            shutil.rmtree(other / "models" / name, ignore_errors=True)
        state = json.loads((other / "state.json").read_text())
        state["stages"] = {k: v for k, v in state.get("stages", {}).items() if k in ("finetune", "rewire")}
        (other / "state.json").write_text(json.dumps(state, indent=2))
        (other / "results.json").unlink(missing_ok=True)
        set_precision(other, "bf16")
    for name in ("width", "depth", "evaluate"):
        for p in PRECISIONS:
            stage(work / p, name, f"{p}/{name}")
    load["after"] = loadavg()

    projects = {p: Project.open(work / p) for p in PRECISIONS}
    ws = prepare_inputs(projects["fp32"])
    y = np.asarray(ws.dev.labels)
    args = (ws.cfg.train.depth_rule, 64, ws.pad_id, "cpu", "fp32")
    models = {p: projects[p].load_model("depth") for p in PRECISIONS}
    cells = {}
    for spec in subnet_grid((1.0, 0.75, 0.5, 0.25), (1.0, 0.75, 0.5)):
        ok = {p: predict(models[p], ws.dev, spec, *args).argmax(-1) == y for p in PRECISIONS}
        cells[spec.label] = {
            "width_mult": spec.width_mult,
            "depth_mult": spec.depth_mult,
            **{p: 100 * float(ok[p].mean()) for p in PRECISIONS},
            "bf16_minus_fp32": paired_bootstrap(ok["bf16"], ok["fp32"]),
        }
    diffs = [c["bf16_minus_fp32"]["diff"] for c in cells.values()]
    excl = [k for k, c in cells.items() if c["bf16_minus_fp32"]["ci95"][0] > 0 or c["bf16_minus_fp32"]["ci95"][1] < 0]
    stage_s = {
        p: {s: times[f"{p}/{s}"]["seconds"] for s in ("width", "depth", "evaluate") if f"{p}/{s}" in times}
        for p in PRECISIONS
    }
    report = {
        "command": "python bench/bf16_cpu.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""),
        "started": started,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {
            "cpu": torch.cpu.get_capabilities().get("cpu_name") if hasattr(torch.cpu, "get_capabilities") else None,
            "native_bf16": cpu_native_bf16(),
            "arch": platform.machine(),
            "cores": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "load_average": load,
        "step_times": steps,
        "settings": {
            "train_rows": len(ws.train),
            "importance_rows": len(ws.heldout),
            "dev_rows": len(ws.dev),
            "batch_size": 32,
            "max_seq_length": 64,
            "epochs_per_stage": 1,
        },
        "teacher_dev_accuracy": 100 * projects["fp32"].stage_info("finetune")["metrics"]["score"],
        "shared_stage_seconds": {
            s: times[f"shared/{s}"]["seconds"] for s in ("finetune", "rewire") if f"shared/{s}" in times
        },
        "stage_seconds": stage_s,
        "distill_speedup": sum(stage_s["fp32"].values()) / max(1e-9, sum(stage_s["bf16"].values())),
        "cells": cells,
        "mean_difference_points": float(np.mean(diffs)),
        "intervals_excluding_zero": excl,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    stem = "bf16_cpu" if a.train_examples == 20_000 else f"bf16_cpu_{a.train_examples}"
    (OUT / f"{stem}.json").write_text(json.dumps(report, indent=2))
    (OUT / f"{stem}.md").write_text(render(report))
    print((OUT / f"{stem}.md").read_text())


def render(r: dict) -> str:
    st, s, m = r["step_times"], r["settings"], r["machine"]
    lines = [
        f"# bf16 autocast against fp32 on this CPU ({m['cpu']}, native bf16: {m['native_bf16']})",
        "",
        f"`{r['command']}` ({r['started']} to {r['finished']}). Nothing else ran on the machine; load average "
        f"(1, 5, 15 min) before {r['load_average']['before']}, after {r['load_average']['after']}. "
        f"{m['threads']} threads, {m['cores']} cores, {m['arch']}, torch {m['torch']}.",
        "",
        "## Step time (MiniLM shape, random weights, batch 32 x 64 tokens; medians of interleaved rounds)",
        "",
        "| | fp32 ms | bf16 ms | fp32 / bf16 |",
        "|---|---|---|---|",
    ]
    for kind, name in (("train", "training step (forward, backward, AdamW)"), ("infer", "inference forward")):
        t = st[kind]
        lines.append(
            f"| {name} | {t['median_ms']['fp32']:.0f} | {t['median_ms']['bf16']:.0f} | {t['fp32_over_bf16']:.2f} |"
        )
    fp, bf = r["stage_seconds"]["fp32"], r["stage_seconds"]["bf16"]
    lines += [
        "",
        f"## The grid from one teacher: SST-2, {s['train_rows']:,} train rows, {s['importance_rows']:,} importance "
        f"rows, {s['dev_rows']} dev rows",
        "",
        f"Teacher (fp32, shared): {r['teacher_dev_accuracy']:.2f}. Stage times, fp32 / bf16 (s): "
        + ", ".join(f"{k} {fp.get(k, 0):.0f} / {bf.get(k, 0):.0f}" for k in fp)
        + f"; distillation {r['distill_speedup']:.2f}x faster in bf16. Both grids scored in fp32.",
        "",
        "| width | depth | fp32 | bf16 | bf16 - fp32 | 95 % interval | rows only bf16 / only fp32 gets right |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in r["cells"].values():
        d = c["bf16_minus_fp32"]
        lines.append(
            f"| {c['width_mult']:g} | {c['depth_mult']:g} | {c['fp32']:.2f} | {c['bf16']:.2f} | {d['diff']:+.2f} | "
            f"{d['ci95'][0]:+.2f} to {d['ci95'][1]:+.2f} | {d['only_a_right']} / {d['only_b_right']} |"
        )
    lines += [
        "",
        f"Mean difference over the 12 cells: {r['mean_difference_points']:+.2f} points; intervals that exclude 0: "
        f"{len(r['intervals_excluding_zero'])} of 12"
        + (f" ({', '.join(r['intervals_excluding_zero'])})." if r["intervals_excluding_zero"] else "."),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
