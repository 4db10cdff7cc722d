"""Thread counts and the OpenMP wait policy (core/threads.py): usable cores, OMP_NUM_THREADS, fair shares, and the
environment every job process starts with."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from dynastudio.core import threads


@pytest.fixture(autouse=True)
def _private(tmp_path, monkeypatch):
    """A registry of our own, no OMP_* from the developer's shell, and torch's thread count put back after."""
    monkeypatch.setattr(threads, "REGISTRY", tmp_path / "registry")
    for var in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME"):
        monkeypatch.setenv(var, "x")  # so teardown restores the original value, or its absence
        monkeypatch.delenv(var)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _machine(monkeypatch, tmp_path, cores: int, files: dict[str, str], cgroup_paths=None) -> Path:
    """A fake affinity of `cores` CPUs and a fake /sys/fs/cgroup holding `files` (relative path -> text)."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr(threads, "_cgroup_paths", lambda: cgroup_paths or {"": "/", "cpu": "/"})
    root = tmp_path / "cgroup"
    root.mkdir()
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    monkeypatch.setattr(threads, "CGROUP_ROOT", root)
    return root


def test_usable_cores_is_the_affinity_without_a_quota(monkeypatch, tmp_path):
    _machine(monkeypatch, tmp_path, 6, {"cgroup.controllers": "cpu", "cpu.max": "max 100000"})
    assert threads.usable_cores() == 6


def test_a_cgroup_v2_quota_caps_the_affinity_rounded_up(monkeypatch, tmp_path):
    _machine(monkeypatch, tmp_path, 8, {"cgroup.controllers": "cpu", "cpu.max": "150000 100000"})
    assert threads.cgroup_cpu_limit() == 1.5
    assert threads.usable_cores() == 2


def test_a_cgroup_v2_quota_on_a_parent_of_the_process_cgroup_counts(monkeypatch, tmp_path):
    files = {"cgroup.controllers": "cpu", "jobs/cpu.max": "100000 100000", "jobs/mine/cpu.max": "max 100000"}
    _machine(monkeypatch, tmp_path, 4, files, cgroup_paths={"": "/jobs/mine"})
    assert threads.usable_cores() == 1


