"""GPU step time, throughput and peak memory: fp32 vs bf16, for a plain, a width and a depth step.

Models: a BERT-base-shaped encoder (12 layers, hidden 768, 12 heads; random weights from a config: speed
does not depend on the values) and the built-in MiniLM-L6-H384. Batch 32, every row 128 tokens long (the
worst case of `max_seq_length 128`). Each step is what the training loop runs: the forward and backward
passes of `task_step`/`distill_step` (under autocast for bf16), gradient clipping, AdamW.

    python bench/gpu_steps.py                      # on a CUDA GPU; writes bench/results/gpu_steps.{json,md}
    python bench/gpu_steps.py --device cpu --steps 2 --warmup 1 --batch 4 --seq 32 --out /tmp/x   # a smoke run

Reports per model, precision and step kind: median step seconds, examples per second, and the peak GPU
memory (torch.cuda.max_memory_allocated) of that step kind; the bf16/fp32 speed-up side by side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from dynastudio.core import runtime  # noqa: E402
from dynastudio.core.distill import StepContext, SubnetRunner, distill_step, make_optimizer, task_step  # noqa: E402
from dynastudio.core.dynamic import SubnetSpec, subnet_grid  # noqa: E402


def bert_base(num_labels: int = 2):
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, num_labels=num_labels
    )
    torch.manual_seed(0)
    return BertForSequenceClassification(cfg)


def minilm():
    from dynastudio.core.models import load_base_model
    from dynastudio.core.store import TaskInfo

    info = TaskInfo(
        name="bench", metric="accuracy", label_names=("0", "1"), is_regression=False, train_rows=0, dev_rows=0
    )
    return load_base_model("builtin:minilm", info, finetuned=False, seed=0)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(make_model, device, precision, batch, seq, steps, warmup) -> dict:
    widths = [SubnetSpec(w, 1.0) for w in (1.0, 0.75, 0.5, 0.25)]
    grid = subnet_grid((1.0, 0.75, 0.5, 0.25), (1.0, 0.75, 0.5))
    student = make_model().to(device).train()
    teacher = make_model().to(device).eval()
    vocab = student.config.vocab_size
    g = torch.Generator().manual_seed(0)
    b = {
        "input_ids": torch.randint(5, vocab, (batch, seq), generator=g).to(device),
        "attention_mask": torch.ones(batch, seq, dtype=torch.long, device=device),
        "token_type_ids": torch.zeros(batch, seq, dtype=torch.long, device=device),
        "labels": torch.randint(0, 2, (batch,), generator=g).to(device),
    }
    opt = make_optimizer(student, 1e-5, 0.01)
    scaler = runtime.make_scaler(device, precision)
    ctx = StepContext(SubnetRunner(student), device, precision, scaler)
    kinds = {
        "plain": lambda: task_step(student, b, [SubnetSpec()], depth_rule="keep-last", is_regression=False, ctx=ctx),
        "width": lambda: distill_step(
            student, teacher, b, widths, l1=1.0, l2=0.1, depth_rule="keep-last", is_regression=False, ctx=ctx
        ),
        "depth": lambda: distill_step(
            student, teacher, b, grid, l1=1.0, l2=1.0, depth_rule="keep-last", is_regression=False, ctx=ctx
        ),
    }
    out = {}
    for kind, fn in kinds.items():
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for i in range(warmup + steps):
            sync(device)
            t0 = time.perf_counter()
            fn()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        out[kind] = {
            "median_s": med,
            "examples_per_s": batch / med,
            "peak_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    a = ap.parse_args()
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: this benchmark measures GPU steps (--device cpu only for a smoke run)")
    runtime.setup_device_math(device)
    precisions = ["fp32", "bf16"]
    results = {}
    for name, make in (("bert-base (random weights)", bert_base), ("MiniLM-L6-H384", minilm)):
        results[name] = {p: measure(make, device, p, a.batch, a.seq, a.steps, a.warmup) for p in precisions}
        print(name, json.dumps(results[name], indent=1), flush=True)
    report = {
        "command": "python bench/gpu_steps.py " + " ".join(sys.argv[1:]),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "batch": a.batch,
        "seq": a.seq,
        "steps": a.steps,
        "warmup": a.warmup,
        "results": results,
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_steps.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"# GPU steps: fp32 vs bf16 ({report['device']})",
        "",
        f"`{report['command']}`",
        "",
        f"Batch {a.batch}, {a.seq} tokens per row, median of {a.steps} steps after {a.warmup} warm-up; torch {report['torch']}. "
        "fp32 matmuls use TF32.",
        "",
        "| model | step | fp32 s | bf16 s | fp32 / bf16 | bf16 examples/s | fp32 peak MiB | bf16 peak MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        for kind in ("plain", "width", "depth"):
            f, h = r["fp32"][kind], r["bf16"][kind]
            mib = lambda x: "-" if x is None else f"{x:.0f}"  # noqa: E731
            lines.append(
                f"| {name} | {kind} | {f['median_s']:.4f} | {h['median_s']:.4f} | {f['median_s'] / h['median_s']:.2f} | "
                f"{h['examples_per_s']:.0f} | {mib(f['peak_mib'])} | {mib(h['peak_mib'])} |"
            )
    (out / "gpu_steps.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
