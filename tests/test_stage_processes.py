"""`dynastudio run` runs each stage in a child process of its own, inside the run's one session (core.stageproc):
the same models as one process, stoppable and resumable, its errors kept as they are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dynastudio.core import jobs, stages
from dynastudio.core.errors import Cancelled, InternalError, UserError
from dynastudio.core.events import CheckpointSaved, EventLog, RunEnded, StageEnded, StageStarted, StepEnded
from dynastudio.core.prepare import new_project
from dynastudio.core.project import Project
from dynastudio.core.requests import RunRequest
from helpers import stopping_at, tiny_model, tiny_project_config

HERE = str(Path(__file__).resolve().parent)


def _in_children(project, events=None, stop=None, until=None):
    return jobs.run("run", project, RunRequest(until=until, stage_processes=True), events or EventLog(), stop)


def _worst(a: Project, b: Project, model: str) -> float:
    x, y = a.load_model(model).state_dict(), b.load_model(model).state_dict()
    assert x.keys() == y.keys()
    return max(float((x[k].float() - y[k].float()).abs().max()) for k in x)


def _no_child_stage_here(monkeypatch) -> list[str]:
    """The stages a run starts in children fail in this process, so a run that completes ran them elsewhere; the
    others (fine-tuning, rewiring, evaluation, and the optional stages the tiny project turns off, which only
    record their skip) run here. Returns the list of the stages that ran here, filled as they run."""
    here: list[str] = []

    def local(stage, job):
        def run(project, request, events, stop):
            here.append(stage)
            return job(project, request, events, stop)

        return run

    def boom(project, request, events, stop):
        raise AssertionError("a training stage ran in the run's own process")

    for stage, job in list(stages.STAGE_JOBS.items()):
        in_child = stage in stages.CHILD_STAGES and stage not in ("finetune-subnets", "int8-aware")
        monkeypatch.setitem(stages.STAGE_JOBS, stage, boom if in_child else local(stage, job))
    return here


@pytest.mark.slow
def test_stages_in_child_processes_train_what_one_process_trains_and_resume_after_a_stop(
    tiny_model_dir, tiny_task_files, tmp_path, monkeypatch
):
    cfg = tiny_project_config(tiny_model_dir, *tiny_task_files, checkpoint_every=2)
    ref = new_project(tmp_path / "ref", cfg)
    jobs.run("run", ref, RunRequest(until="width"), EventLog())  # one process

    project = new_project(tmp_path / "cut", cfg)
    here = _no_child_stage_here(monkeypatch)
    stop, seen, sink = stopping_at("width", 3)
    with pytest.raises(Cancelled):
        _in_children(project, sink, stop)
    # the child's events reached this process's sink and the run's events file, in order
    assert [e.stage for e in seen.of(StageStarted)] == ["finetune", "rewire", "width"]
    assert [e.stage for e in seen.of(StageEnded)] == ["finetune", "rewire"]
    assert seen.of(RunEnded)[-1].outcome == "stopped"
    steps = [e.step for e in seen.of(StepEnded) if e.stage == "width"]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 3
    saved = [e for e in seen.of(CheckpointSaved) if e.stage == "width"]
    assert saved, "the stopped stage saved where it stopped"
    reopened = Project.open(project.root)
    assert reopened.is_done("rewire") and not reopened.is_done("width")
    assert reopened.load_checkpoint("width").step == saved[-1].step
    assert (project.root / "run" / "events.jsonl").read_text().count('"StageStarted"') == 3

    out = _in_children(reopened, until="width")
    assert out.ran == ("width",)
    assert _worst(ref, reopened, "teacher") == 0.0  # the same teacher, to the bit
    assert _worst(ref, reopened, "width") < 1e-6  # and the width stage, resumed mid-stage, as uninterrupted
    # to the end: the skipped optional stages in this process, the others in children
    out = _in_children(reopened)
    assert out.ran == ("depth", "finetune-subnets", "int8-aware", "evaluate")
    assert here == ["finetune", "rewire", "finetune-subnets", "int8-aware", "evaluate"]
    assert reopened.stage_info("int8-aware")["skipped"] and len(reopened.load_results()["rows"]) == len(
        cfg.train.width_mults
    ) * len(cfg.train.depth_mults)


def test_a_stage_child_fails_with_the_users_error_or_the_bugs_traceback(
    tiny_model_dir, tiny_task_files, tmp_path, monkeypatch
):
    project = new_project(tmp_path / "p", tiny_project_config(tiny_model_dir, *tiny_task_files))
    for stage, model in (("finetune", "teacher"), ("rewire", "rewired")):  # the width stage is next: a child's
        project.save_model(model, tiny_model(seed=11))
        project.mark_done(stage, {})
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("DYNASTUDIO_JOB_MODULES", "stage_faults")

    monkeypatch.setenv("DYNASTUDIO_TEST_STAGE_FAULT", "width:user")
    with pytest.raises(UserError) as user:
        _in_children(project)
    assert str(user.value) == "train.csv, line 3: the label 'maybe' is not one of the task's labels: fix that line"

    monkeypatch.setenv("DYNASTUDIO_TEST_STAGE_FAULT", "width:bug")
    log = EventLog()
    with pytest.raises(InternalError) as bug:
        _in_children(Project.open(project.root), log)
    text = str(bug.value)
    assert "ZeroDivisionError: a bug in the stage" in text and "Traceback" in text and "stage_faults.py" in text
    assert log.of(RunEnded)[-1].outcome == "failed"
    # the run let go of the project: the next run may start, and the stage is still to do
    from dynastudio.core import runs

    assert runs.live_lock(project.root) is None
    assert not Project.open(project.root).is_done("width")
