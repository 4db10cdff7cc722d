"""Issue 15's engine changes: the importance rows train the students, RoBERTa warms up by default, and a teacher
that learned nothing is called out before distillation."""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dynastudio.core import jobs
from dynastudio.core.config import profile_config, warmup_for
from dynastudio.core.errors import Cancelled, ProjectError
from dynastudio.core.evaluate import constant_logits, suggested_teacher_settings, teacher_check
from dynastudio.core.events import EventLog, LogMessage, StageStarted, StepEnded, StopToken, TeacherChecked
from dynastudio.core.prepare import new_project, prepare_inputs
from dynastudio.core.project import Project
from dynastudio.core.requests import RunRequest
from helpers import FILLER, tiny_config, tiny_project_config, tiny_sentences, write_tsv


def run_pipeline(project, events=None, stop=None, until=None):
    return jobs.run("run", project, RunRequest(until=until), events or EventLog(), stop)


def _started(log: EventLog, stage: str) -> StageStarted:
    return next(e for e in log.of(StageStarted) if e.stage == stage)


def _rows(enc) -> list[tuple]:
    return [tuple(int(i) for i in r) for r in enc.input_ids]


# ---- the importance rows ------------------------------------------------------------------------
@pytest.mark.parametrize("reuse", [True, False])
def test_importance_rows_train_the_students_but_never_the_teacher(tiny_model_dir, tiny_task_files, tmp_path, reuse):
    cfg = tiny_project_config(
        tiny_model_dir, *tiny_task_files, teacher_epochs=1, width_epochs=1, reuse_importance_rows=reuse
    )
    project = new_project(tmp_path / "p", cfg)
    log = EventLog()
    run_pipeline(project, log, until="width")
    inputs = prepare_inputs(project)
    train, held = _rows(inputs.train), _rows(inputs.heldout)
    assert len(held) == 19 and len(train) == 192 - 19  # 10 % of the 192 rows, fewer than importance_examples
    assert not set(held) & set(train)  # the teacher's rows never include the importance rows
    students = _rows(inputs.student_rows)
    assert students == (train + held if reuse else train)
    assert list(inputs.student_rows.labels) == list(inputs.train.labels) + (
        list(inputs.heldout.labels) if reuse else []
    )
    bs = cfg.train.batch_size
    assert _started(log, "finetune").total_steps == math.ceil(len(train) / bs)
    assert _started(log, "width").total_steps == math.ceil(len(students) / bs)


def test_importance_rows_stay_out_when_importance_is_scored_on_dev(tiny_model_dir, tiny_task_files, tmp_path):
    cfg = tiny_project_config(tiny_model_dir, *tiny_task_files, importance_split="dev")
    inputs = prepare_inputs(new_project(tmp_path / "p", cfg))
    assert inputs.student_rows is inputs.train  # dev rows never train anything


def test_a_checkpoint_made_for_other_rows_is_refused(tiny_model_dir, tiny_task_files, tmp_path):
    """Turning reuse_importance_rows off mid-stage changes the row count: the stage must restart, not resume
    a different schedule silently."""
    cfg = tiny_project_config(tiny_model_dir, *tiny_task_files, teacher_epochs=1, width_epochs=2, checkpoint_every=2)
    project = new_project(tmp_path / "p", cfg)
    run_pipeline(project, until="rewire")
    stop = StopToken()

    def sink(e):
        if isinstance(e, StepEnded) and e.stage == "width" and e.step == 3:
            stop.set()

    with pytest.raises(Cancelled):
        run_pipeline(project, sink, stop, until="width")
    assert project.load_checkpoint("width") is not None
    raw = json.loads((project.root / "project.json").read_text())
    raw["train"]["reuse_importance_rows"] = False
    (project.root / "project.json").write_text(json.dumps(raw))
    with pytest.raises(
        ProjectError, match=r"checkpoints.*width.*written for 192 training rows.*now has 173.*delete it"
    ):
        run_pipeline(Project.open(project.root), until="width")


# ---- warm-up ------------------------------------------------------------------------------------
def test_warmup_default_follows_the_model_family():
    t = profile_config("quick")
    assert t.warmup_frac is None
    assert warmup_for(t, "roberta") == 0.06 and warmup_for(t, "xlm-roberta") == 0.06
    assert warmup_for(t, "bert") == 0.0
    assert warmup_for(replace(t, warmup_frac=0.0), "roberta") == 0.0
    assert warmup_for(replace(t, warmup_frac=0.1), "bert") == 0.1


def _roberta_model_dir(root: Path) -> Path:
    """A tiny RoBERTa folder with a byte-level BPE tokenizer trained on the tiny task's words."""
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import RobertaForSequenceClassification, RobertaTokenizerFast

    root.mkdir(parents=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        [s for s, _ in tiny_sentences(300, 5)] + FILLER,
        vocab_size=400,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )
    bpe.post_processor = RobertaProcessing(("</s>", 2), ("<s>", 0))
    bpe.save(str(root / "tokenizer.json"))
    tok = RobertaTokenizerFast(
        tokenizer_file=str(root / "tokenizer.json"),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
    )
    tok.save_pretrained(str(root))
    RobertaForSequenceClassification(tiny_config("roberta", vocab_size=len(tok))).save_pretrained(str(root))
    return root


