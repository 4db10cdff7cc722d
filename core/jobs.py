"""The job registry: every long job is `job(project, request, events, stop) -> result`; the CLI and the studio call it here."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .config import ProjectConfig
from .errors import ConfigError
from .events import EventSink, StopToken, null_sink
from .export import ExportRequest, export_job
from .latency import LatencyRequest, latency_job
from .prepare import new_project
from .project import Project
from .stages import STAGE_JOBS, RunRequest, StageRequest, run_job


@dataclass(frozen=True)
class CreateRequest:
    """`create` is the one job without a project yet: its `project` argument is the folder to create."""

    config: ProjectConfig
    overwrite: bool = False


def create_job(project: Path, request: CreateRequest, events, stop: StopToken) -> Project:
    """Validate the data and the model, then create the project folder with its encoded task cache."""
    stop.check()
    return new_project(Path(project), request.config, overwrite=request.overwrite, events=events)


@dataclass(frozen=True)
class Job:
    name: str
    fn: Callable[[Any, Any, EventSink, StopToken], Any]
    request_type: type
    title: str  # what the studio and the CLI call it
    trains: bool = False  # a training job: the studio says so when it asks before stopping it
    opens_project: bool = True  # False: `project` is handed over as a folder path (create)


JOBS: dict[str, Job] = {}


def register(job: Job) -> Job:
    if job.name in JOBS:
        raise ValueError(f"job '{job.name}' is registered twice")
    JOBS[job.name] = job
    return job


_STAGE_TITLES = {
    "finetune": "Fine-tune the teacher", "rewire": "Importance and rewiring", "width": "Width distillation",
    "depth": "Width x depth distillation", "finetune-subnets": "Fine-tune sub-networks", "evaluate": "Evaluate every sub-network",
}
register(Job("create", create_job, CreateRequest, "Create the project", opens_project=False))
register(Job("run", run_job, RunRequest, "Train (every unfinished stage)", trains=True))
for _stage, _fn in STAGE_JOBS.items():
    register(Job(_stage, _fn, StageRequest, _STAGE_TITLES[_stage], trains=_stage != "evaluate"))
register(Job("latency", latency_job, LatencyRequest, "Measure latency"))
register(Job("export", export_job, ExportRequest, "Export a sub-network"))


def run(name: str, project: Project | Path | str, request: Any = None, events: EventSink = null_sink,
        stop: StopToken | None = None) -> Any:
    """Run the registered job `name`; `project` may be a folder (opened here), `request` None for the defaults."""
    job = JOBS.get(name)
    if job is None:
        raise ConfigError(f"unknown job '{name}': choose one of {', '.join(JOBS)}")
    if request is None:
        request = job.request_type()
    if not isinstance(request, job.request_type):
        raise TypeError(f"job '{name}' takes a {job.request_type.__name__}, not a {type(request).__name__}")
    if job.opens_project and not isinstance(project, Project):
        project = Project.open(Path(project))
    return job.fn(project, request, events, stop or StopToken())
