"""The Train page's whole-pipeline time (issue 23, "Time"): an estimate before Start, timed by the estimate job when
none fits the settings, never while a run trains; the time left during a run, done stages counting nothing; what the
run took after it."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from dynastudio.core.events import StageEnded, StageStarted, StepEnded  # noqa: E402
from dynastudio.core.store.estimate import (  # noqa: E402
    Estimate,
    StageEstimate,
    about,
    estimate_key,
    save_estimate,
)

LABELS = ["w1_d1", "w0.5_d1"]


@pytest.fixture
def project(tmp_path, tiny_model_dir, tiny_task_files):
    from dynastudio.core.prepare import new_project
    from helpers import tiny_project_config

    return new_project(tmp_path / "p", tiny_project_config(tiny_model_dir, *tiny_task_files))


def _estimate(project, **changes) -> Estimate:
    """A saved estimate for the project's present settings: finetune 10 min, width 30 steps of 2 s, depth 30 of 4."""
    stages = (
        StageEstimate("finetune", steps=100, steps_per_epoch=50, evals=3, step_seconds=5.6, eval_seconds=5.0),
        StageEstimate("rewire", steps=2, step_seconds=1.0, fixed_seconds=8.0),
        StageEstimate("width", steps=30, steps_per_epoch=30, evals=1, step_seconds=2.0, eval_seconds=10.0),
        StageEstimate("depth", steps=30, steps_per_epoch=30, evals=1, step_seconds=4.0, eval_seconds=20.0),
        StageEstimate("finetune-subnets", skipped=True),
        StageEstimate("int8-aware", skipped=True),
        StageEstimate("evaluate", evals=1, eval_seconds=30.0),
    )
    est = Estimate(estimate_key(project), stages, measured_at=1_700_000_000.0, threads=2, **changes)
    save_estimate(project, est)
    return est


@pytest.fixture
def page(qtbot, project):
    from dynastudio.studio.pages.train import TrainPage
    from dynastudio.studio.state import StudioState

    state = StudioState()
    p = TrainPage(state)
    qtbot.addWidget(p)
    p.resize(1100, 750)
    yield p
    p.estimate_line.shut_down()
    state.runner.shutdown(keep_run=True)


def _text(page) -> str:
    return re.sub(r"<[^>]+>", "", page.estimate_line.text())


def _mark_done(project, *stages) -> None:
    for stage in stages:
        if stage == "rewire":
            project.importance_path.write_bytes(b"x")  # what missing_output looks for
        if stage not in ("evaluate", "finetune-subnets", "int8-aware"):
            from dynastudio.core.config import STAGE_MODEL

            d = project.model_dir(STAGE_MODEL[stage])
            d.mkdir(parents=True, exist_ok=True)
            (d / "model.safetensors").write_bytes(b"x")
        if stage == "evaluate":
            project.results_path.write_text("{}")
        project.mark_done(stage, {"seconds": 1.0, "skipped": stage in ("finetune-subnets", "int8-aware")})


def test_before_start_the_page_says_how_long_the_whole_pipeline_takes(page, project, qtbot):
    est = _estimate(project)
    page.state.open_project(project.root)
    page.show()
    qtbot.waitExposed(page)
    text = _text(page)
    total = est.seconds(["finetune", "rewire", "width", "depth", "finetune-subnets", "int8-aware", "evaluate"])
    assert text.startswith("Whole pipeline: about ") and f"{about(total)} on this machine" in text
    assert "thread" in text and "timed " in text and text.endswith("Re-estimate")
    assert page.estimate_line.job is None  # the saved estimate fits the settings: nothing is timed again
    assert page.estimate_line.isVisible()

    # a done stage counts nothing
    _mark_done(project, "finetune")
    page.state.reload()
    text = _text(page)
    assert text.startswith("The stages left: about ") and about(total - 575) in text

    # "Run until" counts only the stages up to it
    page.until.setCurrentIndex(page.until.findData("width"))
    assert about(2 + 8 + 60 + 10) in _text(page)


def test_a_settings_change_times_again_and_re_estimate_forces_it(page, project, qtbot):
    _estimate(project)
    page.state.open_project(project.root)
    page.show()
    qtbot.waitExposed(page)
    assert page.estimate_line.job is None
    project.save_config(project.config.with_train(depth_epochs=5.0))  # changes the step counts
    page.state.reload()
    job = page.estimate_line.job
    assert job is not None and job.name == "estimate" and not job.request.again
    assert "timing" in _text(page)
    page.estimate_line.stop_job()
    page.estimate_line.start(again=True)  # what the link does
    assert page.estimate_line.job.request.again
    page.estimate_line.stop_job()


