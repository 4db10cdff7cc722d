"""Every job runs in a child process; the studio follows its JSON-lines events and never computes.

Two kinds of child:
- the training run: `dynastudio run DIR` (or torchrun with N processes), started detached in its own
  session so it outlives the window. The studio follows it through the project's run/events.jsonl, the
  only channel, so it can also attach to a run it did not start (reopened window, a terminal's run).
- short jobs (create, export, latency): `python -m dynastudio.core.child JOB DIR`, a QProcess whose
  stdout carries the events; they end with the window. The runner runs one job at a time; a short job that
  writes nothing (the new-project form reading a large file) runs beside it (start_side_job).
Either way the GUI thread only parses a few JSON lines per repaint: no engine import, no GIL contention.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

from dynastudio.core import registry, runs, threads
from dynastudio.core.errors import InternalError
from dynastudio.core.events import JobEnded, RunEnded, RunStarted, StopAcknowledged, event_from_json
from dynastudio.core.requests import ExportReport, RunResult, request_to_json

from .bridge import Bridge
from .errors import ErrorInfo

POLL_MS = 100  # how often a followed run's events file is read
STOP_ANSWER_S = 20.0  # a run that has not acknowledged a stop request by then is ended hard
SHORT_JOB_STOP_S = 10.0
RUN_NICENESS = 10  # the studio's training runs at a lower CPU priority than the studio itself


_SPAWNED: list = []  # every job process this studio started (Popen or QProcess), for the tests' leak check


def running_job_processes() -> list[int]:
    """Pids of the job processes this studio started that still run (a run kept in the background included)."""
    alive, still = [], []
    for p in _SPAWNED:
        if isinstance(p, subprocess.Popen):
            running, pid = p.poll() is None, p.pid  # poll() also reaps a finished one
        else:
            try:
                running, pid = p.state() != QProcess.ProcessState.NotRunning, int(p.processId())
            except RuntimeError:  # its C++ object went with its handle, which ends the process with it
                continue
        if running:
            alive.append(pid)
            still.append(p)
    _SPAWNED[:] = still
    return alive


class JobBusy(RuntimeError):
    """start() was called while another job runs and the caller did not say to replace it (a bug in a page)."""


def child_python() -> str:
    """The interpreter the children run on: the studio's own (its venv has the engine)."""
    return sys.executable


def child_environment() -> dict[str, str]:
    """Every job process's environment: the studio's, plus OpenMP's short spin (core/threads.py: two
    trainings, or a training and an export, no longer spin against each other on shared cores)."""
    return threads.child_env()


class JobHandle(QObject):
    """One job in a child process: its events (through its own bridge, on the GUI thread), its outcome, Stop.

    Outcome signals fire once, after the job's last events were delivered."""

    started = Signal()
    finished = Signal(object)  # the job's result
    failed = Signal(object)  # ErrorInfo
    cancelled = Signal()
    ended = Signal(str)  # "done", "failed", "stopped" or "detached", after the specific signal

    def __init__(self, job: registry.Job, project: Path, request: Any, parent: QObject | None = None):
        super().__init__(parent)
        self.job, self.name, self.title = job, job.name, job.title
        self.project_root = Path(project)
        self.request = request if request is not None else job.request_type()
        self.bridge = Bridge(parent=self)
        self.status = "queued"  # -> running -> done | failed | stopped | detached
        self.stop_requested = False

    @property
    def trains(self) -> bool:
        return self.job.trains

    def is_running(self) -> bool:
        return self.status in ("queued", "running")

    def stop(self) -> None:
        """First call: ask the job to stop at its next step (a training checkpoints first). Second call: end it now."""

    def kill(self) -> None:
        """End the job's processes now."""

    def wait(self, timeout_s: float) -> bool:
        """Block (polling, not the event loop) until the job ended; True when it did."""
        deadline = time.monotonic() + timeout_s
        while self.is_running() and time.monotonic() < deadline:
            self._poll_blocking()
            time.sleep(0.05)
        return not self.is_running()

    def _poll_blocking(self) -> None:
        pass

    def _end(self, kind: str, value: Any = None) -> None:
        if not self.is_running():
            return
        self.bridge.flush()
        self.status = kind
        if kind == "done":
            self.finished.emit(value)
        elif kind == "stopped":
            self.cancelled.emit()
        elif kind == "failed":
            self.failed.emit(value)
        self.ended.emit(kind)


