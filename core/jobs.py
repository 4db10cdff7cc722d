"""Running a registered job in this process (the CLI, a job's child process, tests): `jobs.run(name, project, request)`.

The registry itself (names, titles, request types) is core.registry, which the studio reads without this
module's engine paths; a job's engine code (torch, transformers) is imported when it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import ConfigError
from .events import EventSink, LogMessage, StopToken, null_sink
from .registry import JOBS, Job
from .requests import (  # noqa: F401  (the requests are used as jobs.RunRequest etc.)
    CreateRequest,
    DeviceKitRequest,
    ExportReport,
    ExportRequest,
    LatencyRequest,
    RunRequest,
    RunResult,
    SearchRequest,
    StageRequest,
    TableSummaryRequest,
)


def create_job(project: Path, request: CreateRequest, events, stop: StopToken):
    """Validate the data and the model, then create the project folder with its encoded task cache."""
    from .prepare import new_project

    stop.check()
    return new_project(Path(project), request.config, overwrite=request.overwrite, events=events)


def table_summary_job(folder: Path, request: TableSummaryRequest, events, stop: StopToken) -> dict:
    """A data file's row count, label counts and first rows, for the new-project form; a short job so that a large
    file is parsed in the job's process, never on the window's thread. Needs no project (`folder` is unused).
    JSON keys are strings, so the label counts travel as [label, count] pairs."""
    from .data.readers import table_summary

    stop.check()
    r = request
    summary = table_summary(r.path, r.text_columns, r.label_column, r.label_names, r.regression, r.preview_rows)
    if "counts" in summary:
        summary["counts"] = [[label, n] for label, n in summary["counts"].items()]
    return summary


def run(
    name: str,
    project,
    request: Any = None,
    events: EventSink = null_sink,
    stop: StopToken | None = None,
    launch_id: str | None = None,
) -> Any:
    """Run the registered job `name`; `project` may be a folder (opened here), `request` None for the defaults.

    A training job holds the project's run lock and writes every event to run/events.jsonl (so any front end
    can follow it) and stops when a stop request appears in run/ (see core.runs); a latency job holds the lock.
    A second run of the same project is refused with a ProjectBusy error naming the process that holds it."""
    from .project import Project

    job = JOBS.get(name)
    if job is None:
        raise ConfigError(f"unknown job '{name}': choose one of {', '.join(JOBS)}")
    if request is None:
        request = job.request_type()
    if not isinstance(request, job.request_type):
        raise TypeError(f"job '{name}' takes a {job.request_type.__name__}, not a {type(request).__name__}")
    if job.opens_project and not isinstance(project, Project):
        project = Project.open(Path(project))
    stop = stop or StopToken()
    if job.trains:
        return _run_training(job, project, request, events, stop, launch_id)
    if name == "run-stage":  # a stage in the child process of a run, which holds the lock and the session
        return _oom_is_a_user_error(job.fn)(project, request, events, stop)
    if job.locks:
        from . import runs

        with runs.holding_lock(project.root, job.name, log=lambda text: events(LogMessage(text, "warning"))):
            return job.fn(project, request, events, stop)
    if name == "device-kit" or (name == "export" and getattr(request, "model_name", None) is None):
        from . import runs

        # the default model is the most trained one, which a live run is about to replace
        runs.check_not_running(
            project.root,
            "export the most trained model while it is being trained "
            + (
                "(give --model to export a finished stage's model)"
                if name == "export"
                else "(make the kit once the run has ended)"
            ),
        )
    return job.fn(project, request, events, stop)


def _run_training(job: Job, project, request, events, stop: StopToken, launch_id: str | None):
    """A training job inside a RunSession (lock, events file, stop file). Under torchrun the main process holds
    the session; every process learns whether it got the lock before any of them trains."""
    import os

    from . import runs, runtime

    fn = _oom_is_a_user_error(job.fn)  # imports the engine before the lock is taken: a broken install fails here
    root = Path(getattr(project, "root", project))
    if not runtime.initialized():
        with runs.RunSession(root, job.name, events, stop, launch_id) as single:
            result = fn(project, request, single.events, stop)
            single.ran = tuple(getattr(result, "ran", (job.name,)))
            return result
    import socket

    ranks = runtime.all_gather_objects((socket.gethostname(), os.getpid()))  # (host, pid) of every rank, in order
    pids, hosts = tuple(p for _, p in ranks), tuple(h for h, _ in ranks)
    session: runs.RunSession | None = None
    error: Exception | None = None
    if runtime.is_main():
        session = runs.RunSession(
            root,
            job.name,
            events,
            stop,
            launch_id,
            launcher_pid=os.getppid(),
            pids=pids,
            world_size=runtime.world(),
            hosts=hosts,
        )
        try:
            session.__enter__()
        except Exception as exc:  # noqa: BLE001  (re-raised below, on this rank)
            session, error = None, exc
    if runtime.any_process(error is not None):
        if error is not None:
            raise error
        from .errors import Cancelled

        raise Cancelled("the main process could not start the run")  # it reports why
    if session is None:
        return fn(project, request, events, stop)
    try:
        result = fn(project, request, session.events, stop)
        session.ran = tuple(getattr(result, "ran", (job.name,)))
    except BaseException as exc:
        session.__exit__(type(exc), exc, exc.__traceback__)
        raise
    session.__exit__(None, None, None)
    return result


def _oom_is_a_user_error(fn):
    """`fn`, with torch's out-of-memory error turned into a one-line OutOfMemory that says what to lower (the run
    ends "failed", not as an internal error to report)."""

    def run(project, request, events, stop):
        from .errors import out_of_memory

        try:
            return fn(project, request, events, stop)
        except (RuntimeError, MemoryError) as exc:
            oom = out_of_memory(exc, project.config) if hasattr(project, "config") else None
            if oom is None:
                raise
            raise oom from None

    return run
