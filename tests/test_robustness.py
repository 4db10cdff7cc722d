"""Damaged projects, odd input and odd places: one line naming the file and the fix, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dynastudio.core.cli import main
from dynastudio.core.errors import DataError, ProjectError
from dynastudio.core.prepare import new_project
from dynastudio.core.project import Project
from helpers import tiny_project_config


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_model_dir, tiny_task_files) -> Project:
    return new_project(tmp_path_factory.mktemp("robust") / "p", tiny_project_config(tiny_model_dir, *tiny_task_files))


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = "\n".join(l for l in capsys.readouterr().err.strip().splitlines() if not l.startswith("[info]"))
    assert "Traceback" not in err and len(err.splitlines()) == 1, err  # progress lines aside, one line
    return err


@pytest.mark.parametrize(
    "text, says",
    [
        ("[]", "holds a JSON list"),
        ("null", "holds a JSON null"),
        ('"x"', "holds a JSON string"),
        ('{"schema_version": 2, "train": [1]}', "'train' is a JSON list"),
        ('{"schema_version": 2, "data": null}', "'data' is a JSON null"),
        ("[[[[" * 50000 + "]]]]" * 50000, "nested too deeply"),
    ],
)
def test_project_json_of_the_wrong_shape_is_one_line(made, tmp_path, capsys, text, says):
    import shutil

    shutil.copytree(made.root, tmp_path / "p")
    (tmp_path / "p" / "project.json").write_text(text)
    for cmd in ("status", "report"):
        err = _one_line_error(capsys, [cmd, str(tmp_path / "p")])
        assert str(tmp_path / "p" / "project.json") in err and says in err


@pytest.mark.parametrize(
    "field, value, says",
    [
        ("max_seq_length", 64.5, "64.5 is not a whole number"),
        ("batch_size", "32", "'32' is not a whole number"),
        ("seed", -1, "between 0 and"),
        ("width_lr", None, "None is not a number"),
        ("teacher_lr", "fast", "'fast' is not a number"),  # null is allowed: a trial chooses it
        ("checkpoint_minutes", 0, "more than 0"),
        ("max_train_examples", 2.5, "not a whole number"),
    ],
)
def test_hand_edited_settings_are_named_with_their_file(made, tmp_path, capsys, field, value, says):
    import shutil

    shutil.copytree(made.root, tmp_path / "p")
    path = tmp_path / "p" / "project.json"
    raw = json.loads(path.read_text())
    raw["train"][field] = value
    path.write_text(json.dumps(raw))
    err = _one_line_error(capsys, ["status", str(tmp_path / "p")])
    assert str(path) in err and f"train.{field}" in err and says in err


def test_state_and_results_of_the_wrong_shape_are_one_line(made, tmp_path, capsys):
    import shutil

    shutil.copytree(made.root, tmp_path / "p")
    (tmp_path / "p" / "state.json").write_text('{"stages": [1, 2]}')
    err = _one_line_error(capsys, ["status", str(tmp_path / "p")])
    assert "state.json: corrupted" in err
    (tmp_path / "p" / "state.json").write_text('{"stages": {}}')
    (tmp_path / "p" / "results.json").write_text("[1, 2]")
    err = _one_line_error(capsys, ["report", str(tmp_path / "p")])
    assert "results.json: corrupted" in err


def test_report_into_a_closed_pipe_ends_quietly(made):
    """`dynastudio report DIR | head -1`: the reader left; no BrokenPipeError traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dynastudio.core.cli", "status", str(made.root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # before the child has written anything: its first write meets a closed pipe
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in err, err


def test_non_finite_regression_labels_are_refused_with_their_line(tmp_path):
    from dynastudio.core.data.readers import read_table

    f = tmp_path / "scores.tsv"
    for bad in ("nan", "inf", "-Infinity"):
        f.write_text(f"sentence\tlabel\na good film\t0.5\na bad film\t{bad}\nfine\t2.25\n", encoding="utf-8")
        with pytest.raises(DataError, match=rf"line 3 has label '{bad}'.*not a finite number"):
            read_table(f, ("sentence",), "label")
    f.write_text("sentence\tlabel\na good film\t0.5\na bad film\t1.75\nfine\t2.25\n", encoding="utf-8")
    table, names, regression = read_table(f, ("sentence",), "label")
    assert regression and names is None and table.labels == [0.5, 1.75, 2.25]


