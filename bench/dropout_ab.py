"""Is the cheaper CPU dropout (slim.dropout) worth it in a whole training step? Paired, in one process.

Each SST-2 batch (MiniLM, length-grouped as a run makes them) runs the width- and the depth-stage step twice,
once with torch's own dropout (F.dropout: a Bernoulli mask drawn one element at a time) and once with
slim.dropout (16-bit slices of 64-bit draws), in alternating order (AB, BA, ...), so the two see the same batch,
the same process state and the same load. The ratio of each pair is the figure; its median and mean are reported.
Also times the dropout call alone on a batch-shaped tensor.

    flock /tmp/torch.lock .venv/bin/python bench/dropout_ab.py [--steps 30]
Writes bench/results/dropout_ab.{md,json}. Nothing else may run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results"
GLUE = ROOT.parent / "shared" / "data" / "glue"


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    a = ap.parse_args()
    from dynastudio.core import threads

    threads.set_wait_policy()  # before torch loads, as the dynastudio command does
    import torch
    import torch.nn.functional as F

    from dynastudio.core import distill, dynamic, slim
    from dynastudio.core.config import DataConfig
    from dynastudio.core.data.batching import iterate_batches
    from dynastudio.core.data.encoding import encode
    from dynastudio.core.data.tables import subset
    from dynastudio.core.data.task import load_task_data
    from dynastudio.core.dynamic import SubnetSpec, subnet_grid
    from dynastudio.core.models import load_base_model, load_tokenizer
    from dynastudio.core.runtime import resolve_precision
    from dynastudio.core.store import TaskInfo

    n_threads, _ = threads.configure_threads("bench")
    load_before, t_start = loadavg(), time.perf_counter()
    cheap = slim.dropout

    def torch_dropout(x, p, training):
        return F.dropout(x, p, training)

    def use(fn) -> None:
        slim.dropout = dynamic.dropout = fn

    task = load_task_data(DataConfig(kind="glue", task="sst2", data_dir=str(GLUE)))
    tok = load_tokenizer("builtin:minilm")
    enc = encode(subset(task.train, 4000, seed=0), tok, 64)
    batches = list(iterate_batches(enc, 32, shuffle=True, seed=0, pad_id=tok.pad_token_id, group_by_length=True))
    batches = batches[: 2 + a.steps]
    info = TaskInfo.of(task)
    teacher = load_base_model("builtin:minilm", info, finetuned=False, seed=0).eval()
    student = load_base_model("builtin:minilm", info, finetuned=False, seed=0).train()
    opt = distill.make_optimizer(student, 1e-5, 0.01)
    ctx = distill.StepContext.plain(student)
    ctx.precision = resolve_precision("auto", torch.device("cpu"))  # what a run here picks
    grids = {
        "width": [SubnetSpec(w, 1.0) for w in (1.0, 0.75, 0.5, 0.25)],
        "depth": subnet_grid((1.0, 0.75, 0.5, 0.25), (1.0, 0.75, 0.5)),
    }

    def step(batch, grid) -> float:
        t0 = time.perf_counter()
        distill.distill_step(
            student, teacher, batch, grid, l1=1.0, l2=0.1, depth_rule="paper", is_regression=False, ctx=ctx
        )
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    result: dict = {"threads": n_threads, "precision": ctx.precision, "stages": {}}
    for stage, grid in grids.items():
        pairs = []
        for i, b in enumerate(batches):
            order = [("torch", torch_dropout), ("cheap", cheap)]
            if i % 2:
                order.reverse()
            t = {}
            for name, fn in order:
                use(fn)
                t[name] = step(b, grid)
            if i >= 2:  # warm-up: allocator, kernels
                pairs.append(t)
        use(cheap)
        ratios = [p["torch"] / p["cheap"] for p in pairs]
        result["stages"][stage] = {
            "torch_ms": 1e3 * statistics.median(p["torch"] for p in pairs),
            "cheap_ms": 1e3 * statistics.median(p["cheap"] for p in pairs),
            "median_ratio": statistics.median(ratios),
            "mean_ratio": sum(p["torch"] for p in pairs) / sum(p["cheap"] for p in pairs),
            "pairs": pairs,
        }
    x = torch.randn(32, 12, 384, dtype=torch.bfloat16)
    calls = {"torch": [], "cheap": []}
    for _ in range(50):
        for name, fn in (("torch", torch_dropout), ("cheap", cheap)):
            t0 = time.perf_counter()
            for _ in range(10):
                fn(x, 0.1, True)
            calls[name].append((time.perf_counter() - t0) / 10 * 1e3)
    result["call_ms"] = {k: statistics.median(v) for k, v in calls.items()}
    result.update(
        finished=time.strftime("%Y-%m-%d %H:%M:%S"),
        seconds=round(time.perf_counter() - t_start),
        load_average_before=load_before,
        load_average_after=loadavg(),
        machine=f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        other_work="nothing else ran (under flock /tmp/torch.lock, which every torch process here takes)",
    )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "dropout_ab.json").write_text(json.dumps(result, indent=1))
    lines = [
        "# The cheaper CPU dropout in a whole training step, paired in one process (bench/dropout_ab.py)",
        "",
        f"`python bench/dropout_ab.py --steps {a.steps}` (finished {result['finished']}). MiniLM-L6-H384, SST-2 train "
        f"batches of 32, length-grouped; {result['precision']}, {n_threads} threads; {result['machine']}. Every batch "
        "ran each stage's step with both dropouts, in alternating order; a step is every sub-network's pass, "
        "gradient clipping and AdamW.",
        "",
        "| stage | torch dropout ms/step | cheaper dropout ms/step | median of the paired ratios | ratio of the sums |",
        "|---|---:|---:|---:|---:|",
    ]
    for stage, r in result["stages"].items():
        lines.append(
            f"| {stage} | {r['torch_ms']:.0f} | {r['cheap_ms']:.0f} | {r['median_ratio']:.3f}x | {r['mean_ratio']:.3f}x |"
        )
    c = result["call_ms"]
    lines += [
        "",
        f"One dropout call on a 32 x 12 x 384 bf16 tensor (SST-2's typical batch): torch {c['torch']:.3f} ms, "
        f"the cheaper one {c['cheap']:.3f} ms.",
        f"Load average before {load_before}, after {result['load_average_after']}; {result['other_work']}. "
        f"{result['seconds']} s in all.",
        "",
    ]
    (OUT / "dropout_ab.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
