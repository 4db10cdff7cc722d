"""SIGKILL a `dynastudio run` at random moments and resume it until it finishes (used by tests/test_kill9.py and
bench/kill9.py). Each attempt is a fresh `python -m dynastudio.core.cli run DIR --events jsonl`; its event lines
say which training step it had reached when it was killed and which step the next attempt resumed from."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Attempt:
    seconds: float
    killed: bool
    returncode: int
    last_step: tuple[str, int] | None  # (stage, step) of the last StepEnded seen
    resumed_from: tuple[str, int] | None  # (stage, step) of the first StageStarted seen
    stage_at_kill: str | None  # the stage running when it was killed (any stage, training or not)


@dataclass
class KillReport:
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def kills(self) -> int:
        return sum(a.killed for a in self.attempts)

    def redone_steps(self) -> list[int]:
        """Per kill inside a training stage: steps the next attempt did again (last seen step - resumed step)."""
        out = []
        for a, b in zip(self.attempts, self.attempts[1:]):
            if a.killed and a.last_step and b.resumed_from and a.last_step[0] == b.resumed_from[0]:
                out.append(a.last_step[1] - b.resumed_from[1])
        return out

    def stages_killed(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for a in self.attempts:
            if a.killed and a.stage_at_kill:
                out[a.stage_at_kill] = out.get(a.stage_at_kill, 0) + 1
        return out


def _env() -> dict:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["TOKENIZERS_PARALLELISM"] = "false"
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "1")
    return env


def run_once(root: Path, kill_after: float | None, timeout: float = 900) -> Attempt:
    """Start a run; SIGKILL it `kill_after` seconds in (None: let it finish)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dynastudio.core.cli", "run", str(root), "--events", "jsonl"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    seen = {"last_step": None, "resumed_from": None, "stage": None}
    err: list[str] = []

    def read_events():
        for line in proc.stdout:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            kind = e.get("event")
            if kind == "StageStarted":
                seen["stage"] = e["stage"]
                if seen["resumed_from"] is None:
                    seen["resumed_from"] = (e["stage"], int(e.get("resumed_from_step") or 0))
            elif kind == "StepEnded":
                seen["last_step"] = (e["stage"], int(e["step"]))

    reader = threading.Thread(target=read_events, daemon=True)
    reader.start()
    drain = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
    drain.start()
    killed = False
    try:
        proc.wait(timeout=kill_after if kill_after is not None else timeout)
    except subprocess.TimeoutExpired:
        if kill_after is None:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"run did not finish in {timeout} s") from None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed = True
    reader.join(timeout=10)
    drain.join(timeout=10)
    proc.stdout.close()
    proc.stderr.close()
    if not killed and proc.returncode != 0:
        raise RuntimeError(f"run exited {proc.returncode} without being killed:\n" + "".join(err[-30:]))
    return Attempt(
        time.monotonic() - t0,
        killed,
        proc.returncode,
        seen["last_step"],
        seen["resumed_from"],
        seen["stage"] if killed else None,
    )


def kill_until_done(root: Path, rng: random.Random, delays: tuple[float, float], max_attempts: int = 200) -> KillReport:
    """Kill at a random moment in `delays` seconds after each start, until an attempt finishes by itself."""
    report = KillReport()
    for _ in range(max_attempts):
        a = run_once(root, rng.uniform(*delays))
        report.attempts.append(a)
        if not a.killed:
            return report
    raise RuntimeError(f"no attempt finished in {max_attempts}")


def grid(root: Path) -> dict[str, float]:
    res = json.loads((Path(root) / "results.json").read_text(encoding="utf-8"))
    return {r["label"]: r["value"] for r in res["rows"]}


def stale_temps(root: Path) -> list[str]:
    """Temporary files or folders left anywhere in the project."""
    root = Path(root)
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.name.endswith(".tmp") or ".new-" in p.name or ".old-" in p.name or p.name == ".tokenizer.tmp"
    )


def model_difference(a: Path, b: Path, name: str = "depth") -> float:
    from safetensors.numpy import load_file

    x = load_file(str(Path(a) / "models" / name / "model.safetensors"))
    y = load_file(str(Path(b) / "models" / name / "model.safetensors"))
    return max(float(abs(x[k].astype("float64") - y[k].astype("float64")).max()) for k in x)
