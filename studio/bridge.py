"""Core events -> Qt signals on the GUI thread, batched so a fast job cannot flood the event loop."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from PySide6.QtCore import QObject, Qt, QTimer, Signal, Slot

from dynastudio.core.events import (
    CheckpointSaved,
    EvalEnded,
    ExportDone,
    ImportanceReady,
    LatencyMeasured,
    LogMessage,
    RunStarted,
    StageEnded,
    StageProgress,
    StageStarted,
    StepEnded,
    StopAcknowledged,
    TeacherChecked,
)


@dataclass(frozen=True)
class _Replay:
    """A mark in the queue: the events after it were (on) or were not (off) written before the studio followed."""

    on: bool


class Bridge(QObject):
    """`sink(event)` may be called from any thread; signals fire on the GUI thread at most every `interval_ms`.

    Between two flushes the latest StepEnded is what the progress bars need (`progress`), but the
    curves need every point, so all StepEnded of a flush also go out together as one list (`steps`).
    Rare events (stage start/end, evaluations, logs...) are never dropped and keep their order
    relative to the step batches, so a curve never gets a point of a stage before that stage began.
    """

    stageStarted = Signal(object)  # StageStarted
    stageEnded = Signal(object)  # StageEnded
    stageProgress = Signal(object)  # StageProgress
    steps = Signal(object)  # list[StepEnded], every step since the last flush, in order
    progress = Signal(object)  # StepEnded, the latest only
    evalEnded = Signal(object)  # EvalEnded
    importanceReady = Signal(object)  # ImportanceReady
    checkpointSaved = Signal(object)  # CheckpointSaved
    exportDone = Signal(object)  # ExportDone
    log = Signal(object)  # LogMessage
    latencyMeasured = Signal(object)  # LatencyMeasured
    runStarted = Signal(object)  # RunStarted: the process that trains, and how it was started
    stopAcknowledged = Signal(object)  # StopAcknowledged
    teacherChecked = Signal(object)  # TeacherChecked
    replayChanged = Signal(bool)  # True: the events that follow were written before the studio followed the run

    _wake = Signal()

    def __init__(self, interval_ms: int = 80, parent: QObject | None = None):
        super().__init__(parent)
        self._lock = threading.Lock()
        self._queue: list = []
        self._scheduled = False
        self._timer = QTimer(self)
        self._timer.setObjectName("bridgeFlushTimer")
        self._timer.setSingleShot(True)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.flush)
        # queued even when sink() runs on the GUI thread: the flush always happens a tick later
        self._wake.connect(self._start_timer, Qt.ConnectionType.QueuedConnection)
        self.events_received = 0  # for tests and the benchmark
        self.flushes = 0
        # while True, the signals carry a backlog (a reattached run's events so far): the views must not
        # stamp them with the time they arrive
        self.replaying = False

    def sink(self, event) -> None:
        """Thread-safe: queue the event and make sure one flush is scheduled."""
        with self._lock:
            self._queue.append(event)
            self.events_received += 1
            if self._scheduled:
                return
            self._scheduled = True
        self._wake.emit()

    __call__ = sink

    def replay(self, on: bool) -> None:
        """Mark the events sunk from now on as a backlog (on) or live again (off); the mark keeps their order."""
        with self._lock:
            self._queue.append(_Replay(on))
            if self._scheduled:
                return
            self._scheduled = True
        self._wake.emit()

    @Slot()
    def _start_timer(self) -> None:
        if not self._timer.isActive():
            self._timer.start()

    @Slot()
    def flush(self) -> None:
        """Emit everything queued so far (also called by the job runner before it reports a job's end)."""
        self._timer.stop()
        with self._lock:
            events, self._queue = self._queue, []
            self._scheduled = False
        if not events:
            return
        self.flushes += 1
        batch: list[StepEnded] = []
        for event in events:
            if isinstance(event, StepEnded):
                batch.append(event)
                continue
            if batch:
                self._emit_steps(batch)
                batch = []
            if isinstance(event, _Replay):
                if event.on != self.replaying:
                    self.replaying = event.on
                    self.replayChanged.emit(event.on)
                continue
            self._emit_one(event)
        if batch:
            self._emit_steps(batch)

    def _emit_steps(self, batch: list[StepEnded]) -> None:
        self.steps.emit(batch)
        self.progress.emit(batch[-1])

    def _emit_one(self, event) -> None:
        for kind, signal in (
            (StageStarted, self.stageStarted),
            (StageEnded, self.stageEnded),
            (StageProgress, self.stageProgress),
            (EvalEnded, self.evalEnded),
            (ImportanceReady, self.importanceReady),
            (CheckpointSaved, self.checkpointSaved),
            (ExportDone, self.exportDone),
            (LogMessage, self.log),
            (LatencyMeasured, self.latencyMeasured),
            (RunStarted, self.runStarted),
            (StopAcknowledged, self.stopAcknowledged),
            (TeacherChecked, self.teacherChecked),
        ):
            if isinstance(event, kind):
                signal.emit(event)
                return
        raise TypeError(f"the bridge has no signal for {type(event).__name__}: add one")
