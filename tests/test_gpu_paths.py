"""The GPU paths made right before a GPU runs them (issue 24, item 3), tested on a CPU with torch.cuda faked:
precision on pre-Ampere GPUs, the device setting, evaluation in fp32, CUDA out-of-memory, fp16 overflow, resume."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from dynastudio.core import jobs, runtime
from dynastudio.core.data.encoding import Encoded
from dynastudio.core.distill import LoopSettings, train_loop
from dynastudio.core.dynamic import SubnetSpec
from dynastudio.core.errors import ConfigError, UserError
from dynastudio.core.events import LogMessage, RunEnded, StopToken
from dynastudio.core.models import pick_device
from dynastudio.core.prepare import new_project, prepare_inputs
from dynastudio.core.project import Project
from dynastudio.core.requests import RunRequest
from helpers import tiny_model, tiny_project_config


def fake_gpus(monkeypatch, caps: list[tuple[int, int]], names: list[str] | None = None, current: int = 0):
    """torch.cuda as a machine with these GPUs (compute capabilities) would answer it; torch itself counts
    bf16 as supported on every one of them (it emulates bf16 before Ampere)."""
    names = names or [f"GPU {i}" for i in range(len(caps))]

    def index(d=None) -> int:
        if d is None:
            return current
        if isinstance(d, int):
            return d
        d = torch.device(d)
        return current if d.index is None else d.index

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(caps))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: caps[index(d)])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: names[index(d)])
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)


# ---- 1. precision auto on GPUs ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cap", "want"), [((7, 0), "fp16"), ((7, 5), "fp16"), ((6, 0), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")]
)
def test_auto_precision_is_bf16_only_where_the_gpu_computes_it_natively(monkeypatch, cap, want):
    fake_gpus(monkeypatch, [cap])  # V100 7.0, T4 7.5, P100 6.0: fp16 with the scaler; A100 8.0, H100 9.0: bf16
    assert runtime.resolve_precision("auto", torch.device("cuda", 0)) == want
    assert runtime.resolve_precision("auto", torch.device("cuda")) == want


def test_auto_precision_asks_about_the_device_it_is_given_not_the_current_one(monkeypatch):
    fake_gpus(monkeypatch, [(8, 0), (7, 0)], ["A100", "V100"], current=0)
    assert runtime.resolve_precision("auto", torch.device("cuda", 1)) == "fp16"
    assert runtime.resolve_precision("auto", torch.device("cuda", 0)) == "bf16"


def test_explicit_bf16_on_a_gpu_before_ampere_is_a_one_line_error(monkeypatch):
    fake_gpus(monkeypatch, [(7, 0)], ["Tesla V100-SXM2-16GB"])
    with pytest.raises(ConfigError, match=r"train.precision bf16: .*V100.*7\.0.*emulat") as err:
        runtime.resolve_precision("bf16", torch.device("cuda", 0))
    assert "\n" not in str(err.value)
    fake_gpus(monkeypatch, [(8, 6)])
    assert runtime.resolve_precision("bf16", torch.device("cuda", 0)) == "bf16"


# ---- 6. train.device ------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "cuda:-1", "CUDA", ""])
def test_a_device_setting_that_names_no_device_is_refused(tiny_model_dir, tiny_task_files, bad):
    with pytest.raises(ConfigError, match="train.device"):
        tiny_project_config(tiny_model_dir, *tiny_task_files, device=bad)
    for good in ("auto", "cpu", "cuda", "cuda:0", "cuda:3"):
        assert tiny_project_config(tiny_model_dir, *tiny_task_files, device=good).train.device == good


def test_a_numbered_gpu_without_cuda_gets_the_friendly_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        pick_device("cuda:1")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        runtime.init_distributed("cuda:1")  # refused before any process group is joined


def test_a_numbered_gpu_that_is_not_there_is_refused(monkeypatch):
    fake_gpus(monkeypatch, [(8, 0), (8, 0)])
    assert pick_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match="cuda:5.*2 GPU"):
        pick_device("cuda:5")


def test_under_torchrun_a_numbered_gpu_is_refused_every_rank_uses_its_local_rank(monkeypatch):
    fake_gpus(monkeypatch, [(8, 0), (8, 0)])
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ConfigError, match="LOCAL_RANK"):
        runtime.init_distributed("cuda:1")
    monkeypatch.setattr(runtime, "initialized", lambda: True)
    with pytest.raises(ConfigError, match="LOCAL_RANK"):
        pick_device("cuda:0")
    assert pick_device("cuda") == torch.device("cuda", 1)
    assert pick_device("auto") == torch.device("cuda", 1)


# ---- 4. evaluation in fp32 ------------------------------------------------------------------------
@pytest.fixture
def bf16_inputs(tiny_model_dir, tiny_task_files, tmp_path):
    project = new_project(tmp_path / "p", tiny_project_config(tiny_model_dir, *tiny_task_files, precision="bf16"))
    inputs = prepare_inputs(project)
    assert inputs.precision == "bf16"  # the training precision
    return inputs


def test_evaluation_and_the_teacher_check_run_in_fp32_whatever_the_training_precision(bf16_inputs, monkeypatch):
    from dynastudio.core import evaluate, stages

    seen = []
    real = runtime.autocast
    monkeypatch.setattr(
        runtime, "autocast", lambda device, precision: seen.append(precision) or real(device, precision)
    )
    model = tiny_model().eval()
    results = evaluate.evaluate_grid(bf16_inputs, model, "teacher", {}, lambda e: None, StopToken())
    stages._check_teacher(bf16_inputs, model, lambda e: None)
    evaluate.evaluate_specs(bf16_inputs, model, [SubnetSpec(0.5, 0.5)])
    assert seen and set(seen) == {"fp32"}
    assert results["precision"] == "fp32"


# ---- 8. CUDA out of memory ------------------------------------------------------------------------
def test_cuda_out_of_memory_is_a_one_line_error_that_says_what_to_lower(
    tiny_model_dir, tiny_task_files, tmp_path, monkeypatch
):
    from dynastudio.core import stages

    project = new_project(tmp_path / "p", tiny_project_config(tiny_model_dir, *tiny_task_files))

    def oom(*a, **k):
        raise torch.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 15.77 GiB of which "
            "1.02 GiB is free.\nIf reserved but unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF"
        )

    seen = []
    monkeypatch.setitem(stages.STAGE_JOBS, "finetune", oom)
    with pytest.raises(UserError) as err:
        jobs.run("run", project, RunRequest(until="finetune"), seen.append)
    text = str(err.value)
    assert "\n" not in text and "out of memory" in text
    for knob in ("train.batch_size (16)", "train.max_seq_length (32)", "train.eval_batch_size"):
        assert knob in text, text
    end = [e for e in seen if isinstance(e, RunEnded)][-1]
    assert end.outcome == "failed" and not end.internal


def test_cpu_memory_exhaustion_says_the_same():
    from dynastudio.core.errors import out_of_memory

    cfg = type("C", (), {"train": type("T", (), {"batch_size": 32, "eval_batch_size": 64, "max_seq_length": 128})})
    exc = RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried ...")
    err = out_of_memory(exc, cfg)
    assert err is not None and "train.batch_size (32)" in str(err)
    assert out_of_memory(ValueError("something else"), cfg) is None


def test_evaluation_runs_its_largest_batch_first_and_halves_a_batch_that_does_not_fit(monkeypatch):
    from dynastudio.core import evaluate

    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 40, 50)
    enc = Encoded([[2] + [7] * (n - 1) for n in lengths], None, [0] * 50)
    model = tiny_model().eval()
    ref = evaluate.predict(model, enc, SubnetSpec(), "keep-last", 8, 0, "cpu")
    shapes = []
    real = evaluate.forward_subnet

    def forward(m, ids, *a, **k):
        shapes.append(tuple(ids.shape))
        if ids.shape[0] * ids.shape[1] > 100:  # a budget of 100 tokens per batch
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return real(m, ids, *a, **k)

    monkeypatch.setattr(evaluate, "forward_subnet", forward)
    out = evaluate.predict(model, enc, SubnetSpec(), "keep-last", 8, 0, "cpu")
    assert shapes[0] == (8, int(lengths.max()))  # the largest batch comes first: a batch too big fails at once
    np.testing.assert_allclose(out, ref, atol=1e-5)  # halved batches give the same logits
    monkeypatch.setattr(evaluate, "forward_subnet", lambda *a, **k: (_ for _ in ()).throw(torch.OutOfMemoryError()))
    with pytest.raises(torch.OutOfMemoryError):  # not even one row fits: the job's error says what to lower
        evaluate.predict(model, enc, SubnetSpec(), "keep-last", 8, 0, "cpu")


# ---- 9. fp16 overflow -----------------------------------------------------------------------------
def test_a_run_of_skipped_fp16_steps_is_warned_about(monkeypatch):
    from dynastudio.core import distill

    monkeypatch.setattr(runtime, "make_scaler", lambda device, precision: torch.amp.GradScaler("cpu"))
    monkeypatch.setattr(distill, "OVERFLOW_WARN_STEPS", 4)
    lengths = [5 + i % 4 for i in range(48)]
    data = Encoded([[2] + [7] * (n - 1) for n in lengths], None, [i % 2 for i in range(48)])
    model = tiny_model()

    def overflowing(m, batch, ctx):  # every gradient is inf: the scaler skips every step and halves its scale
        out = m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        ctx.backward(out.loss * float("inf"))
        return {"loss": out.loss.detach()}

    seen = []
    train_loop(
        model,
        data,
        overflowing,
        LoopSettings("width", 1, 1e-4, 4, 0, checkpoint_every=10_000),
        events=seen.append,
        stop=StopToken(),
        device="cpu",
        pad_id=0,
    )
    warnings = [e for e in seen if isinstance(e, LogMessage) and e.level == "warning"]
    assert len(warnings) == 1, warnings  # once per run of skipped steps, not on every step
    assert "4 steps in a row" in warnings[0].text and "fp16" in warnings[0].text and "bf16" in warnings[0].text


# ---- 3. resume under torchrun ---------------------------------------------------------------------
def test_no_rank_looks_for_the_checkpoint_before_rank_0_has_finished_an_interrupted_swap(
    tiny_model_dir, tiny_task_files, tmp_path, monkeypatch
):
    from dynastudio.core import project as project_module

    p = new_project(tmp_path / "p", tiny_project_config(tiny_model_dir, *tiny_task_files))
    m = tiny_model()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    p.save_checkpoint("width", 3, m, opt, {"stage": "width", "total_steps": 10})
    final = p.checkpoint_dir("width")
    # a kill between the two renames of a swap: the complete new checkpoint sits beside, no checkpoint in place
    os.replace(final, final.parent / ".width.new-abc")
    assert json.loads((final.parent / ".width.new-abc" / "trainer.json").read_text())["step"] == 3

    # this process is rank 1; rank 0 recovers the swap and then reaches the barrier
    rank0 = Project.open(p.root)
    monkeypatch.setattr(project_module, "is_main_process", lambda: False)
    monkeypatch.setattr(runtime, "barrier", lambda: rank0._recover_checkpoint("width"))
    ck = Project.open(p.root).load_checkpoint("width")
    assert ck is not None and ck.step == 3
