"""The Train page's parts: a row per stage (its bar and status) and the log that keeps its last line in view."""

from __future__ import annotations

import time

from PySide6.QtGui import QFont
from PySide6.QtWidgets import QGridLayout, QLabel, QPlainTextEdit, QProgressBar, QWidget

from dynastudio.core.events import StageEnded, StageProgress, StageStarted, StepEnded

from ..state import StageView
from ..style import fmt_seconds

# stages that report steps (rewire and evaluate only report their end)
STAGE_TITLES = {
    "finetune": "Fine-tune teacher",
    "rewire": "Importance + rewire",
    "width": "Width distillation",
    "depth": "Width + depth distillation",
    "finetune-subnets": "Fine-tune sub-networks",
    "int8-aware": "INT8-aware distillation",
    "evaluate": "Evaluate",
}
TRAINING_STAGES = ("finetune", "width", "depth", "finetune-subnets", "int8-aware")  # the stages with loss curves
# why a stage can be skipped, in the row beside its (empty) bar; the engine's log line gives the setting
SKIPPED_WHY = {
    "finetune": ("the model is already fine-tuned", "The model was given as fine-tuned: it is the teacher as it is."),
    "width": (
        "stage order joint: the depth stage trains every width",
        "With train.stage_order joint the depth stage distils the teacher into every width and depth at once, for "
        "the epochs of both stages; set it to paper in project.json for the paper's two stages.",
    ),
    "finetune-subnets": (
        "optional, off in this profile",
        "Fine-tuning each sub-network on its own after distillation is optional: "
        "set subnet_epochs above 0 in project.json to run it.",
    ),
    "int8-aware": (
        "optional, off in this profile",
        "Training every sub-network as its INT8 file computes, for INT8 exports that agree with fp32: "
        "set int8_epochs above 0 in project.json to run it.",
    ),
}


class StageRow:
    """A stage's name, progress bar and status text (steps, ETA, duration)."""

    def __init__(self, grid: QGridLayout, row: int, stage: str):
        self.stage = stage
        self.name = QLabel(STAGE_TITLES.get(stage, stage))
        self.bar = QProgressBar()
        self.bar.setTextVisible(True)
        self.bar.setMinimumWidth(240)
        self.status = QLabel("pending")
        self.status.setMinimumWidth(230)
        grid.addWidget(self.name, row, 0)
        grid.addWidget(self.bar, row, 1)
        grid.addWidget(self.status, row, 2)
        self.t0 = 0.0  # wall clock (the events' own `at`) and step of the first step seen, for the ETA
        self.step0 = 0

    def idle(self, view: StageView) -> None:
        """Show the stage as it stands on disk: done with its time, paused at its checkpoint's step, or pending."""
        if view.state in ("skipped", "will skip"):
            self.skipped(ahead=view.state == "will skip")
            return
        self._active()
        if view.step is not None and view.total and view.state in ("paused", "running"):
            self.bar.setRange(0, view.total)
            self.bar.setValue(view.step)
            self.bar.setFormat("%v / %m steps")
        else:
            self.bar.setRange(0, 100)
            self.bar.setValue(round(100 * (view.fraction() or 0)))
            self.bar.setFormat("%p%")
        self.status.setText(view.text())

    def _active(self) -> None:
        self.bar.setEnabled(True)
        self.status.setToolTip("")

    def skipped(self, ahead: bool = False) -> None:
        """An empty, greyed bar: a full one read as "done" (issue 23). `ahead`: before the run, the settings
        say it will be skipped."""
        why, tip = SKIPPED_WHY.get(self.stage, ("", ""))
        word = "will be skipped" if ahead else "skipped"
        self.bar.setRange(0, 100)
        self.bar.setValue(0)
        self.bar.setFormat(word)
        self.bar.setEnabled(False)
        self.status.setText(f"{word} ({why})" if why else word)
        self.status.setToolTip(tip)

    def busy(self, text: str) -> None:
        self._active()
        self.bar.setRange(0, 0)  # Qt's indeterminate bar: this stage reports no steps
        self.status.setText(text)

    def started(self, e: StageStarted) -> None:
        if e.total_steps == 0:  # a stage about to be skipped
            self.busy("running…")
            return
        self._active()
        self.bar.setRange(0, max(1, e.total_steps))
        self.bar.setValue(e.resumed_from_step)
        self.bar.setFormat("%v / %m steps")
        self.t0, self.step0 = 0.0, e.resumed_from_step
        self.status.setText(f"resumed at step {e.resumed_from_step}" if e.resumed_from_step else "running")

    def stepped(self, e: StepEnded) -> None:
        if self.bar.maximum() != e.total_steps:
            self.bar.setRange(0, e.total_steps)
            self.bar.setFormat("%v / %m steps")
        self.bar.setValue(e.step)
        if not self.t0 or e.step <= self.step0:  # the first step seen (also after reattaching): the ETA's origin
            self.t0, self.step0 = e.at, e.step
            return
        done = e.step - self.step0
        if done > 0:
            per = (e.at - self.t0) / done  # the steps' own times: right even when a backlog arrives at once
            loss = sum(e.losses.values()) / max(1, len(e.losses))
            self.status.setText(f"{fmt_seconds(per * (e.total_steps - e.step))} left · mean loss {loss:.3f}")

    def progressed(self, e: StageProgress) -> None:
        """A stage without optimizer steps (rewire batches, evaluated sub-networks)."""
        self.bar.setRange(0, max(1, e.total))
        self.bar.setValue(e.done)
        self.bar.setFormat("%p%")
        self.status.setText(f"{e.done} / {e.total}")

    def ended(self, e: StageEnded) -> None:
        if e.skipped:
            self.skipped()
            return
        self.bar.setRange(0, 100)
        self.bar.setValue(100)
        self.bar.setFormat("%p%")
        self.status.setText(f"done in {fmt_seconds(e.seconds)}")


class RunLog(QPlainTextEdit):
    """The run's log: one stamped line per event. It keeps its last line in view as lines arrive (also while
    hidden behind another page, and when the log gets shorter as the page's layout changes), unless the user
    scrolled up to read: then it stays where they are until they scroll back to the bottom."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setReadOnly(True)
        self.setMaximumBlockCount(5000)
        self.setFont(QFont("monospace", 9))
        self.setPlaceholderText("Stage starts and ends, evaluations, checkpoints and messages appear here.")
        self.follows = True
        self._adding = False  # the scrollbar moves while a line is added (the oldest line dropped): not the user
        bar = self.verticalScrollBar()
        bar.valueChanged.connect(self._scrolled)
        bar.rangeChanged.connect(self._range_changed)

    def add(self, text: str, at: float | None = None, untimed: bool = False) -> None:
        """A line stamped with `at` (the event's own time) or now; `untimed`: no stamp (a replayed event that
        carries no time: the time it arrived would be false)."""
        if at is not None:
            stamp = time.strftime("%H:%M:%S", time.localtime(at))
        else:
            stamp = " " * 8 if untimed else time.strftime("%H:%M:%S")
        self._adding = True
        try:
            self.appendPlainText(f"{stamp}  {text}")
        finally:
            self._adding = False
        if self.follows:
            self.verticalScrollBar().setValue(self.verticalScrollBar().maximum())

    def _scrolled(self, value: int) -> None:
        if not self._adding:
            self.follows = value >= self.verticalScrollBar().maximum()

    def _range_changed(self, _lo: int, hi: int) -> None:
        if self.follows:
            self.verticalScrollBar().setValue(hi)