@pytest.mark.parametrize(
    "kind,warmup_frac,warms_up",
    [
        ("roberta", None, True),
        ("roberta", 0.0, False),
        ("bert", None, False),
        ("bert", 0.25, True),
    ],
)
def test_the_warmup_setting_reaches_the_training_loop(
    tiny_model_dir, tiny_task_files, tmp_path, kind, warmup_frac, warms_up
):
    model_dir = _roberta_model_dir(tmp_path / "roberta") if kind == "roberta" else tiny_model_dir
    cfg = tiny_project_config(model_dir, *tiny_task_files, teacher_epochs=4, teacher_lr=1e-3, warmup_frac=warmup_frac)
    project = new_project(tmp_path / "p", cfg)
    log = EventLog()
    run_pipeline(project, log, until="finetune")
    steps = [e for e in log.of(StepEnded) if e.stage == "finetune"]
    total = steps[0].total_steps
    frac = warmup_frac if warmup_frac is not None else (0.06 if kind == "roberta" else 0.0)
    warmup = int(frac * total)
    assert (warmup > 0) == warms_up
    lrs = [e.lr for e in steps]
    if warms_up:
        # linear from lr/warmup up to lr over the warm-up steps, then linear decay
        assert lrs[:warmup] == pytest.approx([1e-3 * (i + 1) / warmup for i in range(warmup)])
        assert max(lrs) == pytest.approx(1e-3) and lrs.index(max(lrs)) == warmup - 1
    else:
        assert lrs[0] == pytest.approx(1e-3) and lrs == sorted(lrs, reverse=True)


# ---- a teacher that learned nothing -------------------------------------------------------------
def _noise_task(root: Path) -> tuple[Path, Path]:
    """Labels drawn independently of the text: no teacher can beat the majority class on dev."""
    rng = random.Random(7)
    train = [(s, rng.randint(0, 1)) for s, _ in tiny_sentences(192, 11)]
    dev = [(s, rng.randint(0, 1)) for s, _ in tiny_sentences(128, 12)]
    root.mkdir(parents=True, exist_ok=True)
    return write_tsv(root / "train.tsv", train), write_tsv(root / "dev.tsv", dev)


def test_teacher_check_compares_with_the_constant_prediction(tiny_model_dir, tiny_task_files, tmp_path):
    inputs = prepare_inputs(new_project(tmp_path / "p", tiny_project_config(tiny_model_dir, *tiny_task_files)))
    labels = np.asarray(inputs.dev.labels)
    const = constant_logits(inputs, len(labels))
    same = teacher_check(inputs, const)
    assert same["score"] == same["constant"] and not same["clearly_better"]
    assert "more training rows" in same["advice"] and "teacher_lr" in same["advice"]
    t = inputs.cfg.train
    lr, epochs = suggested_teacher_settings(t.teacher_lr, t.teacher_epochs)
    # concrete values to try, not only the names of the settings
    assert f"teacher_lr {lr:g} instead of {t.teacher_lr:g}" in same["advice"]
    assert f"teacher_epochs {epochs:g} instead of {t.teacher_epochs:g}" in same["advice"]
    assert suggested_teacher_settings(2e-5, 3.0) == (1e-4, 5.0)  # the paper profile's teacher: the rate that worked
    assert suggested_teacher_settings(3e-4, 6.0) == (pytest.approx(1e-4), 8.0)  # already high: lower, longer
    perfect = np.eye(2)[labels.astype(int)]
    good = teacher_check(inputs, perfect)
    assert good["clearly_better"] and good["score"] == 1.0 and good["margin_low"] > 0 and good["advice"] == ""
    # one row better than the constant is not "clearly" better
    one = const.copy()
    wrong = np.flatnonzero(const.argmax(1) != labels)[0]
    one[wrong] = perfect[wrong]
    assert not teacher_check(inputs, one)["clearly_better"]


