"""The other order of the distilling stages (issue 26): stage_order joint trains every width and depth from the
rewired teacher in one stage, for as many updates as the paper's two stages make."""

from __future__ import annotations

import json

import pytest

from dynastudio.core import jobs, stages
from dynastudio.core.config import ConfigError, ProjectConfig
from dynastudio.core.distill import total_steps
from dynastudio.core.events import EventLog
from dynastudio.core.prepare import new_project, prepare_inputs
from dynastudio.core.project import Project
from dynastudio.core.requests import RunRequest
from helpers import tiny_project_config


def test_joint_skips_the_width_stage_and_distils_the_teacher_for_both_stages_updates(
    tiny_model_dir, tiny_task_files, tmp_path, monkeypatch
):
    cfg = tiny_project_config(
        tiny_model_dir, *tiny_task_files, teacher_epochs=1, width_epochs=1, depth_epochs=2, stage_order="joint"
    )
    project = new_project(tmp_path / "p", cfg)
    sources = []
    real = stages._distill
    monkeypatch.setattr(
        stages, "_distill", lambda p, stage, source, *a: sources.append(source) or real(p, stage, source, *a)
    )
    jobs.run("run", project, RunRequest(until="evaluate"), EventLog(), None)
    p = Project.open(project.root)
    assert p.stage_info("width")["skipped"] and not p.has_model("width")
    assert p.missing_output("width") is None  # a skipped width stage is not a lost one
    assert sources == ["rewired"]  # the teacher, not a width model
    rows = len(prepare_inputs(p).student_rows)
    assert p.stage_info("depth")["steps"] == total_steps(rows, cfg.train.batch_size, 3.0)[0]  # 1 + 2 epochs
    assert p.results_path.is_file()


def test_the_stage_order_is_checked():
    raw = json.loads(ProjectConfig().to_json())
    raw["train"]["stage_order"] = "depth-first"
    with pytest.raises(ConfigError, match="train.stage_order: 'depth-first' must be one of paper, joint"):
        ProjectConfig.from_json(json.dumps(raw))
