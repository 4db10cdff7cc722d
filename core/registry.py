"""The job registry: every long job is `job(project, request, events, stop) -> result`, named here once for the CLI
and the studio. Importing it is light (no engine code): a job's module is imported by `Job.fn` when it runs, so
the studio lists jobs and builds requests without loading torch; core.jobs runs them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .config import STAGES
from .events import EventSink, StopToken
from .requests import (
    CreateRequest,
    DeviceKitRequest,
    EstimateRequest,
    ExportRequest,
    LatencyRequest,
    RunRequest,
    SearchRequest,
    StageRequest,
    StageRunRequest,
    TableSummaryRequest,
)


@dataclass(frozen=True)
class Job:
    name: str
    target: str  # "module:function", imported when the job runs
    request_type: type
    title: str  # what the studio and the CLI call it
    trains: bool = False  # a training job: holds the project's run lock and keeps run/events.jsonl
    opens_project: bool = True  # False: `project` is handed over as a folder path (create)
    locks: bool = False  # holds the run lock while it runs (it writes the project)

    @property
    def fn(self) -> Callable[[Any, Any, EventSink, StopToken], Any]:
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module, __package__), name)


JOBS: dict[str, Job] = {}


def register(job: Job) -> Job:
    if job.name in JOBS:
        raise ValueError(f"job '{job.name}' is registered twice")
    JOBS[job.name] = job
    return job


_STAGE_TITLES = {
    "finetune": "Fine-tune the teacher",
    "rewire": "Importance and rewiring",
    "width": "Width distillation",
    "depth": "Width x depth distillation",
    "finetune-subnets": "Fine-tune sub-networks",
    "int8-aware": "INT8-aware distillation",
    "evaluate": "Evaluate every sub-network",
}
register(Job("create", ".jobs:create_job", CreateRequest, "Create the project", opens_project=False))
register(Job("table-summary", ".jobs:table_summary_job", TableSummaryRequest, "Read a data file", opens_project=False))
register(Job("run", ".stages:run_job", RunRequest, "Train (every unfinished stage)", trains=True, locks=True))
for _stage in STAGES:
    register(
        Job(
            _stage,
            f".stages:{_stage.replace('-', '_')}_job",
            StageRequest,
            _STAGE_TITLES[_stage],
            trains=True,
            locks=True,
        )
    )
# one stage of a run, in the child process the run started for it (core.stageproc): the run holds the lock
register(Job("run-stage", ".stages:run_stage_job", StageRunRequest, "One stage of a run"))
register(Job("estimate", ".estimate:estimate_job", EstimateRequest, "Estimate the training time"))
register(Job("latency", ".latency:latency_job", LatencyRequest, "Measure latency", locks=True))
register(Job("search", ".search:search_job", SearchRequest, "Search sub-networks under a latency budget", locks=True))
register(Job("export", ".export.job:export_job", ExportRequest, "Export a sub-network"))
register(Job("device-kit", ".devicekit:device_kit_job", DeviceKitRequest, "Make a device kit"))