@pytest.mark.slow
def test_a_teacher_that_learned_nothing_is_called_out_before_distillation(tiny_model_dir, tmp_path):
    cfg = tiny_project_config(tiny_model_dir, *_noise_task(tmp_path / "data"))
    project = new_project(tmp_path / "p", cfg)
    log = EventLog()
    run_pipeline(project, log, until="finetune")
    (check,) = log.of(TeacherChecked)
    assert not check.clearly_better and check.margin_low <= 0
    assert check.advice.startswith("the teacher scores") and "teacher_epochs" in check.advice
    assert any(e.level == "warning" and e.text == check.advice for e in log.of(LogMessage))
    saved = Project.open(project.root).stage_info("finetune")["teacher_check"]
    assert saved["clearly_better"] is False and saved["advice"] == check.advice
    # the CLI prints the warning where a user sees it (stderr, with the progress bars)
    (project.root / "models" / "teacher").rename(project.root / "teacher.old")
    out = subprocess.run(
        [sys.executable, "-m", "dynastudio.core.cli", "run", str(project.root), "--until", "finetune"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert (
        "[warning] the teacher scores" in out.stderr
        and "not clearly better than always predicting the majority" in out.stderr
    )
    status = subprocess.run(
        [sys.executable, "-m", "dynastudio.core.cli", "status", str(project.root)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "warning: the teacher scores" in status.stdout


@pytest.mark.slow
def test_following_the_advice_trains_the_teacher_again_and_every_stage_after_it(tiny_model_dir, tmp_path):
    """The warning says: edit the settings, delete the teacher, run again. A run stopped mid-width had left a width
    checkpoint and a finished rewire of the old teacher: neither may survive the new teacher (before, the width
    stage resumed the old teacher's checkpoint, and a later run skipped rewire as done)."""
    cfg = tiny_project_config(
        tiny_model_dir, *_noise_task(tmp_path / "data"), teacher_epochs=1, width_epochs=2, checkpoint_every=2
    )
    project = new_project(tmp_path / "p", cfg)
    log = EventLog()
    run_pipeline(project, log, until="evaluate")  # a whole run on the weak teacher: results.json exists
    assert project.results_path.is_file()
    stop = StopToken()

    def sink(e):
        if isinstance(e, StepEnded) and e.stage == "width" and e.step == 3:
            stop.set()

    (project.root / "models" / "width").rename(project.root / "width.old")  # redo width, stop it mid-stage
    with pytest.raises(Cancelled):
        run_pipeline(Project.open(project.root), sink, stop, until="width")
    assert Project.open(project.root).load_checkpoint("width") is not None
    (check,) = log.of(TeacherChecked)
    assert (
        f'edit "train" in {project.root / "project.json"}, delete {project.root / "models" / "teacher"}' in check.advice
    )
    assert f"`dynastudio run {project.root} --teacher-lr " in check.advice  # or the one-command way, for the rate
    raw = json.loads((project.root / "project.json").read_text())
    raw["train"]["teacher_epochs"] = 2
    (project.root / "project.json").write_text(json.dumps(raw))
    shutil.rmtree(project.root / "models" / "teacher")
    again = EventLog()
    run_pipeline(Project.open(project.root), again, until="finetune")
    p = Project.open(project.root)
    assert _started(again, "finetune").total_steps == 2 * math.ceil(173 / 16)  # the new setting reached the loop
    assert p.is_done("finetune") and not any(p.is_done(s) for s in ("rewire", "width", "depth", "evaluate"))
    assert p.load_checkpoint("width") is None and not p.results_path.exists()
    later = EventLog()
    run_pipeline(p, later, until="width")
    assert [e.stage for e in later.of(StageStarted)] == ["rewire", "width"]
    assert min(e.step for e in later.of(StepEnded) if e.stage == "width") == 1  # from the start, not resumed


def test_a_learning_teacher_passes_the_check(tiny_model_dir, tiny_task_files, tmp_path):
    project = new_project(tmp_path / "p", tiny_project_config(tiny_model_dir, *tiny_task_files))
    log = EventLog()
    run_pipeline(project, log, until="finetune")
    (check,) = log.of(TeacherChecked)
    assert check.clearly_better and check.score > check.constant and check.advice == ""
    assert not [e for e in log.of(LogMessage) if e.level == "warning"]


@pytest.mark.slow
def test_the_train_page_shows_a_banner_for_a_teacher_that_learned_nothing(
    qtbot, tiny_model_dir, tiny_task_files, tmp_path
):
    pytest.importorskip("PySide6")
    from dynastudio.studio.pages.train import TrainPage
    from dynastudio.studio.state import StudioState

    weak = new_project(tmp_path / "weak", tiny_project_config(tiny_model_dir, *_noise_task(tmp_path / "data")))
    run_pipeline(weak, until="finetune")
    fine = new_project(tmp_path / "fine", tiny_project_config(tiny_model_dir, *tiny_task_files))
    run_pipeline(fine, until="finetune")
    state = StudioState()
    page = TrainPage(state)
    qtbot.addWidget(page)
    page.show()
    state.open_project(weak.root)
    assert page.teacher_banner.isVisible()
    text = page.teacher_banner.text()
    assert "learned too little" in text and "more teacher epochs" in text
    state.open_project(fine.root)
    assert not page.teacher_banner.isVisible()
    # live: the event of a run in progress raises it too
    page._on_teacher_checked(TeacherChecked("accuracy", 0.5, 0.5, -0.05, False, "the teacher scores 0.5000 accuracy"))
    assert page.teacher_banner.isVisible()
    state.runner.shutdown()


def test_the_project_form_keeps_the_warmup_default_as_the_model_familys(qtbot):
    pytest.importorskip("PySide6")
    from dynastudio.studio.pages.hyperparams import HyperParams

    form = HyperParams()
    qtbot.addWidget(form)
    form.load(profile_config("quick"))
    box = form.editors["warmup_frac"]
    assert box.text() == "" and "RoBERTa" in box.placeholderText()
    assert form.values()["warmup_frac"] is None and form.values()["reuse_importance_rows"] is True
    box.setText("0.1")
    assert form.values()["warmup_frac"] == 0.1