def _error_info(message: str, internal: bool, detail: str = "") -> ErrorInfo:
    if internal:
        return ErrorInfo(
            f"an unexpected error happened ({message[:200]}). The details show where; please report it.", detail, False
        )
    return ErrorInfo(message, detail, True)


def _result(name: str, value):
    if name == "export" and isinstance(value, dict):
        return ExportReport(**value)
    if name == "create" and isinstance(value, dict):
        return Path(value["root"])
    if name == "table-summary" and isinstance(value, dict):
        # as table_summary returns it in-process: the label counts keyed by label again, the label names a tuple
        if "counts" in value:
            value = {**value, "counts": dict(value["counts"])}
        if value.get("names") is not None:
            value = {**value, "names": tuple(value["names"])}
        return value
    if isinstance(value, dict) and set(value) == {"ran"}:
        return RunResult(tuple(value["ran"]))
    return value


class ChildJob(JobHandle):
    """A short job: `python -m dynastudio.core.child JOB DIR`, request on stdin, events on stdout."""

    def __init__(self, job, project, request, parent=None):
        super().__init__(job, project, request, parent)
        self.process = QProcess(self)
        self.process.setProgram(child_python())
        self.process.setArguments(["-m", "dynastudio.core.child", job.name, str(self.project_root)])
        env = QProcessEnvironment()
        for key, value in child_environment().items():
            env.insert(key, value)
        self.process.setProcessEnvironment(env)
        self.process.readyReadStandardOutput.connect(self._read_stdout)
        self.process.readyReadStandardError.connect(self._read_stderr)
        self.process.finished.connect(self._on_exit)
        self.process.errorOccurred.connect(self._on_error)
        self._out = b""
        self._err: list[str] = []
        self._outcome: JobEnded | None = None
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self.kill)

    def launch(self) -> None:
        self.status = "running"
        self.process.start()
        _SPAWNED.append(self.process)
        self.process.write((request_to_json(self.request) + "\n").encode("utf-8"))
        self.started.emit()

    def stop(self) -> None:
        if not self.is_running():
            return
        if self.stop_requested:
            self.kill()
            return
        self.stop_requested = True
        if self.process.state() != QProcess.ProcessState.NotRunning:
            self.process.write(b"stop\n")  # buffered while the process is still starting
        self._kill_timer.start(int(SHORT_JOB_STOP_S * 1000))

    def kill(self) -> None:
        self.stop_requested = True  # it ends as stopped, not as a crash
        if self.process.state() != QProcess.ProcessState.NotRunning:
            self.process.kill()

    def _poll_blocking(self) -> None:
        self.process.waitForFinished(50)

    def _read_stdout(self) -> None:
        data = self._out + bytes(self.process.readAllStandardOutput())
        *lines, self._out = data.split(b"\n")
        for raw in lines:
            event = event_from_json(raw.decode("utf-8", errors="replace"))
            if isinstance(event, JobEnded):
                self._outcome = event
            elif event is not None and not isinstance(event, RunEnded):  # the JobEnded after it says how it ended
                self.bridge.sink(event)

    def _read_stderr(self) -> None:
        text = bytes(self.process.readAllStandardError()).decode("utf-8", errors="replace")
        self._err = (self._err + text.splitlines())[-200:]

    def _on_error(self, error) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self._kill_timer.stop()
            self._end("failed", ErrorInfo(f"could not start {child_python()}: {self.process.errorString()}", "", False))

    def _on_exit(self, code: int, status) -> None:
        self._kill_timer.stop()
        self._read_stdout()
        self._read_stderr()
        out = self._outcome
        if out is None:
            if self.stop_requested:
                self._end("stopped")
                return
            tail = "\n".join(self._err[-40:])
            self._end(
                "failed",
                ErrorInfo(
                    f"the {self.title.lower()} process ended without a result (exit code {code})"
                    f"{': ' + self._err[-1] if self._err else ''}",
                    tail,
                    False,
                ),
            )
        elif out.outcome == "done":
            self._end("done", _result(self.name, out.result))
        elif out.outcome == "stopped":
            self._end("stopped")
        else:
            self._end("failed", _error_info(out.message, out.internal, out.traceback))


