"""A run as the project records it: the run lock, the events file, the stop request, and following a live run.

Everything a front end needs to follow a run lives in the project's `run/` folder, so it needs no
other channel and can attach to a run it did not start (the studio reopened, another terminal):

    run/lock.json     who holds the project: pid, host, start time, job (one run per project)
    run/events.jsonl  every event of the current (or last) run, one JSON object per line
    run/stop          present = "please stop after this step" (written by `dynastudio stop` and the studio)
    run/logs/         stderr of the processes the studio launched (tracebacks of bugs end up there)

This module is light (no torch): the studio imports it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import Cancelled, ProjectError, UserError
from .events import (
    RunEnded,
    RunStarted,
    StageEnded,
    StageProgress,
    StageStarted,
    StepEnded,
    StopAcknowledged,
    StopToken,
    event_from_json,
    event_to_json,
)
from .store import atomic_write_text

RUN_DIR = "run"
LOCK_FILE = "lock.json"
EVENTS_FILE = "events.jsonl"
STOP_FILE = "stop"
HARD_KILL = getattr(signal, "SIGKILL", signal.SIGTERM)  # Windows has no SIGKILL; SIGTERM there ends the process


def run_dir(root: Path) -> Path:
    return Path(root) / RUN_DIR


def lock_path(root: Path) -> Path:
    return run_dir(root) / LOCK_FILE


def events_path(root: Path) -> Path:
    return run_dir(root) / EVENTS_FILE


def stop_path(root: Path) -> Path:
    return run_dir(root) / STOP_FILE


def logs_dir(root: Path) -> Path:
    return run_dir(root) / "logs"


# ---- processes ----------------------------------------------------------------------------------
def _proc_start(pid: int) -> str | None:
    """When the process started, in clock ticks since boot (Linux); tells a live process from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None  # field 22 of the whole line


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :][:1] in ("Z", "X")


def pid_alive(pid: int, proc_start: str | None = None) -> bool:
    """True while process `pid` on this host runs (a zombie, or a new process that reused the pid, is not it)."""
    if pid <= 0:
        return False
    if sys.platform == "win32":  # os.kill(pid, 0) would end the process on Windows
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        ctypes.windll.kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        ctypes.windll.kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    if _zombie(pid):
        return False
    return proc_start is None or _proc_start(pid) in (None, proc_start)


def local_pids(started: RunStarted) -> list[int]:
    """The processes of a run that are on this host (rank order), then torchrun's own: what `stop --now` may kill.
    A pid recorded on another node may name an unrelated process here."""
    here = socket.gethostname()
    if started.host != here:
        return []  # torchrun's pid (launcher_pid) is rank 0's host's
    pids = list(started.pids) or [started.pid]
    hosts = list(started.hosts) or [started.host] * len(pids)  # older runs: every rank on rank 0's host
    mine = [pid for pid, host in zip(pids, hosts) if host == here]
    return mine + ([started.launcher_pid] if started.launcher_pid else [])


def kill_hard(pids) -> list[int]:
    """End these processes of this host now (no checkpoint); returns the ones that were running."""
    killed = []
    for pid in pids:
        if pid and pid_alive(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, HARD_KILL)
                killed.append(pid)
    return killed


# ---- the run lock -------------------------------------------------------------------------------
@dataclass(frozen=True)
class LockInfo:
    pid: int
    host: str
    started: float
    job: str
    run_id: str
    proc_start: str | None = None
    command: str = ""

    @property
    def local(self) -> bool:
        return self.host == socket.gethostname()

    def alive(self) -> bool:
        """True unless we can tell the process is gone (a lock from another host is taken at its word)."""
        return not self.local or pid_alive(self.pid, self.proc_start)

    def describe(self) -> str:
        ago = _ago(time.time() - self.started)
        what = "a training run" if self.job != "latency" else "a latency measurement"
        return (
            f"{what} (`dynastudio {self.job}`, process {self.pid} on {self.host}, started "
            f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(self.started))}, {ago} ago)"
        )


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def read_lock(root: Path) -> LockInfo | None:
    """The lock's holder; None without a lock. A lock that cannot be read (torn by a crash while it was being
    written, which the link-into-place below makes rare) counts as stale, with pid 0."""
    return read_lock_file(lock_path(root))


