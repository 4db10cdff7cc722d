"""Runs registered core jobs one at a time on a QThread; each job gets a handle with its own signals (napari/Orange style)."""
from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

from dynastudio.core import jobs
from dynastudio.core.errors import Cancelled
from dynastudio.core.events import StopToken

from .bridge import Bridge
from .errors import ErrorInfo


_THREADS: "weakref.WeakSet[QThread]" = weakref.WeakSet()  # every job thread made, for the tests' leak check


def running_job_threads() -> list[QThread]:
    return [t for t in list(_THREADS) if t.isRunning()]


class JobBusy(RuntimeError):
    """start() was called while another job runs and the caller did not say to replace it (a bug in a page)."""


class JobHandle(QObject):
    """One job: its events (through its own bridge, on the GUI thread), its outcome, and a way to stop it.

    Outcome signals fire once, after the job's thread has ended and its last events were delivered.
    """

    started = Signal()
    finished = Signal(object)  # the job's result
    failed = Signal(object)  # ErrorInfo
    cancelled = Signal()
    ended = Signal(str)  # "done", "failed" or "stopped", after the specific signal

    def __init__(self, job: jobs.Job, project: Path, request: Any, parent: QObject | None = None):
        super().__init__(parent)
        self.job, self.name, self.title = job, job.name, job.title
        self.project_root = Path(project)
        self.request = request if request is not None else job.request_type()
        self.bridge = Bridge(parent=self)
        self.stop_token = StopToken()
        self.status = "queued"  # -> running -> done | failed | stopped

    @property
    def trains(self) -> bool:
        return self.job.trains

    def is_running(self) -> bool:
        return self.status in ("queued", "running")

    def stop(self) -> None:
        """Ask the job to stop at its next check (a training checkpoints first); returns at once."""
        self.stop_token.set()


class _Worker(QObject):
    """Lives on the job's thread; reports how the job ended, never raises."""

    done = Signal(object)
    failed = Signal(object)
    stopped = Signal()

    def __init__(self, handle: JobHandle):
        super().__init__()
        self.name, self.root, self.request = handle.name, handle.project_root, handle.request
        self.sink, self.stop = handle.bridge.sink, handle.stop_token

    @Slot()
    def run(self) -> None:
        try:
            # the job opens its own Project from the folder: the GUI's copy is only ever read
            result = jobs.run(self.name, self.root, self.request, self.sink, self.stop)
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
    """One job at a time. Starting a job while another runs is refused unless the caller says `replace=True`
    (after asking the user): then the running job is stopped and the new one starts once it has ended."""

    jobStarted = Signal(object)  # JobHandle
    jobEnded = Signal(object)  # JobHandle, after its outcome signal
    busyChanged = Signal(bool)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.current: JobHandle | None = None
        self._thread: QThread | None = None
        self._worker: _Worker | None = None
        self._outcome: tuple[str, Any] | None = None
        self._pending: JobHandle | None = None
        self._all_threads: list[QThread] = []

    # ---- public --------------------------------------------------------------------------------
    def is_running(self) -> bool:
        return self._thread is not None

    def start(self, name: str, project: Path | str, request: Any = None, replace: bool = False) -> JobHandle:
        job = jobs.JOBS[name]
        handle = JobHandle(job, Path(project), request, parent=self)
        if self.is_running():
            if not replace:
                raise JobBusy(f"'{self.current.name}' is running; ask the user, then start with replace=True")
            if self._pending is not None:
                self._pending.status = "stopped"
                self._pending.cancelled.emit()
                self._pending.ended.emit("stopped")
            self._pending = handle
            self.stop()
            return handle
        self._launch(handle)
        return handle

    def stop(self) -> None:
        if self.current is not None:
            self.current.stop()

    def cancel_all(self) -> None:
        """Stop the running job and forget a queued one (closing the window)."""
        self._pending = None
        self.stop()

    def shutdown(self, timeout_ms: int = 120_000) -> bool:
        """Stop and block until the thread ended (app quit); True when nothing is left running."""
        self.cancel_all()
        if self._thread is not None and not self._thread.wait(timeout_ms):
            return False
        if self._thread is not None:
            self._on_thread_finished()
        return True

    def any_thread_running(self) -> bool:
        return any(t.isRunning() for t in self._all_threads)

    # ---- internals -----------------------------------------------------------------------------
    def _launch(self, handle: JobHandle) -> None:
        self.current = handle
        self._outcome = None
        thread = QThread()
        thread.setObjectName(f"dynastudio-{handle.name}")
        worker = _Worker(handle)
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        worker.done.connect(self._on_done)
        worker.failed.connect(self._on_failed)
        worker.stopped.connect(self._on_stopped)
        # the worker ends the thread itself; `finished` then reaches us queued, after the outcome
        thread.finished.connect(self._on_thread_finished)
        self._thread, self._worker = thread, worker
        self._all_threads = [t for t in self._all_threads if t.isRunning()] + [thread]
        _THREADS.add(thread)
        handle.status = "running"
        thread.start()
        handle.started.emit()
        self.jobStarted.emit(handle)
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
        thread, handle = self._thread, self.current
        if thread is None:
            return
        thread.wait()
        self._thread = self._worker = None
        handle.bridge.flush()
        kind, value = self._outcome or ("failed", ErrorInfo("the job ended without reporting a result", "", False))
        self._outcome = None
        self.current = None
        handle.status = kind
        if kind == "done":
            handle.finished.emit(value)
        elif kind == "stopped":
            handle.cancelled.emit()
        else:
            handle.failed.emit(value)
        handle.ended.emit(kind)
        self.jobEnded.emit(handle)
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._launch(pending)
        else:
            self.busyChanged.emit(False)