def start_side_job(name: str, folder: Path | str, request: Any, parent: QObject) -> ChildJob:
    """Start a short job beside the runner's one job, for work that writes nothing (the new-project form reading a
    large data file): it never waits behind a training, nor asks to stop one. The caller owns it: kill() cancels it,
    and it ends with its parent."""
    job = registry.JOBS[name]
    if job.trains or job.locks:
        raise InternalError(f"'{name}' writes the project: start it through the JobRunner")
    handle = ChildJob(job, Path(folder), request, parent=parent)
    handle.launch()
    return handle


class RunJob(JobHandle):
    """The training run, detached, followed through run/events.jsonl; also made to attach to a live run."""

    def __init__(self, job, project, request, parent=None, processes: int = 1):
        super().__init__(job, project, request, parent)
        self.processes = processes
        self.launch_id = uuid.uuid4().hex[:12]
        self.launched_pid: int | None = None
        self.run: RunStarted | None = None
        self.tail: runs.EventTail | None = None
        self.acknowledged = False
        self.log_path: Path | None = None
        self.command: list[str] = []
        self._popen: subprocess.Popen | None = None
        self._stop_asked_at = 0.0
        self._hard = False
        self._last_alive_check = 0.0
        self._timer = QTimer(self)
        self._timer.setObjectName("runFollowTimer")
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self.poll)

    # ---- start / attach --------------------------------------------------------------------------
    def command_line(self) -> list[str]:
        # --nice: on a machine whose cores the training fills, the window still gets the CPU when it needs it
        cli = [
            "-m",
            "dynastudio.core.cli",
            "run",
            str(self.project_root),
            "--events",
            "none",
            "--launch-id",
            self.launch_id,
            "--nice",
            str(RUN_NICENESS),
        ]
        until = getattr(self.request, "until", None)
        if until:
            cli += ["--until", until]
        if self.processes > 1:
            return [
                child_python(),
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc_per_node",
                str(self.processes),
            ] + cli
        return [child_python()] + cli

    def launch(self) -> None:
        self.command = self.command_line()
        logs = runs.logs_dir(self.project_root)
        logs.mkdir(parents=True, exist_ok=True)
        self.log_path = logs / f"{time.strftime('%Y%m%d-%H%M%S')}-{self.launch_id}.log"
        self.status = "running"
        self.started.emit()
        try:
            self._popen = _spawn_detached(self.command, self.project_root, self.log_path)
        except OSError as exc:
            self._end("failed", ErrorInfo(f"could not start the run ({shlex.join(self.command)}): {exc}", "", False))
            return
        _SPAWNED.append(self._popen)
        self.launched_pid = int(self._popen.pid)
        self._timer.start()

    def _end(self, kind: str, value: Any = None) -> None:
        if self._popen is not None and self._popen.poll() is None:
            _BACKGROUND.append(self._popen)  # still exiting (or kept running): reaped later, never dropped running
            self._popen = None
        super()._end(kind, value)

    def _launched_alive(self) -> bool:
        if self._popen is not None:
            return self._popen.poll() is None  # also reaps it: a finished child must not linger as a zombie
        return bool(self.launched_pid) and runs.pid_alive(self.launched_pid)

    def attach(self) -> None:
        """Follow the run that holds the project's lock, from the first event of its events file."""
        self.status = "running"
        self.tail = runs.EventTail(runs.events_path(self.project_root))
        self.started.emit()
        # what the file holds so far happened before this window followed: the views must not stamp it "now"
        self.bridge.replay(True)
        self.poll()
        self.bridge.replay(False)
        self._timer.start()

    def detach(self) -> None:
        """Stop following; the run goes on by itself."""
        self._timer.stop()
        _reap_background()
        self._end("detached")

    # ---- stop ------------------------------------------------------------------------------------
    def stop(self) -> None:
        if not self.is_running():
            return
        if self.stop_requested or self.run is None:
            self.kill()  # a second Stop; or the run has not started yet, so there is nothing to save
            return
        self.stop_requested = True
        self._stop_asked_at = time.monotonic()
        runs.request_stop(self.project_root, self.run.run_id, "studio")

    def kill(self) -> None:
        self._hard = True
        self.stop_requested = True
        pids = runs.local_pids(self.run) if self.run is not None else []  # a remote rank's pid is not ours to kill
        if self.launched_pid:
            pids.append(self.launched_pid)
        runs.kill_hard(pids)
        self.poll()

    # ---- following -------------------------------------------------------------------------------
    def _poll_blocking(self) -> None:
        self.poll()

    def poll(self) -> None:
        if not self.is_running():
            self._timer.stop()
            return
        if self.tail is None:
            if not self._our_run_began():
                if self.launched_pid and not self._launched_alive():
                    self._launch_failed()
                return
            self.tail = runs.EventTail(runs.events_path(self.project_root))
        for event in self.tail.poll():
            if isinstance(event, RunStarted):
                self.run = event
                self.bridge.sink(event)
            elif isinstance(event, RunEnded):
                self._finish(event)
                return
            else:
                if isinstance(event, StopAcknowledged):
                    self.acknowledged = True
                self.bridge.sink(event)
        now = time.monotonic()
        if (
            self.stop_requested
            and not self.acknowledged
            and not self._hard
            and now - self._stop_asked_at > STOP_ANSWER_S
        ):
            self.bridge.sink(
                runs_log(f"the run did not answer the stop request within {STOP_ANSWER_S:.0f} s: ending it now")
            )
            self.kill()
            return
        if now - self._last_alive_check < 0.5 and not self._hard:
            return
        self._last_alive_check = now
        if self.tail.replaced or self.tail.check_replaced():
            self.detach()  # another run took over the project: its window will follow it
            return
        if self.run is not None and self.run.host != runs.socket.gethostname():
            return  # a run on another machine (a shared folder): it ends when its RunEnded arrives
        pid = self.run.pid if self.run is not None else None
        if pid is not None and runs.pid_alive(pid):
            return
        if self._popen is not None:
            self._popen.poll()  # reap our own child once it has exited
        if pid is None and self.launched_pid and self._launched_alive():
            return
        for event in self.tail.poll():  # its last words
            if isinstance(event, RunEnded):
                self._finish(event)
                return
            self.bridge.sink(event)
        self._timer.stop()
        if self._hard:
            self.bridge.sink(runs_log("ended at once: the progress since the last checkpoint is lost"))
            self._end("stopped")
            return
        who = f"process {pid}" if pid else "the run"
        self._end(
            "failed",
            ErrorInfo(
                f"the run ended without a word ({who} was killed or crashed): the last checkpoint is kept, and "
                f"Resume continues from it{self._log_hint()}",
                self._log_tail(),
                True,
            ),
        )

    def _our_run_began(self) -> bool:
        try:
            with open(runs.events_path(self.project_root), "rb") as f:
                first = event_from_json(f.readline().decode("utf-8", errors="replace"))
        except OSError:
            return False
        return isinstance(first, RunStarted) and first.launch_id == self.launch_id

    def _launch_failed(self) -> None:
        self._timer.stop()
        if self._our_run_began():  # it began and ended between two polls: read it all
            self.tail = runs.EventTail(runs.events_path(self.project_root))
            self.poll()
            return
        if self._hard:
            self._end("stopped")
            return
        lines = self._log_lines()
        errors = [l for l in lines if l.startswith("error: ")]
        if errors and not any(l.startswith("Traceback") for l in lines):
            self._end("failed", ErrorInfo(errors[-1][len("error: ") :], "", True))
        else:
            self._end("failed", ErrorInfo(f"the run could not start{self._log_hint()}", "\n".join(lines[-40:]), False))

    def _finish(self, event: RunEnded) -> None:
        self._timer.stop()
        if event.outcome == "done":
            self._end("done", RunResult(tuple(event.ran)))
        elif event.outcome == "stopped":
            self._end("stopped")
        else:
            self._end("failed", _error_info(event.message, event.internal, self._log_tail() if event.internal else ""))

    def _log_lines(self) -> list[str]:
        if self.log_path is None or not self.log_path.is_file():
            return []
        return self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-200:]

    def _log_tail(self) -> str:
        return "\n".join(self._log_lines()[-40:])

    def _log_hint(self) -> str:
        return f" (its output: {self.log_path})" if self.log_path is not None else ""