def test_new_in_impossible_places_is_one_line(tiny_model_dir, tiny_task_files, tmp_path, monkeypatch):
    cfg = tiny_project_config(tiny_model_dir, *tiny_task_files)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ProjectError, match="exists and is not a folder"):
        new_project(tmp_path / "a-file", cfg)
    with pytest.raises(ProjectError, match="is a file, so no folder can be made under it"):
        new_project(tmp_path / "a-file" / "sub" / "p", cfg)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path / "locked" else real(p, mode))
    (tmp_path / "locked").mkdir()
    with pytest.raises(ProjectError, match="is not writable"):
        new_project(tmp_path / "locked" / "p", cfg)
    assert not (tmp_path / "locked" / "p").exists()


def test_new_overwrite_starts_from_nothing_of_the_old_project(made, tmp_path, tiny_model_dir, tiny_task_files):
    import shutil

    shutil.copytree(made.root, tmp_path / "p")
    root = tmp_path / "p"
    for d in ("models/depth", "checkpoints/depth", "exports/mine"):
        (root / d).mkdir(parents=True)
        (root / d / "f").write_text("old")
    (root / "results.json").write_text('{"rows": []}')
    (root / "metrics.jsonl").write_text("{}\n")
    p = new_project(root, tiny_project_config(tiny_model_dir, *tiny_task_files), overwrite=True)
    assert not (root / "models").exists() and not (root / "checkpoints").exists()
    assert not (root / "results.json").exists() and not (root / "metrics.jsonl").exists()
    assert (root / "exports" / "mine" / "f").read_text() == "old"  # the user's own exports stay
    assert not any(p.is_done(s) for s in ("finetune", "rewire", "width", "depth"))


def test_export_clears_temporary_folders_a_killed_export_left(tmp_path):
    from dynastudio.core.export.job import _remove_stale_temps

    out = tmp_path / "exp"
    old, fresh = tmp_path / ".exp.tmp-old", tmp_path / ".exp.tmp-fresh"
    for d in (old, fresh):
        d.mkdir()
        (d / "model.onnx").write_bytes(b"x" * 10)
    hour_ago = time.time() - 7200
    os.utime(old, (hour_ago, hour_ago))
    _remove_stale_temps(out)
    assert not old.exists() and fresh.exists()  # a fresh one may belong to an export running now


def test_checkpoints_come_by_the_clock_too(tiny_model_dir, tiny_task_files, tmp_path):
    """Slow steps and a large checkpoint_every: a kill would lose the whole stage; the clock bounds it."""
    import torch

    from dynastudio.core.distill import LoopSettings, train_loop
    from dynastudio.core.events import CheckpointSaved, EventLog, StopToken
    from dynastudio.core.prepare import prepare_inputs

    p = new_project(tmp_path / "p", tiny_project_config(tiny_model_dir, *tiny_task_files))
    inputs = prepare_inputs(p)
    model = p.load_model("teacher") if p.is_done("finetune") else None
    from helpers import tiny_model

    model = model or tiny_model()
    saved = []

    def step(m, batch, ctx):
        out = m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        out.loss.backward()
        time.sleep(0.02)
        return {"loss": out.loss.detach()}

    log = EventLog()
    settings = LoopSettings("width", 1, 1e-4, 32, 0, checkpoint_every=10_000, checkpoint_seconds=0.01)
    train_loop(
        model,
        inputs.train,
        step,
        settings,
        events=log,
        stop=StopToken(),
        device=torch.device("cpu"),
        pad_id=0,
        save_checkpoint=lambda step, total, *a: saved.append(step) or f"ckpt-{step}",
    )
    total = log.of(CheckpointSaved)
    assert saved and saved == [e.step for e in total] and saved == list(range(1, len(saved) + 1))


def _checkpoint(p: Project, step: int, scale: float = 1.0):
    import torch

    from helpers import tiny_model

    m = tiny_model()
    with torch.no_grad():
        for t in m.parameters():
            t.fill_(scale * step)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    return p.save_checkpoint("width", step, m, opt, {"stage": "width", "total_steps": 10})


