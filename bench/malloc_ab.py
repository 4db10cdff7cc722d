"""tcmalloc against glibc's malloc for training steps: fresh processes, alternated (core/malloc.py).

Each round starts one process per allocator, in alternating order (glibc, tcmalloc; then tcmalloc, glibc; ...).
Every process trains the same SST-2 batches (MiniLM, length-grouped as a run makes them, bf16 where `auto` picks
it) with the width-stage step and then the depth-stage step, and reports its mean and median step times after
two warm-up steps, and the malloc library it really ran with (read from its own memory map). The ratio of the two
processes of a round is the figure; rounds differ by the machine's drift.

    flock /tmp/torch.lock .venv/bin/python bench/malloc_ab.py [--rounds 3] [--steps 30]
Writes bench/results/malloc_ab.{md,json}. Nothing else may run on the machine meanwhile. Needs tcmalloc
(Debian/Ubuntu: apt install libtcmalloc-minimal4).
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


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def worker(steps: int) -> None:
    from dynastudio.core import malloc, threads

    threads.set_wait_policy()
    import torch

    from dynastudio.core import distill
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
    task = load_task_data(DataConfig(kind="glue", task="sst2", data_dir=str(GLUE)))
    tok = load_tokenizer("builtin:minilm")
    enc = encode(subset(task.train, 4000, seed=0), tok, 64)
    batches = list(iterate_batches(enc, 32, shuffle=True, seed=0, pad_id=tok.pad_token_id, group_by_length=True))
    batches = batches[: 2 + steps]
    info = TaskInfo.of(task)
    teacher = load_base_model("builtin:minilm", info, finetuned=False, seed=0).eval()
    student = load_base_model("builtin:minilm", info, finetuned=False, seed=0).train()
    opt = distill.make_optimizer(student, 1e-5, 0.01)
    ctx = distill.StepContext.plain(student)
    ctx.precision = resolve_precision("auto", torch.device("cpu"))
    grids = {
        "width": [SubnetSpec(w, 1.0) for w in (1.0, 0.75, 0.5, 0.25)],
        "depth": subnet_grid((1.0, 0.75, 0.5, 0.25), (1.0, 0.75, 0.5)),
    }
    out: dict = {"malloc": malloc.active() or "glibc", "precision": ctx.precision, "threads": n_threads}
    for stage, grid in grids.items():
        times = []
        for b in batches:
            t0 = time.perf_counter()
            distill.distill_step(
                student, teacher, b, grid, l1=1.0, l2=0.1, depth_rule="paper", is_regression=False, ctx=ctx
            )
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t0)
        out[stage] = {"mean_s": statistics.mean(times[2:]), "median_s": statistics.median(times[2:])}
    print("RESULT " + json.dumps(out), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--worker", action="store_true")
    a = ap.parse_args()
    if a.worker:
        return worker(a.steps)
    from dynastudio.core import malloc

    lib = malloc.find({})
    if lib is None:
        raise SystemExit("no tcmalloc here: apt install libtcmalloc-minimal4 (or dnf install gperftools-libs)")
    envs = {
        "glibc": {**os.environ, malloc.ENV: "system"},
        "tcmalloc": malloc.preload_env({k: v for k, v in os.environ.items() if k != malloc.ENV}, lib),
    }
    load_before, t_start = loadavg(), time.perf_counter()
    rounds = []
    for r in range(a.rounds):
        order = ["glibc", "tcmalloc"] if r % 2 == 0 else ["tcmalloc", "glibc"]
        got = {}
        for name in order:
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", "--steps", str(a.steps)],
                env=envs[name],
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                raise SystemExit(f"{name} worker failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
            got[name] = json.loads(line[len("RESULT ") :])
            print(name, got[name], flush=True)
        rounds.append(got)
    summary = {}
    for stage in ("width", "depth"):
        ratios = [g["glibc"][stage]["mean_s"] / g["tcmalloc"][stage]["mean_s"] for g in rounds]
        summary[stage] = {
            "glibc_mean_s": statistics.mean(g["glibc"][stage]["mean_s"] for g in rounds),
            "tcmalloc_mean_s": statistics.mean(g["tcmalloc"][stage]["mean_s"] for g in rounds),
            "ratios": ratios,
            "median_ratio": statistics.median(ratios),
        }
    import torch

    result = {
        "rounds": rounds,
        "summary": summary,
        "library": lib,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds": round(time.perf_counter() - t_start),
        "load_average_before": load_before,
        "load_average_after": loadavg(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "other_work": "nothing else ran (under flock /tmp/torch.lock, which every torch process here takes)",
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "malloc_ab.json").write_text(json.dumps(result, indent=1))
    first = rounds[0]["glibc"]
    lines = [
        "# tcmalloc against glibc's malloc in training steps (bench/malloc_ab.py)",
        "",
        f"`python bench/malloc_ab.py --rounds {a.rounds} --steps {a.steps}` (finished {result['finished']}). "
        f"MiniLM-L6-H384, SST-2 train batches of 32, length-grouped; {first['precision']}, {first['threads']} "
        f"threads; {result['machine']}. Each round: one fresh process per allocator, in alternating order, each "
        f"training the same {a.steps} width-stage steps and then the same {a.steps} depth-stage steps (after two "
        f"warm-up steps each). tcmalloc: `{lib}`; each process read the library it ran with from its own memory "
        f"map: " + ", ".join(sorted({f"{n}: {g[n]['malloc']}" for g in rounds for n in g})) + ".",
        "",
        "| stage | glibc s/step (mean of rounds) | tcmalloc s/step | glibc / tcmalloc, each round | median |",
        "|---|---:|---:|---|---:|",
    ]
    for stage, s in summary.items():
        lines.append(
            f"| {stage} | {s['glibc_mean_s']:.3f} | {s['tcmalloc_mean_s']:.3f} | "
            f"{', '.join(f'{x:.3f}' for x in s['ratios'])} | {s['median_ratio']:.3f}x |"
        )
    lines += [
        "",
        f"Load average before {load_before}, after {result['load_average_after']}; {result['other_work']}. "
        f"{result['seconds']} s in all.",
        "",
    ]
    (OUT / "malloc_ab.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
