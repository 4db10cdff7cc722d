"""Width-stage and depth-stage step time vs a plain fine-tuning step, same batches, same run (MiniLM, SST-2).

Each repeat times the three kinds of step back to back on the same batch, so machine load hits
all of them alike; the printed ratios are medians over the repeats.

    python bench/step_time.py [--batches 12] [--batch-size 32] [--max-seq 128] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dynastudio.core.config import DataConfig  # noqa: E402
from dynastudio.core.data.batching import iterate_batches  # noqa: E402
from dynastudio.core.data.encoding import encode  # noqa: E402
from dynastudio.core.data.tables import subset  # noqa: E402
from dynastudio.core.data.task import load_task_data  # noqa: E402
from dynastudio.core.distill import distill_step, make_optimizer, task_step  # noqa: E402
from dynastudio.core.dynamic import SubnetSpec, subnet_grid, subnet_size  # noqa: E402
from dynastudio.core.models import load_base_model, load_tokenizer  # noqa: E402
from dynastudio.core.store import TaskInfo  # noqa: E402

GLUE = ROOT.parent / "shared" / "data" / "glue"


def measure(batches: int = 12, batch_size: int = 32, max_seq: int = 128, threads: int = 2) -> dict:
    """Time plain, width-stage and depth-stage steps back to back on the same batches; return medians and ratios."""
    torch.set_num_threads(threads)
    if (GLUE / "SST-2").is_dir():
        task = load_task_data(DataConfig(kind="glue", task="sst2", data_dir=str(GLUE)))
        data_name = "SST-2 train"
    else:
        task = load_task_data(DataConfig(kind="demo"))
        data_name = "built-in demo (SST-2 not found)"
    tok = load_tokenizer("builtin:minilm")
    rows = subset(task.train, batches * batch_size, seed=0)
    enc = encode(rows, tok, max_seq)
    data = list(iterate_batches(enc, batch_size, shuffle=False, pad_id=tok.pad_token_id))

    info = TaskInfo.of(task)
    student = load_base_model("builtin:minilm", info, finetuned=False, seed=0).train()
    teacher = load_base_model("builtin:minilm", info, finetuned=False, seed=0).eval()
    opt = make_optimizer(student, 1e-5, 0.01)  # tiny lr: the weights barely move between repeats
    widths = [SubnetSpec(w, 1.0) for w in (1.0, 0.75, 0.5, 0.25)]
    grid = subnet_grid((1.0, 0.75, 0.5, 0.25), (1.0, 0.75, 0.5))
    kinds = {
        "plain": lambda b: task_step(student, b, [SubnetSpec()], depth_rule="keep-last", is_regression=False),
        "width": lambda b: distill_step(
            student, teacher, b, widths, l1=1.0, l2=0.1, depth_rule="keep-last", is_regression=False
        ),
        "depth": lambda b: distill_step(
            student, teacher, b, grid, l1=1.0, l2=1.0, depth_rule="keep-last", is_regression=False
        ),
    }

    def full_step(kind, b) -> float:
        t0 = time.perf_counter()
        kinds[kind](b)
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    for k in kinds:  # warm-up (allocator, kernels)
        full_step(k, data[0])
    times = {k: [] for k in kinds}
    for b in data:
        for k in kinds:
            times[k].append(full_step(k, b))
    tokens = statistics.mean(int(b["attention_mask"].sum()) / b["input_ids"].shape[0] for b in data)
    # ideal: one teacher forward (1 unit) + forward/backward (3 units x its FLOPs share) per sub-network,
    # over a plain step's forward/backward (3 units)
    full = subnet_size(student.config, SubnetSpec(), "keep-last", seq_len=int(tokens))["flops"]
    share_w = sum(subnet_size(student.config, s, "keep-last", seq_len=int(tokens))["flops"] / full for s in widths)
    share_d = sum(subnet_size(student.config, s, "keep-last", seq_len=int(tokens))["flops"] / full for s in grid)
    return {
        "command": f"python bench/step_time.py --batches {batches} --batch-size {batch_size} --max-seq {max_seq} --threads {threads}",
        "model": "MiniLM-L6-H384 (builtin)",
        "data": data_name,
        "batches": len(data),
        "batch_size": batch_size,
        "max_seq": max_seq,
        "mean_tokens_per_example": round(tokens, 1),
        "threads": threads,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "median_step_s": {k: statistics.median(v) for k, v in times.items()},
        "width_over_plain": statistics.median(w / p for w, p in zip(times["width"], times["plain"])),
        "depth_over_plain": statistics.median(d / p for d, p in zip(times["depth"], times["plain"])),
        "ideal_width_over_plain": (1 + 3 * share_w) / 3,
        "ideal_depth_over_plain": (1 + 3 * share_d) / 3,
    }


def table_md(res: dict) -> list[str]:
    m = res["median_step_s"]
    return [
        "| step | median seconds | ratio to plain (median of per-batch ratios) | ideal |",
        "|---|---|---|---|",
        f"| plain fine-tuning | {m['plain']:.3f} | 1.00 | 1.00 |",
        f"| width stage (4 widths) | {m['width']:.3f} | {res['width_over_plain']:.2f} | {res['ideal_width_over_plain']:.2f} |",
        f"| depth stage (12 sub-networks) | {m['depth']:.3f} | {res['depth_over_plain']:.2f} | {res['ideal_depth_over_plain']:.2f} |",
        "",
        "Ideal = one teacher forward plus forward+backward (about 3x a forward) of each sub-network in "
        "proportion to its FLOPs, over a plain step's forward+backward.",
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "step_time"))
    a = ap.parse_args()
    res = measure(a.batches, a.batch_size, a.max_seq, a.threads)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2))
    md = [
        "# Step time: DynaBERT stages vs plain fine-tuning",
        "",
        f"`{res['command']}`",
        "",
        f"MiniLM-L6-H384, {res['data']}, {res['batches']} batches of {a.batch_size} (dynamic padding, max {a.max_seq}; "
        f"{res['mean_tokens_per_example']:.1f} real tokens per example on average), {a.threads} threads, torch {torch.__version__}.",
        "",
        *table_md(res),
    ]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