def test_a_checkpoint_is_one_unit_and_a_torn_one_is_never_resumed(made, tmp_path):
    import shutil

    shutil.copytree(made.root, tmp_path / "p")
    p = Project.open(tmp_path / "p")
    d = _checkpoint(p, 2)
    _checkpoint(p, 4)
    ck = p.load_checkpoint("width")
    assert ck.step == 4 and float(next(iter(ck.model_state.values())).flatten()[0]) == 4.0
    assert [x.name for x in d.parent.iterdir()] == ["width"]  # nothing left beside it
    # what a kill between two file replacements left before: model step 6 beside optimizer and trainer step 4
    other = tmp_path / "other"
    other.mkdir()
    shutil.copytree(made.root, other / "q")
    q = Project.open(other / "q")
    newer = _checkpoint(q, 6)
    shutil.copyfile(newer / "model.safetensors", d / "model.safetensors")
    with pytest.raises(
        ProjectError, match=r"torn checkpoint \(trainer.json is at step 4, model.safetensors at step 6\)"
    ):
        p.load_checkpoint("width")


def test_a_swap_a_kill_interrupted_is_finished_on_the_next_load(made, tmp_path):
    import shutil

    shutil.copytree(made.root, tmp_path / "p")
    p = Project.open(tmp_path / "p")
    d = _checkpoint(p, 3)
    # killed after the old checkpoint moved aside and before the new one took its place
    os.replace(d, d.parent / ".width.old-123")
    newer = _checkpoint(p, 5)
    os.replace(newer, d.parent / ".width.new-abc")
    (d.parent / ".width.new-half").mkdir()  # and a half-written one: no trainer.json
    (d.parent / ".width.new-half" / "model.safetensors").write_bytes(b"partial")
    assert not d.exists()
    ck = p.load_checkpoint("width")
    assert ck.step == 5 and sorted(x.name for x in d.parent.iterdir()) == ["width"]
    p.clear_checkpoint("width")
    assert not list(d.parent.iterdir())


def test_a_run_removes_the_temp_files_a_killed_writer_left(made, tmp_path):
    import shutil

    from dynastudio.core.events import EventLog, LogMessage, StopToken
    from dynastudio.core.runs import RunSession

    shutil.copytree(made.root, tmp_path / "p")
    root = tmp_path / "p"
    (root / "models" / "rewired").mkdir(parents=True)
    junk = [
        root / "models" / "rewired" / ".model.safetensors.abc123.tmp",
        root / ".results.json.x1.tmp",
        root / "cache" / ".inputs.safetensors.q.tmp",
    ]
    for j in junk:
        j.write_bytes(b"x" * 100)
    keep = root / "models" / "rewired" / "model.safetensors"
    keep.write_bytes(b"real")
    log = EventLog()
    with RunSession(root, "run", log, StopToken()):
        pass
    assert not any(j.exists() for j in junk) and keep.read_bytes() == b"real"
    assert any("removed 3 temporary file(s)" in e.text for e in log.of(LogMessage))


