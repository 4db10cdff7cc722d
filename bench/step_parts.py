"""What each of this round's changes to the training step is worth: width- and depth-stage steps on SST-2's own
batches (MiniLM, length-grouped as a run makes them), one change added at a time.

Variants, each in its own process (the OpenMP wait policy is read once, when torch loads), interleaved over rounds
so a load that comes and goes hits all alike:
  1. before:  fp32, OMP_WAIT_POLICY=PASSIVE, each sub-network's pass runs the embeddings, AdamW's per-tensor loop
  2. +shared embeddings: one embeddings pass per step (distill.SharedEmbedding)
  3. +fused AdamW
  4. +short spin: GOMP_SPINCOUNT=10000 instead of the passive wait (core/threads.py)
  5. +bf16: autocast, what train.precision auto picks on a CPU with native bf16
  6. +cheap dropout: the dropout mask from 16-bit slices of 64-bit draws instead of torch's element-at-a-time
     Bernoulli (slim.dropout); the code as it ships here
A step is what train_loop does: the sub-networks' passes, gradient clipping, the optimizer step.

    flock /tmp/torch.lock .venv/bin/python bench/step_parts.py [--steps 8] [--rounds 2]
Writes bench/results/step_parts.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results"
GLUE = ROOT.parent / "shared" / "data" / "glue"
VARIANTS = {
    "before": {"shared": False, "fused": False, "wait": "passive", "precision": "fp32"},
    "+shared embeddings": {"shared": True, "fused": False, "wait": "passive", "precision": "fp32"},
    "+fused AdamW": {"shared": True, "fused": True, "wait": "passive", "precision": "fp32"},
    "+short spin": {"shared": True, "fused": True, "wait": "spin", "precision": "fp32"},
    "+bf16": {"shared": True, "fused": True, "wait": "spin", "precision": "bf16"},
    "+cheap dropout": {"shared": True, "fused": True, "wait": "spin", "precision": "bf16", "cheap": True},
}


def worker(name: str, steps: int) -> None:
    import torch

    from dynastudio.core import distill
    from dynastudio.core.config import DataConfig
    from dynastudio.core.data.batching import iterate_batches
    from dynastudio.core.data.encoding import encode
    from dynastudio.core.data.tables import subset
    from dynastudio.core.data.task import load_task_data
    from dynastudio.core.dynamic import SubnetSpec, subnet_grid
    from dynastudio.core.models import load_base_model, load_tokenizer
    from dynastudio.core.store import TaskInfo

    v = VARIANTS[name]
    torch.set_num_threads(2)
    if not v.get("cheap", False):  # torch's own dropout in every variant before the last
        from dynastudio.core import dynamic, slim

        def torch_dropout(x, p, training):
            return torch.nn.functional.dropout(x, p, training)

        slim.dropout = dynamic.dropout = torch_dropout
    task = load_task_data(DataConfig(kind="glue", task="sst2", data_dir=str(GLUE)))
    tok = load_tokenizer("builtin:minilm")
    enc = encode(subset(task.train, 2000, seed=0), tok, 64)
    batches = list(iterate_batches(enc, 32, shuffle=True, seed=0, pad_id=tok.pad_token_id, group_by_length=True))
    batches = batches[: 2 + steps]
    info = TaskInfo.of(task)
    teacher = load_base_model("builtin:minilm", info, finetuned=False, seed=0).eval()
    student = load_base_model("builtin:minilm", info, finetuned=False, seed=0).train()
    if not v["shared"]:
        distill.StepContext.share_embedding = lambda self, batch, passes, int8=False: None
    opt = distill.make_optimizer(student, 1e-5, 0.01)
    if not v["fused"]:
        groups = [{k: val for k, val in g.items() if k != "fused"} for g in opt.param_groups]
        opt = torch.optim.AdamW(groups, lr=1e-5)
    ctx = distill.StepContext.plain(student)
    ctx.precision = v["precision"]
    specs = {
        "width": [SubnetSpec(w, 1.0) for w in (1.0, 0.75, 0.5, 0.25)],
        "depth": subnet_grid((1.0, 0.75, 0.5, 0.25), (1.0, 0.75, 0.5)),
    }
    out = {"fused": bool(opt.defaults.get("fused")), "tokens": [int(b["input_ids"].numel()) for b in batches[2:]]}
    for stage, grid in specs.items():
        times = []
        for i, b in enumerate(batches):
            t0 = time.perf_counter()
            distill.distill_step(
                student, teacher, b, grid, l1=1.0, l2=0.1, depth_rule="paper", is_regression=False, ctx=ctx
            )
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i >= 2:  # two warm-up steps: allocator, kernels
                times.append(time.perf_counter() - t0)
        out[stage] = times
    print(json.dumps(out), flush=True)


def env_for(name: str) -> dict[str, str]:
    from dynastudio.core.threads import WAIT_POLICY

    env = dict(os.environ)
    for var in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_NUM_THREADS"):
        env.pop(var, None)
    if VARIANTS[name]["wait"] == "passive":
        env.update({"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"})
    else:
        env.update(WAIT_POLICY)
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--worker")
    a = ap.parse_args()
    if a.worker:
        worker(a.worker, a.steps)
        return
    if not (GLUE / "SST-2" / "train.tsv").is_file():
        raise SystemExit(f"SST-2 not found under {GLUE}: this benchmark reads ../shared/data/glue/SST-2")
    load_before, t_start = os.getloadavg(), time.time()
    seen: dict[str, dict[str, list[float]]] = {n: {"width": [], "depth": []} for n in VARIANTS}
    tokens = None
    for r in range(a.rounds):
        for name in list(VARIANTS) if r % 2 == 0 else list(VARIANTS)[::-1]:
            cmd = [sys.executable, __file__, "--worker", name, "--steps", str(a.steps)]
            proc = subprocess.run(cmd, env=env_for(name), capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise SystemExit(f"variant {name!r} failed:\n{proc.stderr[-3000:]}")
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            tokens = res["tokens"]
            for stage in ("width", "depth"):
                seen[name][stage] += res[stage]
            print(
                f"round {r + 1} {name:<20} width {statistics.median(res['width']) * 1000:.0f} ms, "
                f"depth {statistics.median(res['depth']) * 1000:.0f} ms",
                flush=True,
            )
    med = {n: {s: round(statistics.median(t) * 1000, 1) for s, t in st.items()} for n, st in seen.items()}
    result = {
        "command": "python bench/step_parts.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "variants": VARIANTS,
        "ms_per_step_median": med,
        "batch_tokens": tokens,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, 2 threads",
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "other_work": "nothing else ran (under flock /tmp/torch.lock, which every torch process here takes)",
        "seconds": round(time.time() - t_start),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "step_parts.json").write_text(json.dumps(result, indent=2) + "\n")
    first = med["before"]
    lines = [
        "# The training step, one change at a time (bench/step_parts.py)",
        "",
        f"`{result['command']}` (finished {result['finished']}). MiniLM-L6-H384 (the built-in model), SST-2 train "
        f"batches of 32, length-grouped as a run makes them ({a.steps} steps per stage and variant after 2 warm-up "
        f"steps; {statistics.mean(tokens) / 32:.1f} tokens per row padded on average), {a.rounds} interleaved rounds, "
        f"each variant its own process. {result['machine']}. Width stage: 4 widths; depth stage: the 12 sub-networks. "
        "A step: every sub-network's pass, gradient clipping and AdamW. Medians.",
        "",
        "| variant | width ms/step | vs before | depth ms/step | vs before |",
        "|---|---:|---:|---:|---:|",
    ]
    for n, m in med.items():
        lines.append(
            f"| {n} | {m['width']:.0f} | {first['width'] / m['width']:.2f}x | {m['depth']:.0f} | "
            f"{first['depth'] / m['depth']:.2f}x |"
        )
    lines += [
        "",
        "Each row adds one change to the row above it. before: fp32, the passive OpenMP wait of the previous round, "
        "each sub-network's pass running the embeddings (their backward zero-fills and adds a dense gradient of the "
        "whole 30,522 x 384 word-embedding table), AdamW's per-tensor loop. +cheap dropout is the code as it ships on this CPU.",
        f"Load average before {result['load_average_before']}, after {result['load_average_after']}; "
        f"{result['other_work']}. {result['seconds']} s in all.",
        "",
    ]
    (OUT / "step_parts.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