def _run_handle(page):
    from dynastudio.core import registry
    from dynastudio.core.requests import RunRequest
    from dynastudio.studio.worker import RunJob

    handle = RunJob(registry.JOBS["run"], page.state.project.root, RunRequest(), parent=page)
    handle.status = "running"
    page._on_job(handle)
    page._update_buttons()
    return handle


def test_during_a_run_the_page_says_the_time_left_done_stages_counting_nothing(page, project, qtbot):
    from dynastudio.core.requests import RunResult

    _estimate(project)
    _mark_done(project, "finetune", "rewire")  # 10 minutes of finetune done before this run
    page.state.open_project(project.root)
    page.show()
    qtbot.waitExposed(page)
    h = _run_handle(page)
    assert page.estimate_line.job is None  # never timed while a run trains
    h.bridge.stageStarted.emit(StageStarted("width", 30))
    t = 1_700_000_100.0
    steps = []
    for s in range(1, 11):
        t += 2.0  # the estimated pace
        steps.append(StepEnded("width", s, 30, {l: 0.5 for l in LABELS}, 1e-4, 0, at=t))
    h.bridge.steps.emit(steps)
    # width: 20 steps of 2 s and its evaluation; depth: 30 of 4 s and its evaluation; evaluate 30 s: 3:40
    assert _text(page) == "Whole pipeline: about 4 min left."
    # the next stage twice as slow as estimated: what is left grows with it
    h.bridge.stageEnded.emit(StageEnded("width", 52.0))
    h.bridge.stageStarted.emit(StageStarted("depth", 30))
    steps = []
    for s in range(1, 21):
        t += 8.0
        steps.append(StepEnded("depth", s, 30, {l: 0.5 for l in LABELS}, 1e-4, 0, at=t))
    h.bridge.steps.emit(steps)
    left = page.estimate_line.clock.left()
    assert 0 < left and f"{about(left)} left" in _text(page)
    assert left > 10 * 4.0 + 20.0 + 30.0  # more than the estimate says of depth's 10 last steps and evaluate
    # the run ends: what it took, beside what was estimated
    _mark_done(project, "width", "depth", "finetune-subnets", "int8-aware", "evaluate")
    page.state.reload()
    h._end("done", RunResult(("width", "depth", "finetune-subnets", "int8-aware", "evaluate")))
    text = _text(page)
    assert text.startswith("This run took ") and "(estimated 4:00)" in text  # the 4 stages this run ran


def test_without_an_estimate_a_run_says_so_and_nothing_is_timed(page, project, qtbot):
    page.state.open_project(project.root)
    h = _run_handle(page)
    page.show()
    qtbot.waitExposed(page)
    assert page.estimate_line.job is None
    assert "no estimate" in _text(page)
    h.bridge.stageStarted.emit(StageStarted("finetune", 30))
    assert "no estimate" in _text(page) and page.estimate_line.job is None
    h._end("stopped")


@pytest.mark.slow
def test_opening_a_project_times_the_machine_in_a_job_and_shows_the_estimate(page, project, qtbot):
    page.state.open_project(project.root)
    page.show()
    qtbot.waitExposed(page)
    assert page.estimate_line.job is not None and "timing" in _text(page)
    qtbot.waitUntil(lambda: page.estimate_line.job is None, timeout=120000)
    text = _text(page)
    assert text.startswith("Whole pipeline: ") and "on this machine" in text, text
    assert (project.root / "estimate.json").is_file()


def test_an_estimate_that_never_fits_is_shown_as_such_and_not_timed_in_a_loop(page, project, qtbot):
    from dataclasses import replace

    est = _estimate(project)
    save_estimate(project, replace(est, key="made elsewhere"))  # e.g. another OMP_NUM_THREADS in the job's process
    page.state.open_project(project.root)
    page.estimate_line._attempted.add(estimate_key(project))  # timed once already in this session
    page.show()
    qtbot.waitExposed(page)
    assert page.estimate_line.job is None
    text = _text(page)
    assert text.startswith("Whole pipeline: about ") and "with other settings" in text and "Re-estimate" in text
