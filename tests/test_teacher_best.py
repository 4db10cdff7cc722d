"""The teacher kept is its best checkpoint by its score on the held-out train rows (issue 26), not the last one;
scored at each epoch's end and every TEACHER_EVAL_STEPS steps of a long epoch; a resumed run still knows the best."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dynastudio.core import jobs, stages
from dynastudio.core.errors import Cancelled
from dynastudio.core.events import EventLog, LogMessage
from dynastudio.core.prepare import new_project, prepare_inputs
from dynastudio.core.project import Project
from dynastudio.core.requests import RunRequest
from helpers import stopping_at, tiny_project_config


def _run(project, events=None, stop=None):
    return jobs.run("run", project, RunRequest(until="finetune"), events or EventLog(), stop)


def _scripted_scores(monkeypatch, scores: dict[int, float]):
    """The held-out score of each evaluation step as given, and the weights at each: {step: state_dict}."""
    weights: dict[int, dict] = {}
    steps: list[int] = []

    def score(self):
        step = self.model_step[0]
        steps.append(step)
        weights[step] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return scores.get(step, 0.0)

    real_consider = stages._BestTeacher.consider

    def consider(self, step):
        self.model_step = [step]
        return real_consider(self, step)

    monkeypatch.setattr(stages._BestTeacher, "score", score)
    monkeypatch.setattr(stages._BestTeacher, "consider", consider)
    return weights, steps


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_the_best_teacher_on_held_out_rows_is_kept_and_a_resume_remembers_it(
    tiny_model_dir, tiny_task_files, tmp_path, monkeypatch
):
    project = new_project(tmp_path / "p", tiny_project_config(tiny_model_dir, *tiny_task_files, teacher_epochs=3))
    inputs = prepare_inputs(project)
    per_epoch = -(-len(inputs.train) // 16)  # 173 rows in batches of 16: 11 steps
    weights, steps = _scripted_scores(monkeypatch, {per_epoch: 0.5, 2 * per_epoch: 0.9, 3 * per_epoch: 0.6})
    # stopped after the best (epoch 2) was saved, then resumed in a new run
    stop, seen, sink = stopping_at("finetune", 2 * per_epoch + 3)
    with pytest.raises(Cancelled):
        _run(project, sink, stop)
    assert steps == [per_epoch, 2 * per_epoch]
    assert (project.model_dir(stages.BEST_TEACHER) / "best.json").is_file()
    log = EventLog()
    _run(Project.open(project.root), log)
    assert steps == [per_epoch, 2 * per_epoch, 3 * per_epoch]
    p = Project.open(project.root)
    kept = p.stage_info("finetune")["teacher_kept"]
    assert kept == {
        "step": 2 * per_epoch,
        "heldout_score": 0.9,
        "last_step": 3 * per_epoch,
        "last_heldout_score": 0.6,
        "heldout_rows": len(inputs.heldout),
    }
    teacher = p.load_model("teacher").state_dict()
    assert _same(teacher, weights[2 * per_epoch]) and not _same(teacher, weights[3 * per_epoch])
    assert any(e.text.startswith(f"kept the teacher of step {2 * per_epoch}") for e in log.of(LogMessage))
    assert not p.model_dir(stages.BEST_TEACHER).exists()  # only while the stage runs


def test_long_epochs_are_scored_every_few_steps_and_the_last_is_kept_when_best(
    tiny_model_dir, tiny_task_files, tmp_path, monkeypatch
):
    monkeypatch.setattr(stages, "TEACHER_EVAL_STEPS", 4)
    project = new_project(tmp_path / "p", tiny_project_config(tiny_model_dir, *tiny_task_files, teacher_epochs=2))
    per_epoch = -(-len(prepare_inputs(project).train) // 16)
    total = 2 * per_epoch
    weights, steps = _scripted_scores(monkeypatch, {s: s / 100 for s in range(1, total + 1)})  # rising: last best
    _run(project)
    assert steps == sorted({*range(4, total + 1, 4), per_epoch, total})
    p = Project.open(project.root)
    kept = p.stage_info("finetune")["teacher_kept"]
    assert kept["step"] == kept["last_step"] == total
    assert _same(p.load_model("teacher").state_dict(), weights[total])


def test_the_held_out_score_uses_the_train_rows_the_teacher_never_saw_and_dev_only_reports(
    tiny_model_dir, tiny_task_files, tmp_path, monkeypatch
):
    project = new_project(tmp_path / "p", tiny_project_config(tiny_model_dir, *tiny_task_files, teacher_epochs=1))
    inputs = prepare_inputs(project)
    scored = []
    real = stages.predict

    def spy(model, enc, *a, **k):
        scored.append({tuple(r) for r in enc.input_ids})
        return real(model, enc, *a, **k)

    monkeypatch.setattr(stages, "predict", spy)
    _run(project)
    heldout = {tuple(r) for r in inputs.heldout.input_ids}
    dev = {tuple(r) for r in inputs.dev.input_ids}
    train = {tuple(r) for r in inputs.train.input_ids}
    assert heldout in scored and not heldout & train  # the best is chosen on rows the teacher never trained on
    kept = Project.open(project.root).stage_info("finetune")["teacher_kept"]
    assert kept["heldout_rows"] == len(inputs.heldout) and 0 <= kept["heldout_score"] <= 1
    assert all(s == dev for s in scored if s != heldout)  # the other scoring: the teacher check on dev, reporting

    # importance rows taken from dev: nothing held out of train to choose on, so the last teacher is kept as before
    other = new_project(
        tmp_path / "q",
        tiny_project_config(tiny_model_dir, *tiny_task_files, teacher_epochs=1, importance_split="dev"),
    )
    _run(other)
    assert Project.open(other.root).stage_info("finetune")["teacher_kept"] is None
    assert np.isfinite(Project.open(other.root).stage_info("finetune")["metrics"]["score"])


def _loops(monkeypatch) -> list:
    """Every train_loop the stages start: (stage, lr, rows, steps)."""
    from dynastudio.core.distill import total_steps

    seen = []
    real = stages.train_loop

    def spy(model, data, step_fn, s, **k):
        seen.append(
            (s.stage, s.lr, {tuple(r) for r in data.input_ids}, total_steps(len(data), s.batch_size, s.epochs)[0])
        )
        return real(model, data, step_fn, s, **k)

    monkeypatch.setattr(stages, "train_loop", spy)
    return seen


def test_a_null_teacher_lr_is_chosen_by_a_short_trial_on_held_out_rows_and_kept_across_a_resume(
    tiny_model_dir, tiny_task_files, tmp_path, monkeypatch
):
    from dynastudio.core.config import TEACHER_LR_CANDIDATES

    cfg = tiny_project_config(tiny_model_dir, *tiny_task_files, teacher_epochs=3)
    project = new_project(
        tmp_path / "p", dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, teacher_lr=None))
    )
    inputs = prepare_inputs(project)
    loops = _loops(monkeypatch)
    stop, seen, sink = stopping_at("finetune", 5)
    with pytest.raises(Cancelled):
        _run(project, sink, stop)
    trials = [x for x in loops if x[0] == "finetune-lr-trial"]
    assert [x[1] for x in trials] == list(TEACHER_LR_CANDIDATES)
    total = 3 * -(-len(inputs.train) // 16)
    assert all(x[3] == max(1, total // 10) and x[2] == trials[0][2] for x in trials)  # same rows, same few steps
    heldout = {tuple(r) for r in inputs.heldout.input_ids}
    assert not trials[0][2] & heldout and trials[0][2] <= {tuple(r) for r in inputs.train.input_ids}
    (first,) = [x for x in loops if x[0] == "finetune"]
    chosen = first[1]
    assert chosen in TEACHER_LR_CANDIDATES
    said = [e.text for e in seen.of(LogMessage) if e.text.startswith("teacher_lr trial")]
    scores = {float(t.split(": ")[1].split(" ")[0]): float(t.split(" scores ")[1].split(" ")[0]) for t in said}
    assert chosen == max(TEACHER_LR_CANDIDATES, key=lambda lr: (scores[lr], -lr))  # the best held-out score

    # resumed: the same rate, no second trial
    loops.clear()
    _run(Project.open(project.root))
    assert [x[0] for x in loops] == ["finetune"] and loops[0][1] == chosen
    p = Project.open(project.root)
    trial = p.stage_info("finetune")["teacher_lr_trial"]
    assert trial["chosen"] == chosen and set(trial["candidates"]) == {f"{lr:g}" for lr in TEACHER_LR_CANDIDATES}
    assert trial["heldout_rows"] == len(inputs.heldout) and trial["seconds"] >= 0
    assert not p.model_dir(stages.LR_TRIAL).exists()


def test_a_teacher_lr_the_user_set_is_used_without_a_trial(tiny_model_dir, tiny_task_files, tmp_path, monkeypatch):
    project = new_project(
        tmp_path / "p", tiny_project_config(tiny_model_dir, *tiny_task_files, teacher_epochs=1, teacher_lr=3e-3)
    )
    loops = _loops(monkeypatch)
    _run(project)
    assert [(x[0], x[1]) for x in loops] == [("finetune", 3e-3)]
    assert Project.open(project.root).stage_info("finetune")["teacher_lr_trial"] is None
