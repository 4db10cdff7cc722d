"""Each stage of a run in its own child process, inside the run's one session.

A stage that followed others in the same process was measured 7-25 % slower than the same stage started fresh
(bench/results/stage_age.md): the earlier stages leave glibc's heap fragmented, and the main thread's share of
time in malloc went from 11 % to 19 %. So `dynastudio run` (and the studio, which starts it) runs each long training
stage that follows others (width, depth, and the optional finetune-subnets and int8-aware: stages.CHILD_STAGES) as
`python -m dynastudio.core.child run-stage DIR`: the run's lock, events file and stop file stay with the run's
process, which relays the child's events to them and passes a stop on to it. The child costs a process start
(importing torch and transformers, a few seconds) per stage; the teacher's fine-tuning (first, in a
fresh process), rewiring and the evaluation (short) stay in the run's process, which returns its freed heap
before each child starts (runtime.release_memory).

The child ignores Ctrl-C, SIGTERM and SIGHUP (a terminal sends them to the whole process group): the run's
process receives them too and asks the child to stop through its stdin, so the stage saves as it does in one
process. If the run's process dies (`dynastudio stop --now`), the child is killed with it on Linux (the parent-death
signal), and elsewhere stops at its next check when its stdin closes.

Under torchrun every stage runs in the processes torchrun started (they share a process group), and
`dynastudio run --one-process` (or DYNASTUDIO_ONE_PROCESS=1, which the test suite sets) runs the stages in the
run's own process: what a debugger or a profiler wants.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from . import threads
from .errors import Cancelled, InternalError, UserError
from .events import JobEnded, event_from_json
from .requests import StageRunRequest, request_to_json

JOB = "run-stage"
ONE_PROCESS_ENV = "DYNASTUDIO_ONE_PROCESS"
PARENT_ENV = "DYNASTUDIO_RUN_PID"  # the run's process, as the child should find it


def one_process_by_default(env=None) -> bool:
    """Whether the user asked for every stage in the run's own process (DYNASTUDIO_ONE_PROCESS=1)."""
    value = (os.environ if env is None else env).get(ONE_PROCESS_ENV, "").strip().lower()
    return value not in ("", "0", "false", "no")


def command(root: Path) -> list[str]:
    return [sys.executable, "-m", "dynastudio.core.child", JOB, str(root)]


def run_stage_in_child(root: Path, stage: str, events, stop) -> None:
    """Run `stage` of the project at `root` in a child process; its events go to `events`; `stop` stops it.
    Raises Cancelled when it stopped, UserError with its message when it failed on the user's mistake, and
    InternalError carrying its traceback when it failed on a bug."""
    threads.unregister()  # the child computes in our place: it takes every core we had, not half
    proc = subprocess.Popen(
        command(root),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=None,  # a library's warnings and a bug's traceback reach the run's own stderr (its log)
        text=True,
        encoding="utf-8",
        env={**threads.child_env(), PARENT_ENV: str(os.getpid())},
    )
    stdin, stdout = proc.stdin, proc.stdout
    assert stdin is not None and stdout is not None  # both are pipes
    stopped = threading.Event()

    def forward_stop() -> None:
        while not stopped.wait(0.1):
            if stop.is_set():
                try:
                    stdin.write("stop\n")
                    stdin.flush()
                except (OSError, ValueError):  # it has ended already, or its pipe was closed
                    pass
                return

    end: JobEnded | None = None
    try:
        stdin.write(request_to_json(StageRunRequest(stage)) + "\n")
        stdin.flush()
        threading.Thread(target=forward_stop, name="dynastudio-stage-stop", daemon=True).start()
        for line in stdout:
            if not line.strip():
                continue
            event = event_from_json(line)
            if isinstance(event, JobEnded):
                end = event
            else:
                events(event)
        code = proc.wait()
    finally:
        stopped.set()
        if proc.poll() is None:  # we are leaving on an error of our own (or a second Ctrl-C): no orphan
            proc.kill()
            proc.wait()
        for pipe in (stdin, stdout):
            try:
                pipe.close()
            except OSError:
                pass
        threads.register("run")
    if end is None:
        raise InternalError(f"the {stage} stage's process ended (exit code {code}) without saying how")
    if end.outcome == "stopped":
        raise Cancelled(f"the {stage} stage stopped by request")
    if end.outcome == "failed":
        if end.internal:
            raise InternalError(f"the {stage} stage's process failed: {end.message}\n{end.traceback}")
        raise UserError(end.message)


def become_stage_child() -> None:
    """In the child: leave the signals of the terminal to the run's process, and die with it (Linux)."""
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.environ.get(PARENT_ENV, str(os.getppid())) != str(os.getppid()):  # it died before the signal was armed
        raise Cancelled("the run's process is gone")