def read_lock_file(path: Path) -> LockInfo | None:
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ProjectError(f"{path}: cannot be read ({exc.strerror}): check the folder's permissions") from None
    try:
        d = json.loads(raw)
        return LockInfo(
            int(d["pid"]),
            str(d["host"]),
            float(d["started"]),
            str(d.get("job", "run")),
            str(d.get("run_id", "")),
            d.get("proc_start"),
            str(d.get("command", "")),
        )
    except (ValueError, KeyError, TypeError):
        return LockInfo(0, socket.gethostname(), path.stat().st_mtime, "run", "")


def live_lock(root: Path) -> LockInfo | None:
    """The lock of a process that still runs; None when there is no lock or only a stale one."""
    info = read_lock(root)
    return info if info is not None and info.alive() else None


class ProjectBusy(ProjectError):
    """Another process holds the project's run lock."""


def _busy_message(root: Path, holder: LockInfo, doing: str) -> str:
    extra = "" if holder.local else f"; if it is no longer running, delete {lock_path(root)}"
    return (
        f"{root}: cannot {doing}: {holder.describe()} holds the project: wait for it, or stop it "
        f"(Stop on the Train page, or `dynastudio stop {root}`){extra}"
    )


def check_not_running(root: Path, doing: str) -> None:
    """Raise ProjectBusy, naming the process, when a live run holds the project."""
    holder = live_lock(root)
    if holder is not None:
        raise ProjectBusy(_busy_message(root, holder, doing))


def acquire_lock(root: Path, job: str, run_id: str, log=None) -> LockInfo:
    """Take the project's run lock, or raise ProjectBusy naming the holder. A lock left by a process that no
    longer runs (killed, crashed, the machine rebooted) is cleared, and `log(text)` is told so."""
    path = lock_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    me = LockInfo(pid, socket.gethostname(), time.time(), job, run_id, _proc_start(pid), " ".join(sys.argv))
    body = json.dumps(me.__dict__, indent=1)
    for _ in range(3):
        tmp = path.with_name(f".{LOCK_FILE}.{pid}.{uuid.uuid4().hex[:8]}")
        tmp.write_text(body, encoding="utf-8")
        try:
            _link_exclusive(tmp, path)  # complete content, and fails if a lock is there: no torn lock to read
            return me
        except FileExistsError:
            pass
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        holder = read_lock(root)
        if holder is None:
            continue  # released in between: try again
        if holder.alive():
            raise ProjectBusy(_busy_message(root, holder, f"start `{job}`"))
        # stale: move it aside atomically, so of two processes clearing it at once only one does
        aside = path.with_name(f".{LOCK_FILE}.stale.{pid}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            continue
        moved = read_lock_file(aside)
        if moved is not None and (moved.pid, moved.run_id) != (holder.pid, holder.run_id):
            # another process cleared the stale lock and took the project in between: give its lock back
            with contextlib.suppress(OSError):
                _link_exclusive(aside, path)
            with contextlib.suppress(OSError):
                aside.unlink()
            continue
        with contextlib.suppress(OSError):
            aside.unlink()
        if log is not None:
            gone = (
                f"process {holder.pid} on {holder.host}, started "
                f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(holder.started))}"
                if holder.pid
                else "an unreadable lock"
            )
            log(
                f"cleared a stale run lock: {gone} is no longer running (it was killed or crashed; "
                f"its last checkpoint is kept)"
            )
    raise ProjectBusy(f"{path}: could not take the run lock (it keeps changing): is another run starting? try again")


