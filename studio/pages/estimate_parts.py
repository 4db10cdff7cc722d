"""The Train page's whole-pipeline time: the estimate before Start (timed in a short job), the time left during a
run, and what it took after it."""

from __future__ import annotations

import html
import time

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QWidget

from dynastudio.core.config import STAGES
from dynastudio.core.events import StageEnded, StageProgress, StageStarted, StepEnded
from dynastudio.core.requests import EstimateRequest
from dynastudio.core.store.estimate import (
    Estimate,
    RunClock,
    about,
    current_estimate,
    estimate_key,
    read_estimate,
    stages_to_run,
)

from ..style import HINT_CSS, fmt_seconds
from ..worker import ChildJob, start_side_job

LINK = '<a href="again">{}</a>'


class EstimateLine(QLabel):
    """One line under the Train page's buttons. Before Start: "Whole pipeline: about 7 min on this machine (timed
    12:03, 2 threads) · Re-estimate", timed by the `estimate` job in its own process when a project with stages to
    run is shown and nothing else runs (never while a run trains: it would time a busy machine), and again when the
    settings change. During a run: the time left (core.store.estimate.RunClock). After it: what it took."""

    def __init__(self, state, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("pipelineEstimate")
        self.setStyleSheet(HINT_CSS)
        self.setWordWrap(True)
        self.setTextFormat(Qt.TextFormat.RichText)
        self.linkActivated.connect(lambda _: self.reestimate())
        self.state = state
        self.until: str | None = None  # the page's "Run until" choice
        self.job: ChildJob | None = None  # the estimate job in flight
        self._job_key: str | None = None
        self._failed: tuple[str, str] | None = None  # (key, message) of the last failed estimate
        self.clock: RunClock | None = None  # while a run is followed
        self._run_predicted: float | None = None
        self._run_started: float | None = None
        self.after: str | None = None  # "took 6:40 (estimated 7:10)", until another project or run
        self._root = None  # the project the line speaks of
        self._attempted: set[str] = set()  # settings keys timed automatically once already (never in a loop)

    # ---- before a run --------------------------------------------------------------------------------
    def refresh(self, training: bool = False) -> None:
        """Say what is known now; start the timing job when it is due and allowed."""
        project = self.state.project
        root = project.root if project is not None else None
        if root != self._root:  # another project: nothing said about the last one holds
            self._root, self.after, self._failed, self._attempted = root, None, None, set()
            if self.job is not None and not training:
                self.stop_job()
        if training or self.clock is not None:
            self._show_left()
            return
        if project is None:
            self.setText("")
            return
        pending = stages_to_run(project, self.until)
        if not pending:
            self.setText(self.after or "")
            return
        est = current_estimate(project)
        if est is not None:
            self._show(est, pending)
            return
        key = estimate_key(project)
        if self.job is not None and self._job_key == key:
            self.setText("Whole pipeline: timing a few training steps on this machine for an estimate…")
            return
        if self._failed is not None and self._failed[0] == key:
            self.setText(f"Whole pipeline: no estimate ({html.escape(self._failed[1])}) · {LINK.format('Try again')}")
            return
        busy = self.state.runner.current
        if busy is not None:
            self.setText(f"Whole pipeline: the estimate waits until “{html.escape(busy.title)}” ends.")
            return
        if key in self._attempted:  # timed already, yet the settings it saw are not these: say what there is
            old = read_estimate(project)
            if old is not None and old.measured_at:
                self._show(old, pending, note=" with other settings")
            else:
                self.setText(f"Whole pipeline: no estimate · {LINK.format('Try again')}")
            return
        if not self.isVisible():
            self.setText(self.after or "")  # timed when the page is shown: a project opened for its results needs none
            return
        self.start()

    def _show(self, est: Estimate, pending: list[str], note: str = "") -> None:
        wanted = STAGES.index(self.until) + 1 if self.until in STAGES else len(STAGES)
        what = "Whole pipeline" if len(pending) == wanted else "The stages left"
        self.setText(
            (f"{html.escape(self.after)} " if self.after else "")
            + f"{what}: <b>{about(est.seconds(pending))}</b> on this machine ({html.escape(est.where())}{note}) · "
            + LINK.format("Re-estimate")
        )
        self.setToolTip(
            "Counted from the row counts and the settings, timed with a few real training steps of the model:\n"
            + "\n".join(
                f"{s.stage}: {fmt_seconds(s.seconds)}" + (" (skipped)" if s.skipped and not s.seconds else "")
                for s in est.stages
                if s.stage in pending
            )
        )

    def start(self, again: bool = False) -> None:
        project = self.state.project
        if project is None:
            return
        self.stop_job()
        self._failed = None
        self._job_key = estimate_key(project)
        self._attempted.add(self._job_key)
        self.job = handle = start_side_job("estimate", project.root, EstimateRequest(again=again), parent=self)
        handle.finished.connect(lambda result, h=handle: self._on_done(h, result))
        handle.failed.connect(lambda info, h=handle: self._on_failed(h, info))
        handle.ended.connect(lambda _kind, h=handle: self._on_ended(h))
        self.setText("Whole pipeline: timing a few training steps on this machine for an estimate…")

    def reestimate(self) -> None:
        if self.state.runner.current is not None or self.clock is not None:
            return  # the link is shown only when nothing runs; a click that races a Start does nothing
        self.start(again=True)

    def stop_job(self) -> None:
        handle, self.job = self.job, None
        if handle is not None and handle.is_running():
            handle.kill()
            handle.wait(5)

    def _on_done(self, handle: ChildJob, result) -> None:
        if handle is not self.job:
            return
        self.job = None
        self.refresh()  # settings changed while it timed: their new key was not tried yet, so they are timed now

    def _on_failed(self, handle: ChildJob, info) -> None:
        if handle is not self.job:
            return
        self.job = None
        self._failed = (self._job_key or "", info.message)
        self.refresh()

    def _on_ended(self, handle: ChildJob) -> None:
        if handle is self.job:  # stopped (a run started): forget it, the next refresh starts another
            self.job = None
        handle.deleteLater()

    # ---- during a run --------------------------------------------------------------------------------
    def run_started(self, until: str | None) -> None:
        """A run is followed: the estimate job gives way, and the clock starts from the saved estimate."""
        self.stop_job()
        project = self.state.project
        self.after = None
        # only an estimate of these settings: one of others would count other steps, which no pace corrects
        est = current_estimate(project) if project is not None else None
        pending = stages_to_run(project, until) if project is not None else []
        self.clock = RunClock(est, pending)
        self._run_predicted = est.seconds(pending) if est is not None and pending else None
        self._run_started = time.time()
        self._show_left()

    def run_began_at(self, started: float, before_followed: bool) -> None:
        """The run's own start time. A run that began before the window followed it (reopened) had done stages
        the estimate no longer counts: what it took is then said without an estimate beside it."""
        self._run_started = started
        if before_followed:
            self._run_predicted = None

    def stage_started(self, e: StageStarted) -> None:
        if self.clock is not None:
            self.clock.started(e.stage, e.total_steps, e.resumed_from_step)
            self._show_left()

    def steps(self, batch: list[StepEnded]) -> None:
        if self.clock is not None:
            for e in batch:
                self.clock.stepped(e.stage, e.step, e.total_steps, e.epoch, e.at)
            self._show_left()

    def stage_progress(self, e: StageProgress) -> None:
        if self.clock is not None:
            self.clock.progressed(e.stage, e.done, e.total)
            self._show_left()

    def stage_ended(self, e: StageEnded) -> None:
        if self.clock is not None:
            self.clock.ended(e.stage, e.seconds, e.skipped)
            self._show_left()

    def run_ended(self, outcome: str) -> None:
        """done: "This run took 6:40 (estimated 7:10)."; stopped, failed or no longer followed: back to the estimate."""
        if outcome == "done" and self._run_started is not None:
            took = time.time() - self._run_started
            said = f" (estimated {fmt_seconds(self._run_predicted)})" if self._run_predicted else ""
            self.after = f"This run took {fmt_seconds(took)}{said}."
        self.clock = None
        self.refresh()

    def _show_left(self) -> None:
        clock = self.clock
        if clock is None or clock.estimate is None:
            self.setText("Whole pipeline: no estimate for this run (it is timed when no run trains).")
            return
        left = clock.left()
        if left is None:
            self.setText("Whole pipeline: working out the time left…")
            return
        self.setText(f"Whole pipeline: <b>{about(left)} left</b>.")
        self.setToolTip(
            "The current stage at the pace of its steps so far, the stages after it as estimated, corrected by how "
            f"this run's steps compare with the estimate (×{clock.ratio():.2f})."
        )

    def shut_down(self) -> None:
        """The window closes: end the timing job, whose answer nobody will read."""
        self.stop_job()
