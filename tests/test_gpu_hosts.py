"""The GPU paths made right before a GPU runs them (issue 24, item 3), the host side: stopping a multi-node run
now, the Train page's GPU count, and the host syncs of the training loop; on a CPU, with the GPU facts faked."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch

from dynastudio.core import runs, runtime
from dynastudio.core.data import batching as D
from dynastudio.core.data.encoding import Encoded
from dynastudio.core.distill import LoopSettings, StepContext, distill_step, train_loop
from dynastudio.core.dynamic import SubnetSpec, subnet_grid
from dynastudio.core.events import RunStarted, StopToken
from helpers import tiny_model


def encoded(lengths, seed=0) -> Encoded:
    rng = np.random.default_rng(seed)
    ids = [[2] + [5 + i % 20] * (n - 1) for i, n in enumerate(lengths)]
    return Encoded(ids, [[0] * n for n in lengths], [int(x) for x in rng.integers(0, 2, len(lengths))])


# ---- 2. stop --now kills only this host's processes -------------------------------------------------
def _live_run(root, pids, hosts, launcher=None):
    (root / "project.json").write_text("{}")
    run_id = "r1"
    runs.acquire_lock(root, "run", run_id)
    here = socket.gethostname()
    started = RunStarted(run_id, "run", os.getpid(), here, 0.0, "", None, launcher, pids, len(pids), hosts)
    runs.EventFileWriter(runs.events_path(root), started).close()
    return started


def test_stop_now_kills_only_the_ranks_on_this_host(tmp_path, monkeypatch, cli):
    here = socket.gethostname()
    # rank 1 runs on another node: its pid here may name an unrelated process
    _live_run(tmp_path, (os.getpid(), 4242, 4343), (here, "node-2", here), launcher=4141)
    killed = []
    monkeypatch.setattr(runs, "kill_hard", lambda pids: killed.extend(pids) or list(pids))
    out = cli("stop", tmp_path, "--now")
    assert out.returncode == 0, out.stderr
    assert sorted(killed) == sorted([os.getpid(), 4343, 4141])


def test_local_pids_of_a_run(tmp_path):
    here = socket.gethostname()
    s = RunStarted("r", "run", 10, here, 0.0, "", None, 9, (10, 11, 12, 13), 4, (here, here, "b", "b"))
    assert runs.local_pids(s) == [10, 11, 9]
    # an events file of an engine before hosts were recorded: every rank ran where rank 0 did
    old = RunStarted("r", "run", 10, here, 0.0, "", None, None, (10, 11), 2)
    assert runs.local_pids(old) == [10, 11]
    assert runs.local_pids(RunStarted("r", "run", 10, "elsewhere", 0.0, "", None, 9, (10,), 1, ("elsewhere",))) == []


def test_the_studio_second_stop_kills_only_this_hosts_ranks(qtbot, tmp_path, monkeypatch):
    from dynastudio.core import registry
    from dynastudio.studio import worker

    here = socket.gethostname()
    job = worker.RunJob(registry.JOBS["run"], tmp_path, None)
    job.status = "running"
    job.run = RunStarted("r", "run", 10, here, 0.0, "", None, 9, (10, 11, 12), 3, (here, "b", here))
    killed = []
    monkeypatch.setattr(runs, "kill_hard", lambda pids: killed.extend(pids) or list(pids))
    monkeypatch.setattr(job, "poll", lambda: None)
    job.kill()
    assert sorted(killed) == [9, 10, 12]


# ---- 7. the Train page's GPU count ------------------------------------------------------------------
def _driver(monkeypatch, worker, entries):
    real = os.listdir

    def listdir(path="."):
        if str(path).startswith("/proc/driver/nvidia"):
            if entries is None:
                raise FileNotFoundError(path)
            return list(entries)
        return real(path)

    monkeypatch.setattr(worker.os, "listdir", listdir)


def test_a_cpu_only_torch_build_counts_no_gpu(monkeypatch, tmp_path):
    from dynastudio.studio import gpus as worker

    _driver(monkeypatch, worker, ["0000:01:00.0", "0000:02:00.0"])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(worker, "_torch_has_cuda", lambda: False)
    assert worker.gpu_count() == 0
    monkeypatch.setattr(worker, "_torch_has_cuda", lambda: True)
    assert worker.gpu_count() == 2
    # how the build is told without importing torch: torch/version.py's `cuda`
    cpu = tmp_path / "cpu.py"
    cpu.write_text("__version__ = '2.13.0+cpu'\ncuda: Optional[str] = None\n")
    gpu = tmp_path / "gpu.py"
    gpu.write_text("__version__ = '2.13.0'\ncuda: Optional[str] = '12.8'\n")
    monkeypatch.undo()
    assert worker._torch_has_cuda(cpu) is False and worker._torch_has_cuda(gpu) is True


@pytest.mark.parametrize(
    ("visible", "want"),
    [
        (None, 2),
        ("", 0),
        ("-1", 0),
        ("1", 1),
        ("1,0", 2),
        ("0,-1,1", 1),  # CUDA stops at the first invalid entry
        ("0,5,1", 1),
        ("5", 0),
        ("GPU-bbbb", 1),  # a UUID (or its prefix)
        ("GPU-aaaa1111,GPU-bbbb2222", 2),
        ("GPU-zzzz", 0),
        ("MIG-1234abcd", 1),  # a MIG instance
    ],
)
def test_cuda_visible_devices_is_read_as_cuda_reads_it(visible, want):
    from dynastudio.studio import gpus as worker

    assert worker.visible_gpus(["GPU-aaaa1111", "GPU-bbbb2222"], [], visible) == want


def test_mig_instances_count_as_one_process(monkeypatch):
    from dynastudio.studio import gpus as worker

    assert worker.visible_gpus(["GPU-aaaa"], ["MIG-1", "MIG-2"], None) == 1


def test_wsl2_has_no_proc_driver_entries_and_asks_nvidia_smi(monkeypatch):
    from dynastudio.studio import gpus as worker

    _driver(monkeypatch, worker, None)
    monkeypatch.setattr(worker, "_torch_has_cuda", lambda: True)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    listing = "GPU 0: NVIDIA GeForce RTX 3080 (UUID: GPU-11111111-2222)\nGPU 1: NVIDIA GeForce RTX 3090 (UUID: GPU-3333-4444)\n"
    monkeypatch.setattr(worker, "_nvidia_smi_list", lambda: listing)
    assert worker.gpu_count() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-3333")
    assert worker.gpu_count() == 1
    monkeypatch.setattr(worker, "_nvidia_smi_list", lambda: None)  # no driver at all
    assert worker.gpu_count() == 0


def test_a_project_on_the_cpu_or_one_named_gpu_trains_in_one_process():
    from dynastudio.studio import gpus as worker

    assert worker.run_processes("auto", 4) == 4 and worker.run_processes("cuda", 2) == 2
    assert worker.run_processes("cpu", 4) == 1 and worker.run_processes("cuda:1", 4) == 1


# ---- 5. host syncs in the hot loop ------------------------------------------------------------------
def test_batches_carry_their_padding_flag_and_token_count():
    enc = encoded([5, 5, 5, 5, 3, 7, 7, 2])
    same, mixed = list(D.iterate_batches(enc, 4, shuffle=False))
    assert same["padded"] is False and mixed["padded"] is True
    assert same["n_tokens"] == 20 and mixed["n_tokens"] == 19
    assert isinstance(same["n_tokens"], int)
    pinned = next(D.iterate_batches(enc, 4, shuffle=False, world=2, rank=1))
    assert pinned["n_tokens"] == int(pinned["attention_mask"].sum())


def _count(monkeypatch, cls, name, counter):
    real = getattr(cls, name)

    def counted(self, *a, **k):
        counter[name] = counter.get(name, 0) + 1
        return real(self, *a, **k)

    monkeypatch.setattr(cls, name, counted)


def test_a_step_asks_the_device_nothing_about_padding_or_token_counts(monkeypatch):
    enc = encoded([9, 4, 6, 9, 9, 9, 9, 9])
    batches = list(D.iterate_batches(enc, 4, shuffle=False, world=2, rank=0))
    student, teacher = tiny_model(seed=1).train(), tiny_model(seed=2).eval()
    specs = subnet_grid((1.0, 0.5), (1.0, 0.5))
    kw = dict(l1=1.0, l2=1.0, depth_rule="keep-last", is_regression=False)
    ref = [distill_step(student, teacher, {k: v for k, v in b.items() if k != "padded"}, specs, **kw) for b in batches]
    calls: dict[str, int] = {}
    for name in ("all", "__bool__", "item", "tolist"):
        _count(monkeypatch, torch.Tensor, name, calls)
    torch.manual_seed(0)
    ctx = StepContext.plain(student)
    got = [distill_step(student, teacher, b, specs, ctx=ctx, **kw) for b in batches]
    monkeypatch.undo()
    assert calls == {}, calls
    torch.manual_seed(0)
    again = [
        distill_step(student, teacher, {k: v for k, v in b.items() if k != "padded"}, specs, **kw) for b in batches
    ]
    for a, b in zip(got, again):  # the flag changes nothing in the math
        assert {k: float(v) for k, v in a.items()} == {k: float(v) for k, v in b.items()}
    assert ref  # the first pass only warmed up


@pytest.mark.filterwarnings("ignore:`broadcast_buffers` is deprecated:FutureWarning")
def test_one_collective_per_step_under_torchrun(monkeypatch, tmp_path):
    import torch.distributed as dist

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        reduces = []
        real = dist.all_reduce
        monkeypatch.setattr(dist, "all_reduce", lambda t, *a, **k: reduces.append(t.numel()) or real(t, *a, **k))
        agreed = []  # any_process: a collective, then a wait for the device (.item()) each time
        real_any = runtime.any_process
        monkeypatch.setattr(runtime, "any_process", lambda flag: agreed.append(flag) or real_any(flag))
        enc = encoded([4 + i % 5 for i in range(40)])
        model = tiny_model()

        def step(m, batch, ctx):
            return distill_step(
                m, m, batch, [SubnetSpec()], l1=1.0, l2=0.0, depth_rule="keep-last", is_regression=False, ctx=ctx
            )

        seen = []
        info = train_loop(
            model,
            enc,
            step,
            LoopSettings("width", 1, 1e-4, 4, 0, checkpoint_every=10_000),
            events=seen.append,
            stop=StopToken(),
            device="cpu",
            pad_id=0,
        )
        monkeypatch.undo()
        assert runtime.world() == 1 and info["steps"] == 10
        assert len(reduces) <= info["steps"] + 1, reduces  # one per step (and one before the first)
        assert len(agreed) <= 1, agreed  # the stop check before the first step; after that the flags ride along
    finally:
        dist.destroy_process_group()