def _enospc(*_a, **_k):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_keeps_the_previous_file_and_says_so(made, tmp_path, monkeypatch, capsys):
    """ENOSPC injected into the write path of each kind of writer: a one-line DiskFull, the old file intact,
    no temporary file left; once there is space again the same write works."""
    import shutil

    import safetensors.torch
    import torch

    from dynastudio.core.errors import DiskFull
    from dynastudio.core.store import atomic_write_text
    from dynastudio.core.tensorfiles import atomic_save_tensors

    shutil.copytree(made.root, tmp_path / "p")
    p = Project.open(tmp_path / "p")
    # text writers (results, state, project.json, trainer.json): the fsync of the temp file fails
    p.save_evaluation({"rows": [], "metric": "accuracy"})
    before = p.results_path.read_bytes()
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", _enospc)
        with pytest.raises(DiskFull, match="results.json: the disk is full"):
            p.save_evaluation({"rows": [{"label": "x"}]})
    assert p.results_path.read_bytes() == before and not list(p.root.glob(".*.tmp"))
    # tensor writers (models, checkpoints, importance, cache): safetensors reports the OS error its own way
    target = tmp_path / "t.safetensors"
    atomic_save_tensors(target, {"a": torch.ones(2)})
    with monkeypatch.context() as m:

        def full(*_a, **_k):
            raise safetensors.SafetensorError(
                "Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                'message: "No space left on device" })'
            )

        m.setattr(safetensors.torch, "save_file", full)
        with pytest.raises(DiskFull):
            atomic_save_tensors(target, {"a": torch.zeros(2)})
    # a checkpoint: the previous one stays whole, the half-written folder goes
    d = _checkpoint(p, 2)
    with monkeypatch.context() as m:
        m.setattr(safetensors.torch, "save_file", lambda *a, **k: _enospc())
        with pytest.raises(DiskFull):
            _checkpoint(p, 4)
    assert p.load_checkpoint("width").step == 2 and [x.name for x in d.parent.iterdir()] == ["width"]
    assert safetensors.torch.load_file(str(target))["a"].tolist() == [1.0, 1.0]
    atomic_write_text(tmp_path / "ok.txt", "space again")  # the same writers work once there is space
    assert (tmp_path / "ok.txt").read_text() == "space again"


def test_an_export_on_a_full_disk_leaves_nothing(made, tmp_path, monkeypatch, capsys):
    import shutil

    import dynastudio.core.export.job as ex
    from helpers import tiny_model

    shutil.copytree(made.root, tmp_path / "p")
    p = Project.open(tmp_path / "p")
    p.save_model("teacher", tiny_model(seed=3))
    p.mark_done("finetune", {})
    monkeypatch.setattr(ex, "write_format", lambda *a, **k: _enospc())
    err = _one_line_error(
        capsys,
        ["export", str(p.root), "--width", "1", "--depth", "1", "--format", "onnx", "--out", str(tmp_path / "out")],
    )
    assert "the disk is full" in err and str(tmp_path / "out") in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_following_the_advice_for_a_deleted_model_works(tiny_model_dir, tiny_task_files, tmp_path, capsys):
    """'delete it and run again' must work when followed: a stage whose output is gone is redone, with every
    stage after it, and nothing silently falls back to an earlier model meanwhile."""
    import shutil

    from dynastudio.core import jobs
    from dynastudio.core.stages import pending_stages
    from dynastudio.core.store import final_model_name

    p = new_project(
        tmp_path / "p",
        tiny_project_config(
            tiny_model_dir, *tiny_task_files, width_mults=(1.0, 0.5), depth_mults=(1.0, 0.5), teacher_epochs=1
        ),
    )
    jobs.run("run", p)
    assert pending_stages(p) == []
    shutil.rmtree(p.model_dir("depth"))
    assert pending_stages(p) == ["depth", "finetune-subnets", "int8-aware", "evaluate"]
    with pytest.raises(ProjectError, match=r"models/depth: the depth stage's output is missing: run `dynastudio run"):
        final_model_name(p)  # export and latency say so instead of taking the width model
    assert main(["status", str(p.root)]) == 0
    assert "depth             done, but" in capsys.readouterr().out
    p.results_path.unlink()
    out = jobs.run("run", Project.open(p.root))
    assert out.ran == ("depth", "finetune-subnets", "int8-aware", "evaluate")
    q = Project.open(p.root)
    assert final_model_name(q) == "depth" and len(q.load_results()["rows"]) == 4


def test_a_model_folder_without_its_vocabulary_is_refused(tmp_path, tiny_task_files):
    """transformers builds a tokenizer of the special tokens alone from tokenizer_config.json: all-[UNK] input."""
    from dynastudio.core.errors import ModelError
    from helpers import make_tiny_model_dir

    d = make_tiny_model_dir(tmp_path / "model")
    for f in ("vocab.txt", "tokenizer.json"):
        (d / f).unlink(missing_ok=True)
    with pytest.raises(ModelError, match=r"its tokenizer has 5 tokens but the model has \d+: the vocabulary file"):
        new_project(tmp_path / "p", tiny_project_config(d, *tiny_task_files))
    assert not (tmp_path / "p" / "project.json").exists()
