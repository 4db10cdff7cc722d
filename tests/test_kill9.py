"""Kill -9 anywhere (the quick part; bench/kill9.py does 50+ kills): a run SIGKILLed at several moments and
resumed each time ends with the same grid and the same weights as an uninterrupted run, redoing at most one
checkpoint interval per kill and leaving no temporary file behind."""

from __future__ import annotations

import pytest

from dynastudio.core.prepare import new_project
from helpers import tiny_project_config
from kill_harness import KillReport, grid, model_difference, run_once, stale_temps

EVERY = 2  # checkpoint_every: the most a kill may cost, in steps


@pytest.mark.slow
def test_sigkill_at_several_moments_resumes_to_the_uninterrupted_result(tiny_model_dir, tiny_task_files, tmp_path):
    cfg = tiny_project_config(tiny_model_dir, *tiny_task_files, checkpoint_every=EVERY)
    ref = new_project(tmp_path / "ref", cfg)
    whole = run_once(ref.root, None)
    cut = new_project(tmp_path / "cut", cfg)
    report = KillReport()
    # the interpreter's start takes a few seconds: moments spread over the rest of an uninterrupted run
    for fraction in (0.5, 0.6, 0.7, 0.8, None):
        a = run_once(cut.root, None if fraction is None else fraction * whole.seconds)
        report.attempts.append(a)
        if not a.killed:
            break
    if report.attempts[-1].killed:
        report.attempts.append(run_once(cut.root, None))
    assert report.kills >= 1, report
    assert grid(cut.root) == grid(ref.root)
    assert model_difference(cut.root, ref.root) == 0.0
    assert all(0 <= r <= EVERY for r in report.redone_steps()), report.redone_steps()
    assert stale_temps(cut.root) == []
