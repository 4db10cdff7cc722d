"""GPU step time, throughput and peak memory: fp32, bf16 and fp16, for a plain, a width and a depth step.

Models: a BERT-base-shaped encoder (12 layers, hidden 768, 12 heads; random weights from a config: speed
does not depend on the values) and the built-in MiniLM-L6-H384. Batch 32 of rows up to 128 tokens: every row
128 tokens long (`full`, the worst case of `max_seq_length 128`, no padding) and a realistic mix of lengths
(`mixed`, padded, SDPA's masked path). Each step is what the training loop runs: the forward and backward
passes of `task_step`/`distill_step` (under autocast for bf16/fp16), gradient clipping (after unscaling for
fp16), AdamW (through the gradient scaler for fp16). bf16 is left out on a GPU without native bf16.

    python bench/gpu_steps.py                      # on a CUDA GPU; writes bench/results/gpu_steps.{json,md}
    python bench/gpu_steps.py --device cpu --steps 2 --warmup 1 --batch 4 --seq 32 --out /tmp/x   # a smoke run

Reports per model, precision and step kind: median step seconds, examples per second, and the peak GPU
memory (torch.cuda.max_memory_allocated) of that step kind; the speed-up over fp32 side by side.
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


def make_batch(vocab: int, batch: int, seq: int, mask: str, device) -> dict:
    """One batch as the training loop gets it. full: every row `seq` tokens (the worst case, no padding); mixed: a
    realistic mix of lengths (SST-2-like: most rows short, one at `seq`, so the batch is padded to it), which runs
    SDPA's masked path."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (batch, seq), generator=g)
    if mask == "full":
        lengths = torch.full((batch,), seq)
    else:
        lengths = (torch.empty(batch).log_normal_(mean=3.0, std=0.6, generator=g)).round().clamp(4, seq).long()
        lengths[0] = seq
    attention = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    n_tokens = int(lengths.sum())
    return {
        "input_ids": (ids * attention).to(device),
        "attention_mask": attention.to(device),
        "token_type_ids": torch.zeros(batch, seq, dtype=torch.long).to(device),
        "labels": torch.randint(0, 2, (batch,), generator=g).to(device),
        "padded": n_tokens != batch * seq,
        "n_tokens": n_tokens,
    }


def measure(make_model, device, precision, batch, seq, steps, warmup, mask) -> dict:
    widths = [SubnetSpec(w, 1.0) for w in (1.0, 0.75, 0.5, 0.25)]
    grid = subnet_grid((1.0, 0.75, 0.5, 0.25), (1.0, 0.75, 0.5))
    student = make_model().to(device).train()
    teacher = make_model().to(device).eval()
    b = make_batch(student.config.vocab_size, batch, seq, mask, device)
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
            if scaler is not None:  # as the training loop runs an fp16 step
                scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            opt.zero_grad(set_to_none=True)
            sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        out[kind] = {
            "median_s": med,
            "examples_per_s": batch / med,
            "tokens_per_s": b["n_tokens"] / med,
            "peak_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        }
    return out


MODELS = {"bert-base": ("bert-base (random weights)", bert_base), "minilm": ("MiniLM-L6-H384", minilm)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--models", default="bert-base,minilm", help="comma separated: bert-base, minilm")
    ap.add_argument("--precisions", default="fp32,bf16,fp16", help="comma separated: fp32, bf16, fp16")
    ap.add_argument("--masks", default="full,mixed", help="full (no padding), mixed (a realistic length mix)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    a = ap.parse_args()
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: this benchmark measures GPU steps (--device cpu only for a smoke run)")
    runtime.setup_device_math(device)
    precisions = [p for p in a.precisions.split(",") if p]
    skipped = {}
    if device.type == "cuda" and "bf16" in precisions and not runtime.cuda_native_bf16(device):
        precisions.remove("bf16")  # emulated: not what training would run (auto picks fp16 there)
        skipped["bf16"] = "this GPU has no native bf16 (compute capability < 8.0)"
    masks = [m for m in a.masks.split(",") if m]
    results: dict = {}
    for key in [m for m in a.models.split(",") if m]:
        name, make = MODELS[key]
        results[name] = {
            mask: {p: measure(make, device, p, a.batch, a.seq, a.steps, a.warmup, mask) for p in precisions}
            for mask in masks
        }
        print(name, json.dumps(results[name], indent=1), flush=True)
    report = {
        "command": "python bench/gpu_steps.py " + " ".join(sys.argv[1:]),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "capability": list(torch.cuda.get_device_capability(device)) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "batch": a.batch,
        "seq": a.seq,
        "steps": a.steps,
        "warmup": a.warmup,
        "skipped": skipped,
        "results": results,
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_steps.json").write_text(json.dumps(report, indent=2))
    mib = lambda x: "-" if x is None else f"{x:.0f}"  # noqa: E731
    lines = [
        f"# GPU steps: {' / '.join(precisions)} ({report['device']})",
        "",
        f"`{report['command']}`",
        "",
        f"Batch {a.batch}, rows of up to {a.seq} tokens (full: every row {a.seq}; mixed: a realistic mix of lengths "
        f"padded to {a.seq}), median of {a.steps} steps after {a.warmup} warm-up; torch {report['torch']}. "
        "fp32 matmuls use TF32; fp16 steps use the gradient scaler. Ratio: fp32 step time / this precision's."
        + "".join(f" Not run: {p} ({why})." for p, why in skipped.items()),
        "",
        "| model | mask | step | precision | s/step | fp32 / this | examples/s | peak MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, by_mask in results.items():
        for mask, r in by_mask.items():
            for kind in ("plain", "width", "depth"):
                for p in precisions:
                    x = r[p][kind]
                    ratio = f"{r['fp32'][kind]['median_s'] / x['median_s']:.2f}" if "fp32" in r else "-"
                    lines.append(
                        f"| {name} | {mask} | {kind} | {p} | {x['median_s']:.4f} | {ratio} | "
                        f"{x['examples_per_s']:.0f} | {mib(x['peak_mib'])} |"
                    )
    (out / "gpu_steps.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
