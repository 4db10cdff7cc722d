"""The teacher kept is its best checkpoint by its score on the held-out train rows (issue 26), not the last one;
scored at each epoch's end and every TEACHER_EVAL_STEPS steps of a long epoch; a resumed run still knows the best."""

from __future__ import annotations

import dataclasses
import json

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


def _script_trial_scores(monkeypatch, scores: list[float]) -> None:
    """The trial copies' held-out scores, in the order they are computed (each round's rates in order); every score
    after these is the real one."""
    scripted = list(scores)
    real = stages.compute_metric

    def metric(name, logits, labels):
        return {"score": scripted.pop(0)} if scripted else real(name, logits, labels)

    monkeypatch.setattr(stages, "compute_metric", metric)


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


def test_a_null_teacher_lr_is_chosen_by_a_trial_then_a_race_of_whole_teachers_and_kept_across_a_resume(
    tiny_model_dir, tiny_task_files, tmp_path, monkeypatch, cli
):
    from dynastudio.core.config import TEACHER_LR_CANDIDATES, TEACHER_LR_RACE
    from dynastudio.core.events import StepEnded, StopToken

    cfg = tiny_project_config(tiny_model_dir, *tiny_task_files, teacher_epochs=3)
    project = new_project(
        tmp_path / "p", dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, teacher_lr=None))
    )
    inputs = prepare_inputs(project)
    from dynastudio.core.estimate import estimate_pipeline

    planned = estimate_pipeline(project, timing=False).stage("finetune").steps
    # the tiny model's copies may all score alike after 3 steps, which makes the trial run longer (the next test);
    # here the first round's scores differ, so its one round is what the estimate counted
    _script_trial_scores(monkeypatch, [0.5, 0.75, 0.7, 0.6])
    loops = _loops(monkeypatch)
    # stopped in the second candidate's whole run
    stop, seen, fives = StopToken(), EventLog(), []

    def sink(event) -> None:
        seen(event)
        if isinstance(event, StepEnded) and event.stage == "finetune" and event.step == 5:
            fives.append(1)
            if len(fives) == 2:
                stop.set()

    with pytest.raises(Cancelled):
        _run(project, sink, stop)
    trials = [x for x in loops if x[0] == "finetune-lr-trial"]
    assert [x[1] for x in trials] == list(TEACHER_LR_CANDIDATES)
    total = 3 * -(-len(inputs.train) // 16)
    assert all(x[3] == max(1, total // 10) and x[2] == trials[0][2] for x in trials)  # same rows, same few steps
    heldout = {tuple(r) for r in inputs.heldout.input_ids}
    assert not trials[0][2] & heldout and trials[0][2] <= {tuple(r) for r in inputs.train.input_ids}
    said = [e.text for e in seen.of(LogMessage) if e.text.startswith("teacher_lr trial ")]
    scores = {float(t.split(": ")[1].split(" ")[0]): float(t.split(" scores ")[1].split(" ")[0]) for t in said}
    losses = json.loads((project.model_dir(stages.LR_TRIAL) / "trial.json").read_text())["losses"]
    assert set(losses) == {f"{lr:g}" for lr in TEACHER_LR_CANDIDATES}
    # the best held-out scores; a tie goes to the lower held-out loss, then to the lower rate
    race = sorted(TEACHER_LR_CANDIDATES, key=lambda lr: (-scores[lr], losses[f"{lr:g}"], lr))[:TEACHER_LR_RACE]
    whole = [x for x in loops if x[0] == "finetune"]
    assert [x[1] for x in whole] == race and all(x[3] == total for x in whole)  # each trains a whole teacher
    assert all(x[2] == {tuple(r) for r in inputs.train.input_ids} for x in whole)
    # the time estimate counted the trial's steps and every whole teacher's
    assert planned == sum(x[3] for x in trials) + sum(x[3] for x in whole)

    # resumed: no second trial, the finished candidate is not trained again, the second goes on from its checkpoint
    loops.clear()
    _run(Project.open(project.root))
    assert [(x[0], x[1]) for x in loops] == [("finetune", race[1])]
    p = Project.open(project.root)
    info = p.stage_info("finetune")
    trial = info["teacher_lr_trial"]
    assert set(trial["candidates"]) == {f"{lr:g}" for lr in TEACHER_LR_CANDIDATES}
    assert trial["race_rates"] == race and set(trial["race"]) == {f"{lr:g}" for lr in race}
    held = {float(k): v["heldout_score"] for k, v in trial["race"].items()}
    low, high = sorted(race)
    assert "margin_low" in trial["race"][f"{high:g}"]  # the higher rate's lead, at the bootstrap's lower bound
    assert trial["chosen"] == (high if trial["race"][f"{high:g}"]["margin_low"] > 0 else low)
    assert trial["heldout_rows"] == len(inputs.heldout) and trial["seconds"] >= trial["trial_seconds"] >= 0
    assert info["teacher_kept"] == trial["race"][f"{trial['chosen']:g}"]["kept"]
    teacher = p.load_model("teacher")
    assert stages._full_model_score(inputs, teacher, inputs.heldout) == pytest.approx(held[trial["chosen"]])
    assert not p.model_dir(stages.LR_TRIAL).exists() and p.checkpoint_progress("finetune") is None
    # `status` says what was chosen, and the whole teachers' scores
    out = cli("status", project.root).stdout
    assert f"teacher_lr {trial['chosen']:g} chosen by a trial" in out
    assert all(f"{k} {v['heldout_score']:.4f}" in out for k, v in trial["race"].items())


def test_a_teacher_lr_the_user_set_is_used_without_a_trial(tiny_model_dir, tiny_task_files, tmp_path, monkeypatch):
    project = new_project(
        tmp_path / "p", tiny_project_config(tiny_model_dir, *tiny_task_files, teacher_epochs=1, teacher_lr=3e-3)
    )
    loops = _loops(monkeypatch)
    _run(project)
    assert [(x[0], x[1]) for x in loops] == [("finetune", 3e-3)]
    assert Project.open(project.root).stage_info("finetune")["teacher_lr_trial"] is None


def test_teacher_lr_on_the_command_line_auto_or_a_rate_and_a_change_retrains_the_teacher(
    tiny_model_dir, tiny_task_files, tmp_path, cli, monkeypatch
):
    from test_cli import assert_user_error

    from dynastudio.core.events import StopToken

    train, dev = tiny_task_files
    files = ["--model", tiny_model_dir, "--train", train, "--dev", dev, "--text-columns", "sentence"]
    proj = tmp_path / "p"
    made = cli("new", proj, *files, "--label-column", "label", "--profile", "quick", "--teacher-lr", "auto")
    assert made.returncode == 0, made.stderr
    assert json.loads((proj / "project.json").read_text())["train"]["teacher_lr"] is None  # quick's own is 5e-5
    assert "teacher_lr: auto, a short trial of 2e-05, 5e-05, 0.0001, 0.0002" in made.stdout
    assert_user_error(cli("new", tmp_path / "q", *files, "--teacher-lr", "fast"), "--teacher-lr fast", "1e-4")
    assert not (tmp_path / "q").exists()
    # a finished teacher, then another rate: the teacher and everything after it are redone
    project = Project.open(proj)
    project.mark_done("finetune", {"seconds": 1.0})
    stop = StopToken()
    stop.set()  # the run starts and stops at once: the settings are saved before it trains
    monkeypatch.setattr("dynastudio.core.cli.pipeline.stop_on_sigint", lambda also_sigterm: (stop, {}))
    assert cli("run", proj).returncode == 130 and Project.open(proj).is_done("finetune")  # nothing changed
    assert cli("run", proj, "--teacher-lr", "3e-4").returncode == 130
    assert json.loads((proj / "project.json").read_text())["train"]["teacher_lr"] == 3e-4
    assert not Project.open(proj).is_done("finetune")
    assert_user_error(cli("run", proj, "--teacher-lr", "0"), "--teacher-lr 0")


def test_the_race_keeps_a_higher_rate_only_when_it_is_clearly_better_on_the_held_out_rows():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 600)
    right = np.stack([1 - labels, labels], 1).astype(np.float32)  # logits that predict every label
    wrong = right[:, ::-1].copy()

    def correct_on(fraction: float) -> np.ndarray:
        out = wrong.copy()
        out[: int(fraction * len(labels))] = right[: int(fraction * len(labels))]
        return out

    # 0.3 points ahead on 600 rows: noise, so the lower rate stays; 8 points ahead: the higher rate
    close = {1e-4: correct_on(0.820), 2e-4: correct_on(0.823)}
    chosen, lows = stages.race_winner("accuracy", labels, close)
    assert chosen == 1e-4 and lows[2e-4] <= 0
    clear = {1e-4: correct_on(0.82), 2e-4: correct_on(0.90), 5e-5: correct_on(0.95)}
    chosen, lows = stages.race_winner("accuracy", labels, clear)
    assert chosen == 5e-5 and set(lows) == {1e-4, 2e-4}  # the lowest rate is best by far: nothing beats it
    chosen, lows = stages.race_winner("accuracy", labels, {1e-4: correct_on(0.82), 2e-4: correct_on(0.90)})
    assert chosen == 2e-4 and lows[2e-4] > 0.05
    # a regression metric, the same way
    y = rng.normal(size=600).astype(np.float32)
    noisy = {1e-4: (y + rng.normal(scale=1.0, size=600))[:, None], 2e-4: (y + rng.normal(scale=0.3, size=600))[:, None]}
    assert stages.race_winner("pearson_spearman", y, noisy)[0] == 2e-4


def test_the_trial_loss_is_the_task_loss():
    labels = np.array([0, 1, 1])
    sure = np.array([[9.0, -9.0], [-9.0, 9.0], [-9.0, 9.0]])
    assert stages._task_loss(sure, labels, False) < 1e-6 < stages._task_loss(np.zeros((3, 2)), labels, False)
    assert stages._task_loss(np.zeros((3, 2)), labels, False) == pytest.approx(np.log(2))
    assert stages._task_loss(np.array([[1.0], [2.0]]), np.array([1.0, 4.0]), True) == pytest.approx(2.0)


@pytest.mark.parametrize("separates", [True, False])
def test_when_every_rate_scores_the_same_the_trial_runs_again_longer_up_to_a_quarter_of_the_teacher(
    tiny_model_dir, tiny_task_files, tmp_path, monkeypatch, cli, separates
):
    from dynastudio.core.config import TEACHER_LR_CANDIDATES, teacher_lr_trial_longer, teacher_lr_trial_steps

    cfg = tiny_project_config(tiny_model_dir, *tiny_task_files, teacher_epochs=4)
    project = new_project(
        tmp_path / "p", dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, teacher_lr=None))
    )
    inputs = prepare_inputs(project)
    total = 4 * -(-len(inputs.train) // 16)
    # the held-out score of each trial copy, scripted: every rate ties in the first round (as on CoLA, where every
    # copy still predicted the majority class); the second round ranks 1e-4 first and 5e-5 second, or ties again
    n = len(TEACHER_LR_CANDIDATES)
    _script_trial_scores(monkeypatch, [0.5] * n + ([0.6, 0.8, 0.9, 0.7] if separates else [0.5] * n))
    losses = []
    real_loss = stages._task_loss

    def loss(*a):
        losses.append(real_loss(*a))
        return losses[-1]

    monkeypatch.setattr(stages, "_task_loss", loss)
    loops = _loops(monkeypatch)
    seen = EventLog()
    _run(project, seen)

    base = teacher_lr_trial_steps(total)
    longer = teacher_lr_trial_longer(base, total)
    assert longer == 2 * base and teacher_lr_trial_longer(longer, total) is None  # this config allows one longer round
    trials = [x for x in loops if x[0] == "finetune-lr-trial"]
    assert [(x[1], x[3]) for x in trials] == [(lr, s) for s in (base, longer) for lr in TEACHER_LR_CANDIDATES]
    assert len(trials[-1][2]) == min(len(inputs.train), longer * 16) > len(trials[0][2])  # more rows too
    assert any("every rate scored 0.5000 after" in e.text for e in seen.of(LogMessage))
    trial = Project.open(project.root).stage_info("finetune")["teacher_lr_trial"]
    assert trial["steps_each"] == longer and trial["rounds"] == [
        {"steps": base, "scores": {f"{lr:g}": 0.5 for lr in TEACHER_LR_CANDIDATES}}
    ]
    if separates:
        assert trial["race_rates"] == [1e-4, 5e-5]
    else:  # tied to the end: the second round's held-out loss ranks them, then the lower rate
        last = dict(zip(TEACHER_LR_CANDIDATES, losses[n : 2 * n]))
        assert trial["race_rates"] == sorted(TEACHER_LR_CANDIDATES, key=lambda lr: (last[lr], lr))[:2]
    assert [x[1] for x in loops if x[0] == "finetune"] == trial["race_rates"]
    assert f"every rate tied after {base} steps" in cli("status", project.root).stdout


def test_the_trial_runs_longer_only_within_a_quarter_of_the_teacher():
    from dynastudio.core.config import teacher_lr_trial_longer

    assert teacher_lr_trial_longer(100, 1205) == 200  # CoLA's 5-epoch teacher: 200 steps is within 301
    assert teacher_lr_trial_longer(200, 1205) is None
    assert teacher_lr_trial_longer(72, 723) == 144 and teacher_lr_trial_longer(144, 723) is None