def test_a_cgroup_v1_quota_caps_the_affinity(monkeypatch, tmp_path):
    files = {"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}
    _machine(monkeypatch, tmp_path, 16, files)
    assert threads.usable_cores() == 3


def test_a_cgroup_v1_without_a_quota_leaves_the_affinity(monkeypatch, tmp_path):
    _machine(monkeypatch, tmp_path, 16, {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"})
    assert threads.usable_cores() == 16


def test_affinity_beats_the_core_count_and_its_absence_falls_back_to_it(monkeypatch, tmp_path):
    _machine(monkeypatch, tmp_path, 3, {})
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert threads.usable_cores() == 3
    monkeypatch.delattr(os, "sched_getaffinity")  # macOS, Windows
    assert threads.usable_cores() == 64


def test_configure_threads_sets_torchs_thread_count_to_the_usable_cores(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda root=None: 1)
    torch.set_num_threads(2)
    n, why = threads.configure_threads("test")
    assert n == 1 and torch.get_num_threads() == 1
    assert "1 usable cores" in why
    assert os.environ["GOMP_SPINCOUNT"] == "10000"  # for the children this process starts


def test_configure_threads_takes_a_share_when_asked(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda root=None: 4)
    assert threads.configure_threads("test", share=0.5)[0] == 2
    assert torch.get_num_threads() == 2


def test_omp_num_threads_set_by_the_user_wins(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda root=None: 2)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.configure_threads("test", share=1.0) == (1, "OMP_NUM_THREADS")
    assert torch.get_num_threads() == 1
    assert threads.plan_threads(env={"OMP_NUM_THREADS": "3"}) == (3, "OMP_NUM_THREADS")


def test_a_users_own_wait_policy_wins():
    # OMP_WAIT_POLICY implies libgomp's spin count: adding ours would override the user's choice
    env = threads.child_env({"OMP_WAIT_POLICY": "ACTIVE", "PATH": "/bin"})
    assert env == {"OMP_WAIT_POLICY": "ACTIVE", "PATH": "/bin"}
    env = threads.child_env({"GOMP_SPINCOUNT": "INFINITY", "PATH": "/bin"})
    assert env == {"GOMP_SPINCOUNT": "INFINITY", "KMP_BLOCKTIME": "1", "PATH": "/bin"}
    assert threads.child_env({}) == {"GOMP_SPINCOUNT": "10000", "KMP_BLOCKTIME": "1"}


def test_no_process_of_ours_waits_passively_by_default():
    """OMP_WAIT_POLICY=PASSIVE made stage steps on SST-2's batches about 20 % slower alone (bench/step_parts.py)."""
    assert "OMP_WAIT_POLICY" not in threads.child_env({})


def _live_pid() -> int:
    return os.getppid()  # pytest's parent: alive as long as we are, and not us


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_job_started_beside_a_running_one_takes_its_share_and_says_so(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda root=None: 2)
    threads.REGISTRY.mkdir()
    (threads.REGISTRY / f"{_live_pid()}.run").touch()
    stale = threads.REGISTRY / f"{_dead_pid()}.export"
    stale.touch()
    n, why = threads.configure_threads("latency")
    assert n == 1 and torch.get_num_threads() == 1
    assert not stale.exists()  # a process that ended no longer counts
    assert (threads.REGISTRY / f"{os.getpid()}.latency").exists()
    line = threads.sharing_line(n, why)
    assert line is not None and f"run (pid {_live_pid()})" in line and "1 thread(s)" in line
    threads.unregister()
    assert not (threads.REGISTRY / f"{os.getpid()}.latency").exists()


def test_alone_there_is_nothing_to_say(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda root=None: 2)
    n, why = threads.configure_threads("export")
    assert n == 2 and threads.sharing_line(n, why) is None


def test_a_running_training_gives_up_its_share_and_takes_it_back(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda root=None: 2)
    now = [0.0]
    seen = []
    torch.set_num_threads(2)
    rb = threads.Rebalancer(seen.append, 2, clock=lambda: now[0])
    threads.REGISTRY.mkdir()
    other = threads.REGISTRY / f"{_live_pid()}.export"
    other.touch()
    rb("step 1")
    assert torch.get_num_threads() == 2  # not before REBALANCE_S: a stat of a folder per step is all it costs
    now[0] = threads.REBALANCE_S + 1
    rb("step 2")
    assert torch.get_num_threads() == 1
    other.unlink()
    now[0] = 2 * threads.REBALANCE_S + 2
    rb("step 3")
    assert torch.get_num_threads() == 2
    assert seen == ["step 1", "step 2", "step 3"]  # the wrapped sink gets every event


# ---- the environment of the processes the studio and the CLI start ------------------------------------------
def test_the_studios_run_is_started_with_the_wait_policy(monkeypatch, tmp_path):
    from dynastudio.studio import worker

    got = {}

    class FakePopen:
        def __init__(self, command, **kwargs):
            got.update(kwargs)
            self.pid = 1

    monkeypatch.setattr(worker.subprocess, "Popen", FakePopen)
    worker._spawn_detached(["dynastudio", "run", "x"], tmp_path, tmp_path / "run.log")
    assert got["env"]["GOMP_SPINCOUNT"] == "10000" and got["env"]["KMP_BLOCKTIME"] == "1"
    assert got["env"]["PATH"] == os.environ["PATH"]  # the studio's own environment goes with it


def test_the_studios_short_jobs_start_with_the_wait_policy(qapp, tmp_path):
    from dynastudio.core import registry
    from dynastudio.studio import worker

    handle = worker.ChildJob(registry.JOBS["latency"], tmp_path, None)
    env = handle.process.processEnvironment()
    assert env.value("GOMP_SPINCOUNT") == "10000" and env.value("KMP_BLOCKTIME") == "1"
    assert env.value("PATH") == os.environ["PATH"]
    handle.deleteLater()


_PROBE = textwrap.dedent(
    """
    import importlib.abc, os, sys
    seen = {}

    class Probe(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" and "torch" not in seen:
                seen["torch"] = os.environ.get("GOMP_SPINCOUNT")
            return None

    sys.meta_path.insert(0, Probe())
    os.environ.pop("GOMP_SPINCOUNT", None)
    MODULE_MAIN
    print("policy when torch loaded:", seen.get("torch"))
    """
)


@pytest.mark.slow  # a fresh interpreter that loads torch, per entry point
@pytest.mark.parametrize(
    "call",
    [
        # any command: main() sets the policy before the command runs (here one that only imports torch)
        "import dynastudio.core.cli.results as r; r.cmd_importance = lambda a: __import__('torch') and 0; "
        "from dynastudio.core.cli import main; main(['importance', sys.argv[1]])",
        "from dynastudio.core.cli import main; "
        "main(['export', sys.argv[1], '--width', '1', '--depth', '1', '--format', 'onnx', '--out', sys.argv[1]])",
        "sys.argv = ['child', 'latency', sys.argv[1]]; from dynastudio.core.child import main; main()",
    ],
    ids=["cli-main", "cli-export", "child-latency"],
)
def test_the_wait_policy_is_in_place_before_torch_loads(tmp_path, call):
    """OpenMP reads its spin count once, when torch loads it: the entry points set it before anything imports torch."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE.replace("MODULE_MAIN", call), str(tmp_path / "no-project")],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")},
    )
    out = proc.stdout + proc.stderr  # the child turns its stdout into stderr for everything but its events
    assert "policy when torch loaded: 10000" in out, out[-3000:]


def _ort_options(monkeypatch, **kw):
    import onnxruntime as ort

    from dynastudio.core.export.runners import ort_session

    seen = {}
    monkeypatch.setattr(ort, "InferenceSession", lambda path, so, **rest: seen.setdefault("so", so))
    ort_session(Path("model.onnx"), **kw)
    so = seen["so"]
    try:
        spinning = so.get_session_config_entry("session.intra_op.allow_spinning")
    except RuntimeError:  # not set: onnxruntime's default, spinning
        spinning = ""
    return so.intra_op_num_threads, spinning


def test_an_onnxruntime_session_beside_a_training_takes_its_share_and_does_not_spin(monkeypatch, tmp_path):
    _machine(monkeypatch, tmp_path, 4, {})
    assert _ort_options(monkeypatch) == (4, "")  # alone: every usable core, onnxruntime's own spinning default
    threads.REGISTRY.mkdir(parents=True)
    (threads.REGISTRY / f"{os.getppid()}.run").touch()  # a live process of ours computing beside it
    assert _ort_options(monkeypatch) == (2, "0")  # was os.cpu_count() threads, spinning
    # a latency measurement names its threads and keeps the spinning a deployed app has
    assert _ort_options(monkeypatch, threads=1) == (1, "")
