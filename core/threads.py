"""How many CPU threads a training, latency or export process uses, and the OpenMP wait policy it starts with.

Torch's CPU build runs its kernels on an OpenMP pool (GNU libgomp in the wheel) as wide as the machine's cores,
whose idle threads spin for a while before they sleep. Two such processes on one machine spin against each other:
a training measured 4-10x slower beside a second one instead of about 2x. So every process we start gets a short
spin in its environment (it must be there before the OpenMP runtime loads, i.e. before torch is imported), and
sizes its pool from the cores it may really use (affinity, cgroup CPU quota), less when other trainings, latency
measurements or exports of ours already run on the machine (each its fair share). No torch import here
until configure_threads() runs, so the studio may import this module.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import tempfile
import threading
import time
from pathlib import Path

# How long an idle OpenMP thread spins before it sleeps. GNU libgomp (torch's CPU wheel) counts spins: GOMP_SPINCOUNT,
# 300,000 by default, 0 under OMP_WAIT_POLICY=PASSIVE. Intel's OpenMP runtime (some conda builds) counts ms:
# KMP_BLOCKTIME, 200 by default. Passive (no spin) shares well but made width- and depth-stage steps on SST-2's
# batches (32 x ~12 tokens: many small parallel regions, each waking the pool) about 20 % slower alone here
# (bench/results/step_parts.md); 10,000 spins (tens of microseconds) kept the default's solo speed. Spinning pools still fight when they overlap, so what makes two of our
# jobs share is the fair share of cores below (1.69x side by side at seq 16, 1.78x at 64; passive on all cores 1.57x
# and 1.81x, the short spin on all cores 3.12x and 2.28x: bench/results/shared_cores.md). Beside a CPU-heavy program
# of another kind, OMP_WAIT_POLICY=PASSIVE is the better choice, and ours then adds nothing. KMP_BLOCKTIME=1 (ms,
# its smallest step above 0) is the same idea for Intel's runtime, not measured: torch's wheel uses libgomp. A
# user's own OMP_WAIT_POLICY, GOMP_SPINCOUNT or KMP_BLOCKTIME wins.
WAIT_POLICY = {"GOMP_SPINCOUNT": "10000", "KMP_BLOCKTIME": "1"}
CGROUP_ROOT = Path("/sys/fs/cgroup")
# one file per live process of ours that computes (pid.role), so a newcomer can take its fair share of the cores
REGISTRY = Path(tempfile.gettempdir()) / f"dynastudio-cpu-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
REBALANCE_S = 10.0  # how often a training looks again at who else computes on the machine


def set_wait_policy(env=None) -> None:
    """Add the short spin to `env` (default: this process's environment, inherited by its children), unless the
    user chose a wait policy there (OMP_WAIT_POLICY decides the spin when GOMP_SPINCOUNT is not set)."""
    target = os.environ if env is None else env
    if "OMP_WAIT_POLICY" in target:
        return
    for key, value in WAIT_POLICY.items():
        target.setdefault(key, value)


def child_env(base=None) -> dict[str, str]:
    """The environment for a child process we start: `base` (default os.environ) plus the short spin."""
    env = dict(os.environ if base is None else base)
    set_wait_policy(env)
    return env


def _cgroup_paths() -> dict[str, str]:
    """Controller -> this process's cgroup path, from /proc/self/cgroup ('' is the v2 unified hierarchy)."""
    out: dict[str, str] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(","):
                out[controller] = parts[2]
    return out


def _read_limit(quota_file: Path, period_file: Path | None) -> float | None:
    """Cores a cgroup may use: v2 'quota period' (or 'max period') in one file, v1 quota and period in two."""
    try:
        if period_file is None:
            quota_s, _, period_s = quota_file.read_text().strip().partition(" ")
        else:
            quota_s, period_s = quota_file.read_text().strip(), period_file.read_text().strip()
        if quota_s == "max" or int(quota_s) <= 0 or int(period_s) <= 0:
            return None
        return int(quota_s) / int(period_s)
    except (OSError, ValueError):
        return None


def cgroup_cpu_limit(root: Path | None = None) -> float | None:
    """The CPU quota of this process's cgroup in cores (the smallest along its path), or None without one.

    A container sees its own cgroup at the root of /sys/fs/cgroup; elsewhere /proc/self/cgroup names the path."""
    root = CGROUP_ROOT if root is None else Path(root)
    paths = _cgroup_paths()
    found: list[float] = []
    # cgroup v2: cpu.max in the process's cgroup and each of its parents
    if (root / "cgroup.controllers").exists() or (root / "cpu.max").exists():
        rel = Path(paths.get("", "/").lstrip("/"))
        for folder in {root / rel, *[root / p for p in rel.parents], root}:
            if (limit := _read_limit(folder / "cpu.max", None)) is not None:
                found.append(limit)
    # cgroup v1: the cpu controller, mounted as cpu, cpu,cpuacct or at the root itself
    rel1 = Path(paths.get("cpu", "/").lstrip("/"))
    for mount in (root / "cpu", root / "cpu,cpuacct", root):
        for folder in {mount / rel1, mount}:
            if (limit := _read_limit(folder / "cpu.cfs_quota_us", folder / "cpu.cfs_period_us")) is not None:
                found.append(limit)
    return min(found) if found else None


def usable_cores(root: Path | None = None) -> int:
    """The CPUs this process may really use: its affinity mask, capped by a cgroup CPU quota (rounded up); >= 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no affinity call
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        cores = min(cores, math.ceil(limit))
    return max(1, cores)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # alive, someone else's (PermissionError)
        return True
    return True


def others_computing(registry: Path | None = None) -> list[tuple[int, str]]:
    """(pid, role) of the other live processes of ours that compute on this machine; stale entries are removed."""
    folder = REGISTRY if registry is None else Path(registry)
    out: list[tuple[int, str]] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return out
    for entry in entries:
        pid_s, _, role = entry.name.partition(".")
        if not pid_s.isdigit() or int(pid_s) == os.getpid():
            continue
        if _alive(int(pid_s)):
            out.append((int(pid_s), role))
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
    return sorted(out)


def register(role: str, registry: Path | None = None) -> None:
    """Say that this process computes (until it exits: a dead pid's entry is removed by whoever looks next)."""
    folder = REGISTRY if registry is None else Path(registry)
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{os.getpid()}.{role}").touch()


def unregister(registry: Path | None = None) -> None:
    """This process no longer computes (its job ended, the process goes on)."""
    folder = REGISTRY if registry is None else Path(registry)
    for entry in folder.glob(f"{os.getpid()}.*"):
        with contextlib.suppress(OSError):
            entry.unlink()


def plan_threads(share: float | None = None, others: int = 0, env=None, root: Path | None = None) -> tuple[int, str]:
    """(threads, why): OMP_NUM_THREADS when the user set it; else the usable cores, times `share` when given,
    else divided among this process and `others` that compute beside it."""
    env = os.environ if env is None else env
    user = env.get("OMP_NUM_THREADS", "").strip()
    if user:
        try:
            return max(1, int(user.split(",")[0])), "OMP_NUM_THREADS"
        except ValueError:
            pass  # torch itself warns about an unreadable value and uses its default
    cores = usable_cores(root)
    if share is not None:
        return max(1, round(cores * share)), f"{share:g} of {cores} usable cores"
    if others:
        return max(1, cores // (others + 1)), f"{cores} usable cores shared with {others} other job(s)"
    return cores, f"{cores} usable cores"


def _torch():
    # by name, as the job registry loads its jobs: the studio imports this module for child_env(), and its
    # contract (no torch in the studio) is checked on import statements; only a job process gets here
    return importlib.import_module("torch")


def configure_threads(role: str, *, share: float | None = None, registry: Path | None = None) -> tuple[int, str]:
    """Size torch's thread pools for this process (a training, latency or export job) and register it.

    Call it at the start of the process. The wait policy is also set here for the children it starts; this
    process's own OpenMP runtime got it only if it was in the environment before torch was imported (the
    `dynastudio` command and the studio's children have it). Returns (threads, a one-line reason)."""
    set_wait_policy()
    others = others_computing(registry)
    threads, why = plan_threads(share, len(others))
    torch = _torch()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # the inter-op pool has started already: it stays as it is
        torch.set_num_interop_threads(threads)
    register(role, registry)
    return threads, why


def sharing_line(threads: int, why: str, registry: Path | None = None) -> str | None:
    """A log line when this job shares the machine with other jobs of ours, else None."""
    others = others_computing(registry)
    if not others or why == "OMP_NUM_THREADS":
        return None
    names = ", ".join(f"{role} (pid {pid})" for pid, role in others[:3])
    return f"{names} also computing on this machine: this job uses {threads} thread(s), its share of the cores"


class Rebalancer:
    """Wraps an event sink: every REBALANCE_S seconds (on the training's own thread) the pool is resized to this
    process's share of the cores, so a run that started alone gives room to a job started beside it, and takes
    its cores back when that job ends. A no-op when the user set OMP_NUM_THREADS."""

    def __init__(self, sink, threads: int, registry: Path | None = None, clock=time.monotonic):
        self.sink, self.threads, self.registry, self.clock = sink, threads, registry, clock
        self.checked = clock()
        self.fixed = bool(os.environ.get("OMP_NUM_THREADS", "").strip())

    def __call__(self, event) -> None:
        self.sink(event)
        now = self.clock()
        if self.fixed or now - self.checked < REBALANCE_S or threading.current_thread() is not threading.main_thread():
            return  # torch's thread count is per thread under OpenMP: only the training's own thread may set it
        self.checked = now
        threads, _ = plan_threads(None, len(others_computing(self.registry)))
        if threads != self.threads:
            _torch().set_num_threads(threads)
            self.threads = threads

    def __getattr__(self, name):  # close_sink() and friends reach the wrapped sink
        return getattr(self.sink, name)
