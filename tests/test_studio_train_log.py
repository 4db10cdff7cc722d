"""The Train page's log and curves (issue 23): a log that follows new lines, a skipped stage that looks skipped,
honest times for replayed events, a human first line, and curves one can filter by width or depth."""

from __future__ import annotations

import math
import os
import re
import socket
import sys
import time

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QPointF  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from dynastudio.core.events import (  # noqa: E402
    CheckpointSaved,
    EvalEnded,
    LogMessage,
    RunStarted,
    StageEnded,
    StageStarted,
    StepEnded,
    event_to_json,
)

LABELS = [f"w{w:g}_d{d:g}" for d in (1.0, 0.75, 0.5) for w in (1.0, 0.75, 0.5, 0.25)]
STAMP = re.compile(r"^\d\d:\d\d:\d\d  ")


@pytest.fixture
def page(qtbot):
    from dynastudio.studio.pages.train import TrainPage
    from dynastudio.studio.state import StudioState

    state = StudioState()
    p = TrainPage(state)
    qtbot.addWidget(p)
    p.resize(1100, 750)
    yield p
    state.runner.shutdown(keep_run=True)


def _lines(page) -> list[str]:
    return page.log.toPlainText().splitlines()


def _at_bottom(page) -> bool:
    sb = page.log.verticalScrollBar()
    return sb.maximum() > 0 and sb.value() == sb.maximum()


