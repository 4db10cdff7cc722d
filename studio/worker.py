"""Runs one core job at a time on a QThread with the bridge as its event sink and a StopToken (napari/Orange style)."""
from __future__ import annotations

from typing import Any, Callable

from PySide6.QtCore import QObject, QThread, Signal, Slot

from dynastudio.core.errors import Cancelled
from dynastudio.core.events import StopToken

from .bridge import Bridge
from .errors import ErrorInfo

# a job is any `fn(events, stop) -> result`; pages wrap core jobs in small closures
JobFn = Callable[[Callable, StopToken], Any]


class Worker(QObject):
    """Lives on the job's thread; reports how the job ended, never raises."""

    done = Signal(object)
    failed = Signal(object)  # ErrorInfo
    stopped = Signal()

    def __init__(self, name: str, fn: JobFn, events: Callable, stop: StopToken):
        super().__init__()
        self.name, self.fn, self.events, self.stop = name, fn, events, stop

    @Slot()
    def run(self) -> None:
        try:
            result = self.fn(self.events, self.stop)
        except Cancelled:
            self.stopped.emit()
        except BaseException as exc:  # the thread must end and report whatever happened
            self.failed.emit(ErrorInfo.from_exception(exc))
        else:
            self.done.emit(result)
        finally:
            # end this thread's event loop from inside it: a quit() queued to the QThread object would
            # wait for the GUI thread, which may itself be blocked in shutdown()'s wait()
            QThread.currentThread().quit()


class JobRunner(QObject):
    """Starts jobs on a QThread; starting a new job stops the running one first (the new one waits for it).

    The outcome signals fire on the GUI thread only after the thread has really ended and the bridge
    has delivered the job's last events, so a slot on `finished` sees every curve point and no
    thread left behind.
    """

    started = Signal(str)  # job name
    finished = Signal(str, object)  # job name, result
    errored = Signal(str, object)  # job name, ErrorInfo
    cancelled = Signal(str)  # job name
    busyChanged = Signal(bool)

    def __init__(self, bridge: Bridge, parent: QObject | None = None):
        super().__init__(parent)
        self.bridge = bridge
        self.name: str | None = None
        self._thread: QThread | None = None
        self._worker: Worker | None = None
        self._stop: StopToken | None = None
        self._outcome: tuple[str, Any] | None = None
        self._pending: tuple[str, JobFn] | None = None
        self.threads_started = 0  # for tests: every thread we ever made must be finished at the end
        self._all_threads: list[QThread] = []
        self.last_thread: QThread | None = None

    # ---- public --------------------------------------------------------------------------------
    def is_running(self) -> bool:
        return self._thread is not None

    def start(self, name: str, fn: JobFn) -> None:
        if self.is_running():
            self._pending = (name, fn)
            self.stop()
            return
        self._launch(name, fn)

    def stop(self) -> None:
        """Ask the running job to stop at its next check (it checkpoints first); returns at once."""
        if self._stop is not None:
            self._stop.set()

    def cancel_all(self) -> None:
        """Stop the running job and forget a queued one (closing the window)."""
        self._pending = None
        self.stop()

    def shutdown(self, timeout_ms: int = 120_000) -> bool:
        """Stop and block until the thread ended (app quit); True when nothing is left running."""
        self._pending = None
        self.stop()
        if self._thread is not None and not self._thread.wait(timeout_ms):
            return False
        if self._thread is not None:
            self._on_thread_finished()
        return True

    def any_thread_running(self) -> bool:
        return any(t.isRunning() for t in self._all_threads)

    # ---- internals -----------------------------------------------------------------------------
    def _launch(self, name: str, fn: JobFn) -> None:
        self.name = name
        self._stop = StopToken()
        self._outcome = None
        thread = QThread()
        thread.setObjectName(f"dynastudio-{name}")
        worker = Worker(name, fn, self.bridge.sink, self._stop)
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        worker.done.connect(self._on_done)
        worker.failed.connect(self._on_failed)
        worker.stopped.connect(self._on_stopped)
        # the worker ends the thread itself; `finished` then reaches us queued, after the outcome
        thread.finished.connect(self._on_thread_finished)
        self._thread, self._worker = thread, worker
        self._all_threads = [t for t in self._all_threads if t.isRunning()] + [thread]
        self.threads_started += 1
        thread.start()
        self.started.emit(name)
        self.busyChanged.emit(True)

    @Slot(object)
    def _on_done(self, result) -> None:
        self._outcome = ("done", result)

    @Slot(object)
    def _on_failed(self, info) -> None:
        self._outcome = ("failed", info)

    @Slot()
    def _on_stopped(self) -> None:
        self._outcome = ("stopped", None)

    @Slot()
    def _on_thread_finished(self) -> None:
        thread, worker, name = self._thread, self._worker, self.name
        if thread is None:
            return
        thread.wait()
        self._thread = self._worker = None
        self._stop = None
        self.bridge.flush()
        kind, value = self._outcome or ("failed", ErrorInfo("the job ended without reporting a result", "", False))
        self._outcome = None
        # no deleteLater: the worker's thread has no event loop any more; dropping the Python
        # references frees both, and keeping `last_thread` lets tests check it really ended
        self.last_thread = thread
        self.name = None
        if kind == "done":
            self.finished.emit(name, value)
        elif kind == "stopped":
            self.cancelled.emit(name)
        else:
            self.errored.emit(name, value)
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._launch(*pending)
        else:
            self.busyChanged.emit(False)
