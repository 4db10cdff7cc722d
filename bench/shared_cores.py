"""Two trainings on one machine: one run's step time alone, then beside a second identical run, in one invocation.

Each training is its own process (so the OpenMP pools really compete): a BERT with MiniLM's shape (6 layers,
hidden 384, 12 heads, FFN 1,536; random weights), batch 32, forward + backward + AdamW steps, at sequence 64 and at
16 (SST-2's rows are about 14 tokens: many small parallel regions, where how a thread waits matters most). Four
ways to run them, interleaved over rounds so a load that comes and goes hits all alike:
- default: what the code did before core/threads.py: no wait policy in the environment, threads = os.cpu_count();
- passive: OMP_WAIT_POLICY=PASSIVE (and KMP_BLOCKTIME=0), each process on all usable cores;
- spin: core/threads.py's short spin (GOMP_SPINCOUNT=10000, KMP_BLOCKTIME=1), each process on all usable cores;
- policy: what the code does now: the short spin, and a process that starts beside another takes its share of the
  cores (configure_threads), the one already running gives up its share at its next check (threads.Rebalancer).
Steps are timed only in a window in which every process of the trial is busy (warm-up done, none finished).

    flock /tmp/torch.lock .venv/bin/python bench/shared_cores.py [--seq 64 16] [--rounds 2] [--solo-s 8] [--pair-s 16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results"
MODES = ("default", "passive", "spin", "policy")
SOLO_OF = {
    "default": "default",
    "passive": "passive",
    "spin": "policy",
    "policy": "policy",
}  # spin alone = policy alone


# ---- one training, in its own process -----------------------------------------------------------------------
def worker(mode: str, window_s: float, registry: str, seq: int) -> None:
    """Protocol on stdin/stdout: 'loaded' -> (configure) -> 'ready' -> (go) -> one JSON line of step times."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from dynastudio.core import threads

    cfg = BertConfig(
        vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = torch.randint(1000, 30000, (32, seq))
    labels = torch.randint(0, 2, (32,))

    def step() -> float:
        t0 = time.perf_counter()
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    print("loaded", flush=True)
    sys.stdin.readline()  # configure: one process after the other, as a second job starts beside a running one
    rebalance = None
    if mode == "default":
        n = os.cpu_count() or 1
        torch.set_num_threads(n)
    elif mode in ("passive", "spin"):
        n, _ = threads.configure_threads("bench", share=1.0, registry=Path(registry))
    else:
        n, _ = threads.configure_threads("bench", registry=Path(registry))
        rebalance = threads.Rebalancer(lambda e: None, n, registry=Path(registry))
    step()  # warm-up: allocator, kernels
    print("ready", flush=True)
    sys.stdin.readline()  # go
    if rebalance is not None:  # as the running training's next check would (every REBALANCE_S seconds)
        rebalance.checked = float("-inf")
        rebalance(None)
    t0, times = time.perf_counter(), []
    while True:
        dt = step()
        if time.perf_counter() - t0 > window_s:
            break  # this step ended after the window: another process may have finished before it did
        times.append(dt)
    threads_end = torch.get_num_threads()
    print(json.dumps({"times": times, "threads_start": n, "threads": threads_end}), flush=True)


# ---- the trials ---------------------------------------------------------------------------------------------
def _env(mode: str) -> dict[str, str]:
    from dynastudio.core.threads import WAIT_POLICY

    env = dict(os.environ)
    for var in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(var, None)  # the bench decides these, whatever the caller's shell holds
    if mode == "passive":
        env.update({"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"})
    elif mode != "default":
        env.update(WAIT_POLICY)
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def trial(mode: str, n: int, window_s: float, seq: int) -> list[dict]:
    """n identical trainings at once; returns each one's step times."""
    with tempfile.TemporaryDirectory(prefix="shared-cores-") as registry:
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--worker", mode, "--window", str(window_s), "--registry", registry]
                + ["--seq", str(seq)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,  # torchao's import chatter; a failing worker shows as a protocol error
                env=_env(mode),
                text=True,
            )
            for _ in range(n)
        ]

        def expect(p, word: str) -> None:
            line = p.stdout.readline().strip()
            if line != word:
                raise RuntimeError(f"worker said {line!r}, expected {word!r}")

        for p in procs:
            expect(p, "loaded")
        for p in procs:
            p.stdin.write("configure\n")
            p.stdin.flush()
            expect(p, "ready")
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        out = [json.loads(p.stdout.readline()) for p in procs]
        for p in procs:
            p.wait()
    return out


