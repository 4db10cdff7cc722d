"""Imported by a run's stage child process (DYNASTUDIO_JOB_MODULES) in tests/test_stage_processes.py: makes the
stage named in DYNASTUDIO_TEST_STAGE_FAULT ("stage:user" or "stage:bug") fail there, as a user's mistake or a bug."""

import os

from dynastudio.core import stages
from dynastudio.core.errors import DataError

_stage, _, _kind = os.environ.get("DYNASTUDIO_TEST_STAGE_FAULT", "").partition(":")


def _fail(project, request, events, stop):
    if _kind == "user":
        raise DataError("train.csv, line 3: the label 'maybe' is not one of the task's labels: fix that line")
    raise ZeroDivisionError("a bug in the stage")


if _stage:
    stages.STAGE_JOBS[_stage] = _fail
