"""Speed report: training-step cost, latency vs FLOPs, INT8 vs fp32, and peak memory per stage, in one run.

Everything below is measured by this one command on this machine, each ratio from measurements taken
side by side:
  1. step time of the width stage (4 widths) and the depth stage (12 sub-networks) over a plain
     fine-tuning step, the three timed back to back on the same SST-2 batches (bench/step_time.py);
  2. every sub-network's onnxruntime latency ratio against its FLOPs ratio (batch 1, seq 128, 1 thread),
     INT8 against fp32, and the INT8 export's prediction agreement on SST-2 dev (bench/latency.py);
  3. peak memory (max RSS) of each pipeline stage, each run as its own `dynastudio run --until STAGE`
     child on a small SST-2 project with the quality benchmark's batch and sequence length.
If bench/results/sst2.json exists, the peak memory of its full-size stages is shown beside (3).

    python bench/speed.py            # about 10 minutes on 2 CPU cores (plus ~3 min the first time, to
                                     # fine-tune the model bench/latency.py measures; cached in bench/.cache)

Writes bench/results/speed.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import latency as latency_bench  # noqa: E402  (bench/latency.py)
import step_time  # noqa: E402  (bench/step_time.py)
from sst2 import mib, run_stage  # noqa: E402  (bench/sst2.py)

from dynastudio.core.config import DataConfig, ProjectConfig, profile_config  # noqa: E402
from dynastudio.core.prepare import new_project  # noqa: E402
from dynastudio.core.store import atomic_write_text  # noqa: E402

GLUE = ROOT.parent / "shared" / "data" / "glue"
OUT = ROOT / "bench" / "results"
STAGES = ("finetune", "rewire", "width", "depth", "evaluate")
WIDTH_STEP_TARGET = 3.0


def stage_memory(work: Path, rows: int, seq: int, batch: int) -> dict[str, dict]:
    """Run every pipeline stage as a child process on a small SST-2 project; return seconds and peak RSS per stage."""
    shutil.rmtree(work, ignore_errors=True)
    train = profile_config(
        "paper",
        batch_size=batch,
        max_seq_length=seq,
        max_train_examples=rows,
        importance_examples=256,
        teacher_epochs=1.0,
        width_epochs=1.0,
        depth_epochs=1.0,
        checkpoint_every=10_000,
        seed=0,
    )
    config = ProjectConfig(
        model="builtin:minilm",
        data=DataConfig(kind="glue", task="sst2", data_dir=str(GLUE)),
        train=train,
        name="speed-memory",
    )
    new_project(work, config)
    out = {}
    for stage in STAGES:
        out[stage] = run_stage(work, stage)
        print(f"  {stage}: {out[stage]['seconds']:.0f} s, peak {mib(out[stage])} MiB", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--step-batches", type=int, default=12)
    ap.add_argument("--step-seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the step timing")
    ap.add_argument("--memory-rows", type=int, default=960, help="SST-2 train rows of the memory project")
    ap.add_argument("--runs", type=int, default=100, help="timed latency runs per cell")
    ap.add_argument("--name", default="speed")
    ap.add_argument("--render-only", action="store_true", help="re-render the .md/.png from the saved JSON")
    a = ap.parse_args()
    if a.render_only:
        report = json.loads((OUT / f"{a.name}.json").read_text())
        atomic_write_text((OUT / a.name).with_suffix(".md"), render_md(report))
        plot(report, (OUT / a.name).with_suffix(".png"))
        return 0
    if not (GLUE / "SST-2" / "train.tsv").is_file():
        raise SystemExit(f"SST-2 not found under {GLUE}: this benchmark reads ../shared/data/glue/SST-2")
    t0 = time.perf_counter()

    print("1/3 step time: plain vs width stage vs depth stage, same batches", flush=True)
    steps = step_time.measure(a.step_batches, 32, a.step_seq, a.threads)
    print(f"  width/plain {steps['width_over_plain']:.2f}x, depth/plain {steps['depth_over_plain']:.2f}x", flush=True)

    print("2/3 peak memory of each stage (child processes)", flush=True)
    memory = stage_memory(ROOT / "bench" / ".cache" / "speed-memory", a.memory_rows, 64, 32)

    print("3/3 latency of every sub-network, INT8 vs fp32, INT8 agreement", flush=True)
    lat = latency_bench.measure(GLUE, runs=a.runs)

    full_run = None
    sst2_json = OUT / "sst2.json"
    if sst2_json.is_file():
        s = json.loads(sst2_json.read_text())
        full_run = {
            "source": "bench/results/sst2.json",
            "train_examples": s["settings"]["train_examples"],
            "stages": s["stages_measured"],
        }
    report = {
        "command": "python bench/speed.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {lat['setup'].get('cpu_count')} cores",
        "python": platform.python_version(),
        "step_time": steps,
        "latency": lat,
        "memory": {"rows": a.memory_rows, "seq": 64, "batch": 32, "stages": memory},
        "memory_full_run": full_run,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    stem = OUT / a.name
    atomic_write_text(stem.with_suffix(".json"), json.dumps(report, indent=2))
    md = render_md(report)
    atomic_write_text(stem.with_suffix(".md"), md)
    plot(report, stem.with_suffix(".png"))
    print()
    print(md)
    return 0


def targets(r: dict) -> list[tuple[str, str, str]]:
    st, m = r["step_time"], r["latency"]["summary"]
    yes = lambda ok: "yes" if ok else "**no**"  # noqa: E731
    return [
        (
            "width-stage step / plain step <= 3.0x",
            f"{st['width_over_plain']:.2f}x (ideal {st['ideal_width_over_plain']:.2f}x)",
            yes(st["width_over_plain"] <= WIDTH_STEP_TARGET),
        ),
        (
            "depth-stage step / plain step (reported)",
            f"{st['depth_over_plain']:.2f}x (ideal {st['ideal_depth_over_plain']:.2f}x)",
            "-",
        ),
        (
            "latency ratio / FLOPs ratio <= 1.15 for widths >= 0.5",
            f"worst {m['worst_latency_over_flops_width_ge_0.5']:.3f}",
            yes(m["latency_tracks_flops"]),
        ),
        (
            "INT8 vs fp32 latency, full model (>= 1.5x)",
            f"{m['int8_speedup_full']:.2f}x faster",
            yes(m["int8_speedup_passed"]),
        ),
        (
            "INT8 prediction agreement on SST-2 dev (>= 99%)",
            f"{100 * m['int8_dev_agreement']:.2f}% of {m['int8_dev_examples']}",
            yes(m["int8_agreement_passed"]),
        ),
    ]


def render_md(r: dict) -> str:
    st, lat, mem = r["step_time"], r["latency"], r["memory"]
    s = lat["setup"]
    lines = [
        "# Speed report (bench/speed.py)",
        "",
        f"`{r['command'].strip()}`: one run, {r['seconds'] / 60:.1f} min on {r['machine']}, torch {st['torch']}, "
        f"onnxruntime {s['onnxruntime']}. Model: MiniLM-L6-H384 (built-in).",
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in targets(r)],
        "",
        "## 1. Training step cost",
        "",
        f"{st['batches']} SST-2 train batches of {st['batch_size']} (dynamic padding, max {st['max_seq']}; "
        f"{st['mean_tokens_per_example']} real tokens per example on average), {st['threads']} threads. Each batch is "
        "timed as a plain step, a width-stage step and a depth-stage step back to back; ratios are medians of the per-batch ratios.",
        "",
        *step_time.table_md(st),
        "",
        "## 2. Latency vs FLOPs, INT8 vs fp32",
        "",
        f"onnxruntime on {s['device']}, {s['threads']} thread, batch {s['batch']}, seq {s['seq']}, median of {s['runs']} runs "
        f"after {s['warmup']} warm-up; the model is MiniLM fine-tuned on {lat['finetune']['train_examples']} SST-2 rows.",
        "",
        "| width | depth | fp32 ms | int8 ms | int8 speed-up | latency / full | FLOPs / full | latency ratio / FLOPs ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in lat["grid"]:
        lines.append(
            f"| {t['width_mult']:g} | {t['depth_mult']:g} | {t['latency_fp32_ms']:.2f} | {t['latency_int8_ms']:.2f} | "
            f"{t['latency_fp32_ms'] / t['latency_int8_ms']:.2f}x | {t['latency_ratio']:.3f} | {t['flops_ratio']:.3f} | "
            f"{t['latency_over_flops']:.3f}{'' if t['checked'] else ' (width 0.25: reported only)'} |"
        )
    m = lat["summary"]
    if m.get("int8_dev_accuracy") is not None:
        lines += [
            "",
            f"INT8 export of the full model: dev accuracy {100 * m['int8_dev_accuracy']:.2f} vs "
            f"{100 * m['fp32_dev_accuracy']:.2f} in PyTorch fp32; {100 * m['int8_dev_agreement']:.2f}% of predictions agree.",
        ]
    base = mem["stages"]["finetune"]["peak_rss_mib"]
    lines += [
        "",
        "## 3. Peak memory of each stage",
        "",
        f"Each stage run as its own child process (`dynastudio run --until STAGE`) on a {mem['rows']}-row SST-2 project, "
        f"batch {mem['batch']}, seq {mem['seq']}; peak = the child's own peak resident memory (VmHWM).",
    ]
    full = r.get("memory_full_run")
    if full:
        lines += [
            f"The last column is the same stage in the full quality run ({full['source']}, "
            f"{full['train_examples']} train rows)."
        ]
    lines += [
        "",
        "| stage | peak MiB | / fine-tuning peak" + (" | full run peak MiB |" if full else " |"),
        "|---|---:|---:|" + ("---:|" if full else ""),
    ]
    for stage, v in mem["stages"].items():
        row = f"| {stage} | {mib(v)} | {v['peak_rss_mib'] / base:.2f}x |"
        if full:
            fv = full["stages"].get(f"dynabert/{stage}")
            row += f" {mib(fv)} |" if fv else " - |"
        lines.append(row)
    if full and any(v.get("peak_method") != "VmHWM" for v in full["stages"].values()):
        lines += [
            "",
            "\\* that run measured the max RSS wait4 returns, which Linux makes at least the size of the "
            "benchmark process at fork time: exact for the training stages (they outgrew it), an upper bound otherwise.",
        ]
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    st, lat, mem = r["step_time"], r["latency"], r["memory"]["stages"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.4), dpi=110)
    ax = axes[0]
    kinds = ["plain", "width", "depth"]
    measured = [1.0, st["width_over_plain"], st["depth_over_plain"]]
    ideal = [1.0, st["ideal_width_over_plain"], st["ideal_depth_over_plain"]]
    ax.bar(kinds, measured, color=["grey", "tab:blue", "tab:orange"], label="measured")
    ax.scatter(kinds, ideal, marker="_", s=600, c="k", label="ideal (FLOPs)", zorder=3)
    ax.axhline(WIDTH_STEP_TARGET, ls="--", c="tab:red", lw=1, label="width target 3.0x")
    ax.set_ylabel("step time / plain fine-tuning step")
    ax.set_title("Training step cost")
    ax.legend(fontsize=8)

    ax = axes[1]
    g = lat["grid"]
    fl = [t["flops_ratio"] for t in g]
    full = next(t for t in g if t["width_mult"] == 1 and t["depth_mult"] == 1)["latency_fp32_ms"]
    for int8, key, mark in ((False, "latency_fp32_ms", "o"), (True, "latency_int8_ms", "^")):
        ys = [t[key] / full for t in g]
        ax.scatter(fl, ys, marker=mark, label=("INT8" if int8 else "fp32") + " latency / full fp32")
    xs = [0, 1.05]
    ax.plot(xs, xs, "k-", lw=1, label="latency = FLOPs")
    ax.plot(xs, [1.15 * x for x in xs], "k:", lw=1, label="1.15 x FLOPs")
    ax.set_xlabel("FLOPs / full model")
    ax.set_ylabel("latency / full model fp32")
    ax.set_title("Sub-network latency (ORT, batch 1, seq 128, 1 thread)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)

    ax = axes[2]
    names = list(mem)
    ax.bar(names, [mem[n]["peak_rss_mib"] for n in names], color="tab:purple")
    ax.set_ylabel("peak RSS, MiB")
    ax.set_title("Peak memory per stage")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