def _link_exclusive(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except (AttributeError, NotImplementedError, PermissionError):  # a file system without hard links
        fd = os.open(dst, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(src.read_text(encoding="utf-8"))


def release_lock(root: Path, run_id: str) -> None:
    """Remove the lock if it is still this run's (never someone else's)."""
    info = read_lock(root)
    if info is not None and info.run_id == run_id:
        with contextlib.suppress(FileNotFoundError):
            lock_path(root).unlink()


@contextlib.contextmanager
def holding_lock(root: Path, job: str, log=None) -> Iterator[str]:
    """Hold the run lock for a job that writes the project (latency); yields the run id."""
    run_id = uuid.uuid4().hex[:12]
    acquire_lock(root, job, run_id, log)
    try:
        yield run_id
    finally:
        release_lock(root, run_id)


# ---- stop requests ------------------------------------------------------------------------------
def request_stop(root: Path, run_id: str = "", source: str = "studio") -> None:
    """Ask the live run to stop after its current step (it saves a checkpoint and exits)."""
    atomic_write_text(stop_path(root), json.dumps({"run_id": run_id, "source": source, "at": time.time()}))


def stop_requested(root: Path, run_id: str) -> str | None:
    """The source of a stop request for this run (or for any run), None without one."""
    try:
        d = json.loads(stop_path(root).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return "studio"  # a torn request is still a request
    if d.get("run_id") and d["run_id"] != run_id:
        return None
    return str(d.get("source") or "studio")


class StopFileWatcher:
    """A thread that sets the run's stop token when a stop request appears, and says it has seen it."""

    def __init__(self, root: Path, run_id: str, stop: StopToken, events, interval: float = 0.2):
        self.root, self.run_id, self.stop, self.events, self.interval = Path(root), run_id, stop, events, interval
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="dynastudio-stop-watcher", daemon=True)

    def __enter__(self) -> StopFileWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._done.wait(self.interval):
            source = stop_requested(self.root, self.run_id)
            if source is not None and not self.stop.is_set():
                self.stop.set()
                self.events(StopAcknowledged(source))


# ---- the events file ----------------------------------------------------------------------------
class EventFileWriter:
    """An event sink that appends JSON lines to the run's events file; safe to call from several threads."""

    def __init__(self, path: Path, first_event):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, event_to_json(first_event) + "\n")  # a new run replaces the last run's file
        self._f = open(self.path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def __call__(self, event) -> None:
        line = event_to_json(event) + "\n"
        with self._lock:
            if not self._f.closed:
                self._f.write(line)
                self._f.flush()  # a follower sees each event at once

    def close(self) -> None:
        with self._lock:
            self._f.close()


def tee(*sinks):
    lock = threading.Lock()

    def sink(event) -> None:
        with lock:
            for s in sinks:
                s(event)

    return sink


def remove_stale_temps(root: Path) -> list[Path]:
    """Temp files of atomic writes (`.NAME.XXXX.tmp`) and the half-made tokenizer folder a killed process left
    in the project; the caller holds the run lock. Checkpoint folders are recovered by Project.load_checkpoint."""
    root = Path(root)
    found = []
    for folder in [root, root / "cache", *sorted((root / "models").glob("*"))]:
        if folder.is_dir():
            found += [p for p in folder.glob(".*.tmp") if p.is_file()]
    if (root / ".tokenizer.tmp").is_dir():
        found.append(root / ".tokenizer.tmp")
    for p in found:
        with contextlib.suppress(OSError):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    return found


class RunSession:
    """Everything around one run of a training job: the lock, RunStarted/RunEnded in the events file, the
    stop-file watcher. Under torchrun only the main process does any of it (the caller passes main=False
    elsewhere); the stop request reaches the other ranks through the agreed stop check.

    Use: `with RunSession(root, job, events, stop) as s: s.ran = job(..., s.events, ...)`.
    """

    def __init__(
        self,
        root: Path,
        job: str,
        events,
        stop: StopToken,
        launch_id: str | None = None,
        launcher_pid: int | None = None,
        pids: tuple[int, ...] = (),
        world_size: int = 1,
        hosts: tuple[str, ...] = (),
    ):
        self.root, self.job, self.stop = Path(root), job, stop
        self.caller = events
        self.launch_id, self.launcher_pid, self.pids, self.world_size = launch_id, launcher_pid, pids, world_size
        self.hosts = hosts  # the host of each of `pids`: `stop --now` kills only this host's
        self.run_id = uuid.uuid4().hex[:12]
        self.events = events
        self.ran: tuple[str, ...] = ()
        self._writer: EventFileWriter | None = None
        self._watcher: StopFileWatcher | None = None
        self._t0 = 0.0

    def __enter__(self) -> RunSession:
        from .events import LogMessage

        notes: list[str] = []
        acquire_lock(self.root, self.job, self.run_id, log=notes.append)
        try:
            with contextlib.suppress(FileNotFoundError):
                stop_path(self.root).unlink()  # a request left over from an earlier run is not for this one
            # the lock is ours, so nothing else writes here: what a killed writer left is garbage
            if removed := remove_stale_temps(self.root):
                notes.append(
                    f"removed {len(removed)} temporary file(s) an interrupted run left: "
                    + ", ".join(str(p.relative_to(self.root)) for p in removed[:3])
                    + (" ..." if len(removed) > 3 else "")
                )
            self._t0 = time.time()
            started = RunStarted(
                self.run_id,
                self.job,
                os.getpid(),
                socket.gethostname(),
                self._t0,
                " ".join(sys.argv),
                self.launch_id,
                self.launcher_pid,
                tuple(self.pids) or (os.getpid(),),
                self.world_size,
                tuple(self.hosts) if self.pids else (socket.gethostname(),),
            )
            self._writer = EventFileWriter(events_path(self.root), started)
            self.caller(started)
            self.events = tee(self._writer, self.caller)
            for text in notes:
                self.events(LogMessage(text, "warning"))
            self._watcher = StopFileWatcher(self.root, self.run_id, self.stop, self.events).__enter__()
        except BaseException:
            self._close()
            release_lock(self.root, self.run_id)
            raise
        return self

    def __exit__(self, kind, exc, tb) -> Literal[False]:
        try:
            if self._watcher is not None:
                self._watcher.__exit__(None, None, None)
            seconds = time.time() - self._t0
            if exc is None:
                end = RunEnded(self.run_id, "done", "", seconds, tuple(self.ran))
            elif isinstance(exc, Cancelled):
                end = RunEnded(self.run_id, "stopped", "stopped by request: the last checkpoint is kept", seconds)
            elif isinstance(exc, UserError):
                end = RunEnded(self.run_id, "failed", str(exc), seconds)
            elif isinstance(exc, KeyboardInterrupt):
                end = RunEnded(
                    self.run_id,
                    "stopped",
                    "aborted (second Ctrl-C): progress since the last checkpoint is lost",
                    seconds,
                )
            else:
                end = RunEnded(self.run_id, "failed", f"{type(exc).__name__}: {exc}", seconds, internal=True)
            if self._writer is not None:
                self.events(end)
        finally:
            self._close()
            with contextlib.suppress(FileNotFoundError):
                stop_path(self.root).unlink()
            release_lock(self.root, self.run_id)
        return False

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()


# ---- following a run ----------------------------------------------------------------------------
class EventTail:
    """Reads the events file of a run as it grows: `poll()` returns the events written since the last call.

    Only whole lines are read (a line being written is left for the next poll). When the file is
    replaced by a new run's, the tail notices (the first line's run id changed) and `replaced` turns True."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = 0
        self.run: RunStarted | None = None
        self.replaced = False
        self._buffer = b""

    def poll(self) -> list:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        if not chunk:
            return []
        self.offset += len(chunk)
        data = self._buffer + chunk
        lines = data.split(b"\n")
        self._buffer = lines.pop()  # an unfinished line
        out = []
        for raw in lines:
            event = event_from_json(raw.decode("utf-8", errors="replace"))
            if event is None:
                continue
            if isinstance(event, RunStarted):
                if self.run is not None and event.run_id != self.run.run_id:
                    self.replaced = True
                    break
                self.run = event
            out.append(event)
        return out

    def check_replaced(self) -> bool:
        """True when the file now belongs to another run (read its first line again)."""
        if self.run is None:
            return False
        try:
            with open(self.path, "rb") as f:
                first = event_from_json(f.readline().decode("utf-8", errors="replace"))
        except FileNotFoundError:
            return False
        if isinstance(first, RunStarted) and first.run_id != self.run.run_id:
            self.replaced = True
        return self.replaced


@dataclass
class RunView:
    """What `dynastudio status` and the studio say about a run: live or not, and how far it got."""

    lock: LockInfo | None
    started: RunStarted | None
    ended: RunEnded | None
    stage: str | None = None
    step: int | None = None
    total: int | None = None
    stopping: bool = False

    @property
    def live(self) -> bool:
        return self.lock is not None and self.lock.alive() and self.lock.job != "latency"

    def progress_text(self) -> str:
        if self.stage is None:
            return "starting"
        of = f" of {self.total}" if self.total else ""
        return f"{self.stage}, step {self.step}{of}" if self.step is not None else f"{self.stage}"


def run_view(root: Path) -> RunView:
    """The project's run as its files tell it (reads the whole events file: for status, not for polling)."""
    lock = read_lock(root)
    tail = EventTail(events_path(root))
    view = RunView(lock, None, None)
    for e in tail.poll():
        if isinstance(e, RunStarted):
            view.started = e
        elif isinstance(e, RunEnded):
            view.ended = e
        elif isinstance(e, StageStarted):
            view.stage, view.step, view.total = e.stage, e.resumed_from_step, e.total_steps or None
        elif isinstance(e, StepEnded):
            view.stage, view.step, view.total = e.stage, e.step, e.total_steps
        elif isinstance(e, StageProgress):
            view.stage, view.step, view.total = e.stage, e.done, e.total
        elif isinstance(e, StageEnded):
            view.stage, view.step, view.total = e.stage, None, None
        elif isinstance(e, StopAcknowledged):
            view.stopping = True
    return view
