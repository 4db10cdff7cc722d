"""`dynastudio estimate DIR`: how long each stage and the whole pipeline take on this machine, before running it."""

from __future__ import annotations

import sys
from pathlib import Path

from ..config import STAGES
from ..store import ProjectStore
from ..store.estimate import Estimate, about, current_estimate, stages_to_run
from .progress import print_logs


def add_parsers(sub) -> None:
    e = sub.add_parser(
        "estimate",
        help="how long each stage and the whole pipeline take on this machine (times a few training steps once)",
    )
    e.add_argument("dir")
    e.add_argument("--until", choices=STAGES, help="the last stage the run would run (default: every stage)")
    e.add_argument("--again", action="store_true", help="time this machine again, even when the saved estimate fits")
    e.add_argument("--json", action="store_true", help="the estimate as JSON on stdout")
    e.set_defaults(func=cmd_estimate)


def cmd_estimate(a) -> int:
    from .. import jobs, threads
    from ..requests import EstimateRequest

    project = ProjectStore.open(Path(a.dir))
    threads.configure_threads("estimate")  # time the steps with the threads a run here would get
    est = Estimate.from_dict(jobs.run("estimate", Path(a.dir), EstimateRequest(again=a.again), print_logs))
    if a.json:
        print(est.to_json())
        return 0
    print_table(est, project, a.until)
    return 0


def print_table(est: Estimate, project, until: str | None = None) -> None:
    pending = stages_to_run(project, until)
    last = STAGES.index(until) if until else len(STAGES) - 1
    print(f"{'stage':<18}{'steps':>7}{'time':>10}")
    for name in STAGES[: last + 1]:
        s = est.stage(name)
        if s is None:
            continue
        steps = str(s.steps) if s.steps else "-"
        if name not in pending:
            when = "done"
        elif s.skipped and s.seconds == 0:
            when = "skipped"
        else:
            when = _clock(s.seconds)
        print(f"{name:<18}{steps:>7}{when:>10}")
    total = est.seconds(pending)
    if not pending:
        print("whole pipeline: every stage is done")
        return
    print(f"whole pipeline: {about(total)} on this machine ({est.where()})")


def _clock(seconds: float) -> str:
    s = max(0, round(seconds))
    h, rem = divmod(s, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


def run_banner(project, until: str | None = None) -> None:
    """The one line `dynastudio run` prints first when a saved estimate fits the settings (nothing is timed)."""
    est = current_estimate(project)
    pending = stages_to_run(project, until)
    if est is not None and pending:
        print(f"whole pipeline: {about(est.seconds(pending))} on this machine ({est.where()})", file=sys.stderr)