_BACKGROUND: list[subprocess.Popen] = []  # runs this studio started and stopped following


def _reap_background() -> None:
    _BACKGROUND[:] = [p for p in _BACKGROUND if p.poll() is None]


def _spawn_detached(command: list[str], cwd: Path, log_path: Path) -> subprocess.Popen:
    """Start `command` in a session of its own, output to `log_path`: it outlives the window and ignores a Ctrl-C
    in the studio's terminal. (A QProcess would kill it when destroyed, and PySide's startDetached() with
    redirected output does not give the pid back.)"""
    with open(log_path, "ab") as log:
        # the exact command heads the run's own log (the studio's log shows a line for people instead)
        log.write(f"$ {shlex.join(command)}\n".encode())
        log.flush()
        kwargs: dict = {"start_new_session": True}
        if sys.platform == "win32":
            kwargs = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.DETACHED_PROCESS}
        env = child_environment()
        return subprocess.Popen(
            command, cwd=str(cwd), stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, **kwargs
        )


def runs_log(text: str):
    from dynastudio.core.events import LogMessage

    return LogMessage(text, "warning")


class JobRunner(QObject):
    """One job at a time. Starting a job while another runs is refused unless the caller says `replace=True`
    (after asking the user): then the running job is stopped and the new one starts once it has ended."""

    jobStarted = Signal(object)  # JobHandle
    jobEnded = Signal(object)  # JobHandle, after its outcome signal
    busyChanged = Signal(bool)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.current: JobHandle | None = None
        self._pending: tuple[JobHandle, dict] | None = None

    def is_running(self) -> bool:
        return self.current is not None

    def start(
        self, name: str, project: Path | str, request: Any = None, replace: bool = False, processes: int = 1
    ) -> JobHandle:
        job = registry.JOBS[name]
        if name == "run":
            handle: JobHandle = RunJob(job, Path(project), request, parent=self, processes=processes)
        else:
            handle = ChildJob(job, Path(project), request, parent=self)
        if self.is_running():
            if not replace:
                raise JobBusy(f"'{self.current.name}' is running; ask the user, then start with replace=True")
            if self._pending is not None:
                old = self._pending[0]
                old.status = "stopped"
                old.cancelled.emit()
                old.ended.emit("stopped")
            self._pending = (handle, {})
            self.stop()
            return handle
        self._launch(handle)
        return handle

    def attach(self, project: Path | str) -> JobHandle | None:
        """Follow the live run of `project` (started elsewhere, or before the window was reopened)."""
        if self.is_running():
            return None
        handle = RunJob(registry.JOBS["run"], Path(project), None, parent=self)
        self._launch(handle, attach=True)
        return handle

    def stop(self) -> None:
        if self.current is not None:
            self.current.stop()

    def cancel_all(self) -> None:
        """Stop the running job and forget a queued one (closing the window)."""
        self._pending = None
        self.stop()

    def detach(self) -> None:
        """Stop following a run; it goes on training in the background."""
        self._pending = None
        if isinstance(self.current, RunJob):
            self.current.detach()

    def shutdown(self, timeout_s: float = 120.0, keep_run: bool = False) -> bool:
        """Stop (or, with keep_run, leave running) and wait until the job ended; True when nothing is left running."""
        self._pending = None
        h = self.current
        if h is None:
            return True
        if keep_run and isinstance(h, RunJob):
            h.detach()
            return True
        h.stop()
        if not h.wait(timeout_s):
            h.kill()
            h.wait(10)
        return not h.is_running()

    def _launch(self, handle: JobHandle, attach: bool = False) -> None:
        _reap_background()
        self.current = handle
        handle.ended.connect(lambda _kind, h=handle: self._on_ended(h))
        self.jobStarted.emit(handle)
        self.busyChanged.emit(True)
        if attach:
            handle.attach()
        else:
            handle.launch()

    def _on_ended(self, handle: JobHandle) -> None:
        if handle is not self.current:
            return
        self.current = None
        self.jobEnded.emit(handle)
        if self._pending is not None:
            pending, self._pending = self._pending[0], None
            self._launch(pending)
        else:
            self.busyChanged.emit(False)
