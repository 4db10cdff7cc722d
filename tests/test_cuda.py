"""The CUDA paths: mixed precision, the GPU random state in checkpoints, evaluation under autocast, torchrun on a GPU.
Skipped on a machine without a CUDA GPU."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from dynastudio.core import jobs
from dynastudio.core.dynamic import SubnetSpec
from dynastudio.core.errors import Cancelled
from dynastudio.core.evaluate import predict
from dynastudio.core.events import StepEnded, StopToken
from dynastudio.core.prepare import new_project, prepare_inputs
from dynastudio.core.project import Project
from dynastudio.core.requests import RunRequest
from dynastudio.core.runtime import resolve_precision
from helpers import tiny_project_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_auto_precision_on_this_gpu():
    want = "bf16" if torch.cuda.get_device_capability() >= (8, 0) else "fp16"  # native bf16 only (not emulated)
    assert resolve_precision("auto", torch.device("cuda")) == want


def _stop_at(step: int, stage: str, stop: StopToken):
    def events(e):
        if isinstance(e, StepEnded) and e.stage == stage and e.step == step:
            stop.set()

    return events


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_a_stopped_gpu_run_resumes_as_an_uninterrupted_one(precision, tiny_model_dir, tiny_task_files, tmp_path):
    if precision == "bf16" and torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("no native bf16 on this GPU")
    cfg = tiny_project_config(
        tiny_model_dir,
        *tiny_task_files,
        device="cuda",
        precision=precision,
        teacher_epochs=2,
        width_epochs=3,
        checkpoint_every=1000,
    )
    base = new_project(tmp_path / "base", cfg)
    jobs.run("run", base, RunRequest(until="rewire"))
    shutil.copytree(base.root, tmp_path / "ref")
    shutil.copytree(base.root, tmp_path / "cut")
    ref = Project.open(tmp_path / "ref")
    jobs.run("run", ref, RunRequest(until="width"))
    stop = StopToken()
    with pytest.raises(Cancelled):
        jobs.run("run", Project.open(tmp_path / "cut"), RunRequest(until="width"), _stop_at(5, "width", stop), stop)
    trainer = Project.open(tmp_path / "cut").load_checkpoint("width")
    assert trainer.rng_states[0].cuda is not None  # the GPU's dropout stream is kept
    if precision == "fp16":
        assert trainer.extra["scaler"]["scale"] > 0  # and the loss scale
    jobs.run("run", Project.open(tmp_path / "cut"), RunRequest(until="width"))
    a = ref.load_model("width").state_dict()
    b = Project.open(tmp_path / "cut").load_model("width").state_dict()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-4, worst
    losses = [r["losses"] for r in ref.read_metrics() if r.get("kind") == "step" and r["stage"] == "width"]
    assert all(np.isfinite(v) for step in losses for v in step.values())


def test_evaluation_under_autocast_agrees_with_fp32(tiny_model_dir, tiny_task_files, tmp_path):
    project = new_project(tmp_path / "p", tiny_project_config(tiny_model_dir, *tiny_task_files, device="cuda"))
    jobs.run("run", project, RunRequest(until="finetune"))
    inputs = prepare_inputs(project)
    model = project.load_model("teacher", inputs.device)
    half = "bf16" if torch.cuda.get_device_capability() >= (8, 0) else "fp16"
    for spec in (SubnetSpec(), SubnetSpec(0.5, 0.5)):
        a = predict(model, inputs.dev, spec, "keep-last", 512, inputs.pad_id, inputs.device, "fp32")
        b = predict(model, inputs.dev, spec, "keep-last", 512, inputs.pad_id, inputs.device, half)
        assert (a.argmax(-1) == b.argmax(-1)).mean() >= 0.97
        assert np.abs(a - b).max() < 0.1


def test_torchrun_with_one_process_on_the_gpu(tiny_model_dir, tiny_task_files, tmp_path):
    import os
    import subprocess
    import sys

    project = new_project(tmp_path / "p", tiny_project_config(tiny_model_dir, *tiny_task_files, device="auto"))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=1",
        "-m",
        "dynastudio.core.cli",
        "run",
        str(project.root),
        "--until",
        "width",
    ]
    out = subprocess.run(
        cmd, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert Project.open(project.root).is_done("width")
