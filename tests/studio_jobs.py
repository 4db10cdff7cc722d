"""Jobs of the studio's tests, run in the job child process like real ones (see helpers.register_test_job).

The child imports this module (DYNASTUDIO_JOB_MODULES); it registers the jobs named in DYNASTUDIO_TEST_JOBS
("name:function:RequestType:trains", comma separated), replacing a real job of the same name."""

from __future__ import annotations

import os
import threading

from dynastudio.core import registry, requests
from dynastudio.core.events import LogMessage, StageProgress, StageStarted


def boom(project, request, events, stop):
    return 1 / 0


def slow(project, request, events, stop):
    events(LogMessage("slow job running"))
    while True:
        stop.check()
        threading.Event().wait(0.01)


def quick(project, request, events, stop):
    return 42


def fake_latency(project, request, events, stop):
    """The real latency job's events in its order, on a machine made to look busy, then a wait only Stop ends."""
    from dynastudio.core import latency

    load = float(os.environ.get("STUDIO_TEST_LOAD", "0"))
    latency.os.getloadavg = lambda: (load, load, load)
    latency._cpu_jiffies = lambda: None  # as on a machine without /proc/stat: the load average decides
    latency.os.cpu_count = lambda: 2
    events(StageStarted("latency", 3))
    events(LogMessage(f"request seq={request.seq}"))
    if busy := latency.busy_warning():
        events(LogMessage(busy, "warning"))
    events(StageProgress("latency", 1, 3))
    while True:
        stop.check()
        threading.Event().wait(0.01)


def fake_latency_file(project, request, events, stop):
    """Stands in for the onnxruntime measurement: the latency file, written the way the real job does."""
    from dynastudio.core.project import Project

    project = Project.open(project)
    rows = [
        {
            "label": r["label"],
            "width_mult": r["width_mult"],
            "depth_mult": r["depth_mult"],
            "sizes": {},
            "values": {"latency_fp32_ms": 10.0 * r["flops_rel"], "size_onnx_fp32_mb": 1.0},
        }
        for r in project.load_results()["rows"]
    ]
    project.save_latency(
        {
            "setup": {"device": "test CPU", "threads": request.threads, "batch": request.batch, "seq": request.seq},
            "rows": rows,
        }
    )
    return {"rows": rows}


def install() -> None:
    for spec in filter(None, os.environ.get("DYNASTUDIO_TEST_JOBS", "").split(",")):
        name, fn, request_type, trains = spec.split(":")
        registry.JOBS[name] = registry.Job(
            name,
            f"studio_jobs:{fn}",
            getattr(requests, request_type),
            f"test job {name}",
            trains=trains == "1",
            opens_project=False,
        )


install()
