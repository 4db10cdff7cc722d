"""End-to-end engine: a tiny project through every stage, losses going down, cancel then resume."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from conftest import tiny_project_config
from dynastudio.core.data import encode, iterate_batches
from dynastudio.core.distill import LoopSettings, distill_step, get_lr, soft_cross_entropy, task_step, train_loop
from dynastudio.core.dynamic import SubnetSpec, subnet_grid
from dynastudio.core.errors import Cancelled, ProjectError
from dynastudio.core.events import EventLog, StepEnded, StopToken, CheckpointSaved, ImportanceReady, StageEnded
from dynastudio.core.pipeline import new_project, open_workspace, run_pipeline
from dynastudio.core.project import Project


def test_get_lr_warmup_and_decay():
    assert get_lr(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert get_lr(9, 100, 1.0, 10) == pytest.approx(1.0)
    assert get_lr(10, 100, 1.0, 10) == pytest.approx(1.0)
    assert get_lr(55, 100, 1.0, 10) == pytest.approx(0.5)
    assert get_lr(100, 100, 1.0, 0) == 0.0


def test_soft_cross_entropy_is_minimal_at_the_teacher():
    t = torch.tensor([[2.0, -1.0, 0.5]])
    at_teacher = soft_cross_entropy(t, t)
    assert at_teacher < soft_cross_entropy(torch.zeros_like(t), t)
    assert at_teacher < soft_cross_entropy(t.flip(-1), t)


def _mean(losses, first=True, k=4):
    part = losses[:k] if first else losses[-k:]
    return sum(part) / len(part)


@pytest.fixture(scope="module")
def done_project(tmp_path_factory, tiny_model_dir, tiny_task_files):
    root = tmp_path_factory.mktemp("proj") / "tiny"
    project = new_project(root, tiny_project_config(tiny_model_dir, *tiny_task_files))
    log = EventLog()
    run_pipeline(project, log)
    return project, log


def test_full_pipeline_produces_every_artefact(done_project):
    project, log = done_project
    for stage in ("finetune", "rewire", "width", "depth", "finetune-subnets", "evaluate"):
        assert project.is_done(stage), stage
    for name in ("teacher", "rewired", "width", "depth"):
        assert (project.model_dir(name) / "model.safetensors").is_file()
    assert not any(project.root.rglob("*.pt")) and not any(project.root.rglob("*.bin"))
    res = project.load_results()
    assert len(res["rows"]) == 12
    assert {(r["width_mult"], r["depth_mult"]) for r in res["rows"]} == {(w, d) for w in (1.0, 0.75, 0.5, 0.25) for d in (1.0, 0.75, 0.5)}
    assert all(0.0 <= r["value"] <= 1.0 for r in res["rows"])
    full = next(r for r in res["rows"] if r["label"] == "w1_d1")
    small = next(r for r in res["rows"] if r["label"] == "w0.25_d0.5")
    assert full["flops_rel"] == 1.0 and small["flops_rel"] < 0.2 and small["total_params"] < full["total_params"]
    # the teacher learned the task (a word-presence task: far above the 50% chance level)
    assert project.stage_info("finetune")["dev"]["score"] > 0.8
    assert len(log.of(ImportanceReady)) == 1
    imp = project.load_importance()
    assert imp["head"].shape == (4, 4) and torch.all(imp["head_rewired"][:, :-1] >= imp["head_rewired"][:, 1:])
    metrics = project.read_metrics()
    assert any(m["kind"] == "eval" for m in metrics) and any(m["kind"] == "step" for m in metrics)
    # every step reports one loss per sub-network of its stage
    width_steps = [e for e in log.of(StepEnded) if e.stage == "width"]
    depth_steps = [e for e in log.of(StepEnded) if e.stage == "depth"]
    assert set(width_steps[0].losses) == {"w1_d1", "w0.75_d1", "w0.5_d1", "w0.25_d1"}
    assert len(depth_steps[0].losses) == 12


def test_both_stages_lower_their_loss(tiny_model_dir, tiny_task_files, tmp_path):
    """Distil a fine-tuned teacher for a few epochs: the per-sub-network losses fall in both stages."""
    project = new_project(tmp_path / "p", tiny_project_config(tiny_model_dir, *tiny_task_files, width_epochs=4, depth_epochs=4))
    run_pipeline(project, until="rewire")
    ws = open_workspace(project)
    for stage, teacher_name, specs, l2 in (
        ("width", "rewired", [SubnetSpec(w, 1.0) for w in (1.0, 0.75, 0.5, 0.25)], 0.1),
        ("depth", "rewired", subnet_grid((1.0, 0.5, 0.25), (1.0, 0.5)), 1.0),
    ):
        teacher = project.load_model(teacher_name)
        student = project.load_model(teacher_name)
        # start the student away from the teacher so there is something to distil
        with torch.no_grad():
            for p in student.parameters():
                p.add_(0.05 * torch.randn_like(p))
        log = EventLog()
        step = lambda m, b: distill_step(m, teacher, b, specs, l1=1.0, l2=l2, depth_rule="keep-last", is_regression=False)
        train_loop(student, ws.train, step, LoopSettings(stage, 4, 5e-4, 16, 0), events=log, stop=StopToken(), device="cpu", pad_id=0)
        for label in log.of(StepEnded)[0].losses:
            series = [e.losses[label] for e in log.of(StepEnded)]
            assert _mean(series, first=False) < 0.85 * _mean(series, first=True), (stage, label, series[:4], series[-4:])


def test_cancel_then_resume_matches_an_uninterrupted_run(tiny_model_dir, tiny_task_files, tmp_path):
    cfg = tiny_project_config(tiny_model_dir, *tiny_task_files, checkpoint_every=100)
    ref = new_project(tmp_path / "ref", cfg)
    run_pipeline(ref, until="width")

    project = new_project(tmp_path / "cut", cfg)
    stop = StopToken()
    seen = EventLog()

    def sink(event):
        seen(event)
        if isinstance(event, StepEnded) and event.stage == "width" and event.step == 5:
            stop.set()

    with pytest.raises(Cancelled):
        run_pipeline(project, sink, stop)
    assert project.is_done("rewire") and not project.is_done("width")
    saved = seen.of(CheckpointSaved)
    assert saved and saved[-1].stage == "width" and saved[-1].step == 5
    reopened = Project.open(project.root)
    assert reopened.load_checkpoint("width").step == 5

    out = run_pipeline(reopened, EventLog(), until="width")
    assert out["ran"] == ["width"]
    assert not reopened.checkpoint_dir("width").exists()
    a = ref.load_model("width").state_dict()
    b = reopened.load_model("width").state_dict()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-6, worst
    # the rest of the pipeline completes from there
    run_pipeline(reopened)
    assert len(reopened.load_results()["rows"]) == 12


def test_corrupted_model_file_is_a_clear_error(done_project, tmp_path):
    import shutil

    project, _ = done_project
    copy = tmp_path / "copy"
    shutil.copytree(project.root, copy)
    (copy / "models" / "width" / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ProjectError, match="model.safetensors"):
        Project.open(copy).load_model("width")


def test_core_imports_without_qt():
    code = "import sys, core.pipeline, core.cli, core.distill; print(any(m.startswith(('PySide6', 'pyqtgraph')) for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_already_finetuned_model_skips_finetune(tiny_model_dir, tiny_task_files, tmp_path):
    from dataclasses import replace

    cfg = replace(tiny_project_config(tiny_model_dir, *tiny_task_files), model_is_finetuned=True)
    project = new_project(tmp_path / "ft", cfg)
    log = EventLog()
    run_pipeline(project, log, until="rewire")
    info = project.stage_info("finetune")
    assert info["skipped"] is True and "dev" in info
    assert [e.skipped for e in log.of(StageEnded)] == [True, False]
    # the teacher is the given model, unchanged
    from transformers import AutoModelForSequenceClassification

    given = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir)).state_dict()
    saved = project.load_model("teacher").state_dict()
    assert all(torch.equal(given[k], saved[k]) for k in given)


def test_glue_task_from_local_folder(tmp_path):
    from pathlib import Path

    from dynastudio.core.config import DataConfig, ProjectConfig, profile_config

    glue = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
    if not (glue / "SST-2").is_dir():
        pytest.skip("../shared/data/glue not present")
    cfg = ProjectConfig(model="builtin:minilm", data=DataConfig(kind="glue", task="sst2", data_dir=str(glue)), train=profile_config("quick"))
    project = new_project(tmp_path / "sst2", cfg)
    task = json.loads((project.root / "task.json").read_text())
    assert task["train_rows"] == 67349 and task["dev_rows"] == 872 and task["metric"] == "accuracy"