# ---- bug 5: the log follows new lines ------------------------------------------------------------
def test_log_follows_new_lines_unless_the_user_scrolled_up(page, qtbot):
    # lines that arrive while the page is not on screen (the user watches another page)
    for i in range(80):
        page._log(f"line {i}: a message long enough to wrap in the narrow log beside the charts, twice over")
    page.show()
    qtbot.waitExposed(page)
    QApplication.processEvents()
    assert _at_bottom(page)

    # the log gets shorter when the run ends (the summary and banner above it change): the last line stays in view
    page._on_log(LogMessage("stopped: the project is saved; Resume continues from the last checkpoint"))
    page.resize(1100, 500)
    QApplication.processEvents()
    assert _at_bottom(page)

    # the user scrolled up to read: new lines leave the view where it is
    sb = page.log.verticalScrollBar()
    sb.setValue(sb.maximum() // 2)
    held = sb.value()
    for i in range(20):
        page._log(f"later line {i}")
    assert sb.value() == held and sb.maximum() > held
    # back at the bottom, it follows again
    sb.setValue(sb.maximum())
    for i in range(20):
        page._log(f"last line {i}")
    assert _at_bottom(page)

    # a long run, followed from another page: past the log's 5,000 lines the oldest go, and the log still follows
    page.hide()
    for i in range(5100):
        page._log(f"step line {i} " + "x" * (i % 90))
    page.show()
    QApplication.processEvents()
    assert page.log.blockCount() == 5000 and page.log.follows and _at_bottom(page)


# ---- bug 6: a skipped stage looks skipped, and is said once ---------------------------------------
def test_a_skipped_stage_shows_an_empty_bar_and_is_logged_once(page):
    from dynastudio.studio.state import StageView

    page._on_stage_started(StageStarted("finetune-subnets", 0))
    page._on_log(LogMessage("finetune-subnets: skipped (subnet_epochs is 0)"))  # what core/stages.py says
    page._on_stage_ended(StageEnded("finetune-subnets", 0.01, skipped=True))
    row = page.rows["finetune-subnets"]
    assert row.bar.value() == row.bar.minimum() and not row.bar.isEnabled()  # empty and greyed, not a full bar
    assert row.status.text().startswith("skipped (") and "profile" in row.status.text()
    assert sum(line.count("skipped") for line in _lines(page)) == 1

    # a teacher given as already fine-tuned: no engine line says "skipped", the page says it once itself
    page._on_stage_started(StageStarted("finetune", 0))
    page._on_log(LogMessage("model is already fine-tuned: using it as the teacher as-is"))
    page._on_stage_ended(StageEnded("finetune", 3.0, skipped=True))
    assert sum("finetune:" in line and "skipped" in line for line in _lines(page)) == 1

    # as reopened from state.json
    row.idle(StageView("skipped", 0, 0, 0.01))
    assert row.bar.value() == row.bar.minimum() and row.status.text().startswith("skipped (")
    row.idle(StageView("done", 10, 10, 5.0))  # another project where it ran
    assert row.bar.isEnabled() and row.bar.value() == row.bar.maximum()


# ---- bug 7: replayed events keep their own time; the first line is for people ---------------------
def test_a_reattached_log_does_not_stamp_old_events_with_the_reopening_time(page, qtbot, tmp_path):
    from dynastudio.core import runs

    started = time.time() - 2 * 3600  # the run began two hours before the window was reopened
    events = [
        # the run's pid is this test's: alive, so the studio keeps following it
        RunStarted("r1", "run", os.getpid(), socket.gethostname(), started),
        StageStarted("width", 40),
        CheckpointSaved("width", 20, "ckpt"),
        LogMessage("an old message"),
    ]
    path = runs.events_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("".join(event_to_json(e) + "\n" for e in events))
    handle = page.state.runner.attach(tmp_path)
    assert handle is not None
    qtbot.waitUntil(lambda: any("an old message" in line for line in _lines(page)), timeout=5000)
    with open(path, "a") as f:
        f.write(event_to_json(LogMessage("a new message")) + "\n")
    qtbot.waitUntil(lambda: any("a new message" in line for line in _lines(page)), timeout=5000)
    lines = _lines(page)

    then = time.strftime("%H:%M:%S", time.localtime(started))
    line = next(line for line in lines if "process" in line and "training" in line)
    assert line.startswith(then)  # RunStarted carries its own time
    for old in ("checkpoint at step 20", "an old message", "width: started"):
        line = next(line for line in lines if old in line)
        assert not STAMP.match(line), line  # no time recorded: none shown, rather than the reopening's
    line = next(line for line in lines if "a new message" in line)
    assert STAMP.match(line) and not line.startswith(then)  # live again: stamped as it arrives
    page.state.runner.detach()


def test_the_first_log_line_is_for_people_and_the_command_goes_to_the_run_log(page, tmp_path):
    from dynastudio.core import registry
    from dynastudio.core.requests import RunRequest
    from dynastudio.studio.worker import RunJob, _spawn_detached

    handle = RunJob(registry.JOBS["run"], tmp_path, RunRequest(until="evaluate"), parent=page)
    handle.command = handle.command_line()
    handle.log_path = tmp_path / "run.log"
    page.handle = handle
    page._on_job_started()
    text = page.log.toPlainText()
    assert "--launch-id" not in text and "dynastudio.core.cli" not in text and "--nice" not in text
    assert "training" in text.lower()

    proc = _spawn_detached([sys.executable, "-c", "print('hello from the run')"], tmp_path, handle.log_path)
    proc.wait(timeout=30)
    first, *rest = handle.log_path.read_text().splitlines()
    assert sys.executable in first and "print" in first  # the exact command, for whoever reads the log file
    assert rest == ["hello from the run"]


# ---- charts: one width or one depth at a time; points clear of the border and the chance label ----
def _feed(page, evals: list[dict[str, float]], total: int = 120) -> None:
    page._on_stage_started(StageStarted("width", total))
    page._on_steps(
        [
            StepEnded("width", s, total, {l: 0.6 * math.exp(-s / 40) + 0.01 * i for i, l in enumerate(LABELS)}, 1e-4, 0)
            for s in range(1, total + 1)
        ]
    )
    for k, results in enumerate(evals):
        page._on_eval(EvalEnded("width", k * total // max(1, len(evals) - 1), "accuracy", results, chance=0.5))


def test_the_curves_can_show_one_width_or_one_depth(page):
    page.show()
    _feed(page, [{l: 0.8 for l in LABELS}, {l: 0.9 for l in LABELS}])
    assert page.loss_plot.shown == sorted(page.loss_plot.shown, key=LABELS.index) and len(page.loss_plot.shown) == 12
    combo = page.curve_show
    names = [combo.itemText(i) for i in range(combo.count())]
    assert names[0].lower().startswith("all") and "width 0.5" in names and "depth 0.75" in names

    combo.setCurrentIndex(names.index("width 0.5"))
    want = ["w0.5_d1", "w0.5_d0.75", "w0.5_d0.5"]
    assert page.loss_plot.shown == want and page.eval_plot.shown == want and page.legend.labels == want
    hidden = page.loss_plot.items["w1_d1"]
    assert hidden.scene() is None  # the other curves are off the plot, not just off the legend

    combo.setCurrentIndex(names.index("depth 0.75"))
    assert page.loss_plot.shown == ["w1_d0.75", "w0.75_d0.75", "w0.5_d0.75", "w0.25_d0.75"]
    # new steps keep the filter
    page._on_steps([StepEnded("width", 121, 130, {l: 0.1 for l in LABELS}, 1e-4, 0)])
    assert len(page.loss_plot.shown) == 4

    combo.setCurrentIndex(0)
    assert len(page.loss_plot.shown) == 12


def _scene_points(cp) -> list[QPointF]:
    """The markers and the lines between them (sampled finely), in scene pixels."""
    import numpy as np

    vb = cp.plot.getViewBox()
    pts = []
    for label in cp.shown:
        xs, ys = cp.items[label].xData, cp.items[label].yData
        fine = np.linspace(xs[0], xs[-1], 400)
        pts += [vb.mapViewToScene(QPointF(x, y)) for x, y in zip([*xs, *fine], [*ys, *np.interp(fine, xs, ys)])]
    return pts


def test_dev_points_at_1_sit_clear_of_the_border_and_the_chance_label_of_the_points(page):
    page.show()
    page.resize(1100, 750)
    QApplication.processEvents()
    # the first evaluation at chance level on the left, where the label used to be; most end at 1.000
    first = {l: 0.5 + 0.004 * i for i, l in enumerate(LABELS)}
    last = {l: 1.0 if i < 7 else 0.98 + 0.002 * i for i, l in enumerate(LABELS)}
    _feed(page, [first, {l: 0.9 for l in LABELS}, last])
    QApplication.processEvents()
    ep = page.eval_plot
    vb = ep.plot.getViewBox()
    (_, _), (y0, y1) = vb.viewRange()
    top_gap_px = vb.height() * (y1 - 1.0) / (y1 - y0)
    assert 5 <= top_gap_px <= 12  # a marker at 1.000 is whole and clear of the frame, by a few pixels
    levels = ep.plot.getAxis("left").tickValues(y0, y1, vb.height())
    assert max(levels[0][1]) <= 1.0 and max(levels[1][1]) <= 1.0  # the labelled ticks stop at 1

    assert ep.chance_line.isVisible()
    box = ep.chance_line.label.sceneBoundingRect()
    assert not any(box.contains(p) for p in _scene_points(ep))


def test_the_chance_label_keeps_clear_of_the_placeholder(page):
    page.show()
    page.chance = 0.5
    page._on_stage_started(StageStarted("width", 40))  # a stage without evaluations yet
    QApplication.processEvents()
    ep = page.eval_plot
    assert ep.placeholder.isVisible()
    if ep.chance_line.isVisible():
        assert not ep.chance_line.label.sceneBoundingRect().intersects(ep.placeholder.sceneBoundingRect())


def test_the_chance_note_below_the_curves_has_a_strip_of_its_own(page):
    page.show()
    QApplication.processEvents()
    # the demo's easy case: every sub-network between 0.96 and 1.000, chance at 0.5 far below
    _feed(
        page,
        [
            {l: 0.97 - 0.001 * i for i, l in enumerate(LABELS)},
            {l: 1.0 if i < 7 else 0.985 for i, l in enumerate(LABELS)},
        ],
    )
    QApplication.processEvents()
    ep = page.eval_plot
    assert ep.chance_note.textItem.toPlainText().startswith("▼ chance")
    box = ep.chance_note.sceneBoundingRect()
    assert not any(box.contains(p) for p in _scene_points(ep))


def test_a_stage_the_settings_skip_says_so_before_the_run(page):
    """Before Start, "Fine-tune sub-networks" read "pending" though subnet_epochs 0 skips it (seen in a real
    window on the demo): the row says it will be skipped, greyed, and why."""
    from types import SimpleNamespace

    from dynastudio.core.config import TrainConfig
    from dynastudio.studio.state import StageView

    class Unrun:
        def __init__(self, **train):
            self.config = SimpleNamespace(train=TrainConfig(**train), model_is_finetuned=False)

        def stage_info(self, stage):
            return {}

        def checkpoint_progress(self, stage):
            return None

    state = page.state
    state.project = Unrun(subnet_epochs=0.0)
    assert state.stage_view("finetune-subnets") == StageView("will skip")
    assert state.stage_view("width") == StageView("pending")
    row = page.rows["finetune-subnets"]
    row.idle(state.stage_view("finetune-subnets"))
    assert row.status.text().startswith("will be skipped (") and not row.bar.isEnabled()
    state.project = Unrun(subnet_epochs=1.0)
    assert state.stage_view("finetune-subnets") == StageView("pending")
    row.idle(state.stage_view("finetune-subnets"))
    assert row.status.text() == "pending" and row.bar.isEnabled()
    state.project = Unrun(stage_order="joint")  # the depth stage trains every width itself
    assert state.stage_view("width") == StageView("will skip")