def measure(seq: int, a) -> dict:
    plan = [("default", 1), ("passive", 1), ("policy", 1), ("default", 2), ("passive", 2), ("spin", 2), ("policy", 2)]
    steps: dict[str, list[float]] = {f"{m} x{n}": [] for m, n in plan}
    threads_seen: dict[str, list] = {f"{m} x{n}": [] for m, n in plan}
    for r in range(a.rounds):
        for mode, n in plan if r % 2 == 0 else plan[::-1]:
            key = f"{mode} x{n}"
            t0 = time.perf_counter()
            res = trial(mode, n, a.solo_s if n == 1 else a.pair_s, seq)
            for w in res:
                steps[key] += w["times"]
                threads_seen[key].append([w["threads_start"], w["threads"]])
            med = [round(statistics.median(w["times"]) * 1000) for w in res if w["times"]]
            took = time.perf_counter() - t0
            print(f"seq {seq} round {r + 1} {key:<11} ms/step per process: {med}  ({took:.0f} s)", flush=True)
    ms = {k: round(statistics.median(v) * 1000, 1) for k, v in steps.items() if v}
    missing = [k for k in steps if k not in ms]
    if missing:  # a step longer than the window: nothing overlapped fully
        raise SystemExit(f"no step fit in the window for {missing}: run again with a longer --pair-s/--solo-s")
    solo = {m: ms[f"{SOLO_OF[m]} x1"] for m in MODES}
    return {
        "seq": seq,
        "ms_per_step_median": ms,
        "steps_timed": {k: len(v) for k, v in steps.items()},
        "threads_start_end": threads_seen,
        "solo_used_for_ratio": solo,
        "ratio_side_by_side_over_solo": {m: round(ms[f"{m} x2"] / solo[m], 2) for m in MODES},
        "solo_over_default_solo": {m: round(solo[m] / solo["default"], 2) for m in MODES},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", type=int, nargs="+", default=[64, 16])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--solo-s", type=float, default=8.0)
    ap.add_argument("--pair-s", type=float, default=16.0)
    ap.add_argument("--worker", choices=MODES)
    ap.add_argument("--window", type=float)
    ap.add_argument("--registry")
    a = ap.parse_args()
    if a.worker:
        worker(a.worker, a.window, a.registry, a.seq[0])
        return

    from dynastudio.core.threads import WAIT_POLICY, usable_cores

    load_before = os.getloadavg()
    t_start = time.time()
    by_seq = [measure(seq, a) for seq in a.seq]
    load_after = os.getloadavg()
    result = {
        "command": "python bench/shared_cores.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "usable_cores": usable_cores(),
            "python": platform.python_version(),
        },
        "model": "random BERT, MiniLM shape (6 layers, hidden 384, 12 heads, FFN 1536), fp32",
        "batch": 32,
        "step": "forward + backward + AdamW, each training its own process",
        "spin": WAIT_POLICY,
        "rounds": a.rounds,
        "window_s": {"solo": a.solo_s, "pair": a.pair_s},
        "by_seq": by_seq,
        "target_ratio_max": 2.5,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "other_work": "nothing else ran (run under flock /tmp/torch.lock, which every torch process here takes)",
        "seconds": round(time.time() - t_start),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "shared_cores.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Two trainings on one machine (bench/shared_cores.py)",
        "",
        f"`{result['command']}` (finished {result['finished']}). {result['model']}; batch 32; {result['step']}. "
        f"{result['machine']['cores']} cores ({result['machine']['usable_cores']} usable), {a.rounds} interleaved "
        "rounds, median ms per step.",
    ]
    for r in by_seq:
        ms, solo, ratio, th = (
            r["ms_per_step_median"],
            r["solo_used_for_ratio"],
            r["ratio_side_by_side_over_solo"],
            r["threads_start_end"],
        )
        lines += [
            "",
            f"## Sequence {r['seq']}",
            "",
            "| mode | solo ms/step | solo / default solo | side by side ms/step (each) | ratio | threads each (start -> end) |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for m in MODES:
            lines.append(
                f"| {m} | {solo[m]:.0f} | {r['solo_over_default_solo'][m]:.2f} | {ms[f'{m} x2']:.0f} | {ratio[m]:.2f}x | "
                + ", ".join(f"{s}->{e}" for s, e in th[f"{m} x2"])
                + " |"
            )
    lines += [
        "",
        "- default: no wait policy in the environment, threads = os.cpu_count() (the code before core/threads.py).",
        "- passive: OMP_WAIT_POLICY=PASSIVE, KMP_BLOCKTIME=0, all usable cores each.",
        f"- spin: {', '.join(f'{k}={v}' for k, v in WAIT_POLICY.items())} (core/threads.py), all usable cores each. "
        "Alone it is the policy's solo.",
        "- policy: the short spin, and the second process takes its share of the cores while the first gives up its "
        "share at its next check (core/threads.py: configure_threads + Rebalancer).",
        f"- Target: at most 2.5x. Load average before {result['load_average_before']}, after "
        f"{result['load_average_after']}; {result['other_work']}. {result['seconds']} s in all.",
    ]
    (OUT / "shared_cores.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
