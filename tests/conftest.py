"""Shared fixtures: tiny random BERT/RoBERTa models and a tiny learnable text task, all built here."""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, os.cpu_count() or 1))

GOOD = ["good", "great", "fine", "lovely", "superb", "nice"]
BAD = ["bad", "awful", "poor", "dull", "boring", "ugly"]
FILLER = ["the", "a", "film", "movie", "plot", "was", "very", "quite", "and", "it", "story", "acting"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_sentences(n: int, seed: int) -> list[tuple[str, int]]:
    """Sentences whose label is whether a GOOD or BAD word appears: learnable in a few steps."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randint(0, 1)
        words = rng.choices(FILLER, k=rng.randint(3, 9))
        words.insert(rng.randint(0, len(words)), rng.choice(GOOD if label else BAD))
        rows.append((" ".join(words), label))
    return rows


def write_tsv(path: Path, rows: list[tuple[str, int]]) -> Path:
    path.write_text("sentence\tlabel\n" + "".join(f"{s}\t{l}\n" for s, l in rows), encoding="utf-8")
    return path


def tiny_config(kind: str = "bert", **overrides):
    from transformers import BertConfig, RobertaConfig

    vocab = len(SPECIAL) + len(GOOD) + len(BAD) + len(FILLER)
    base = dict(
        vocab_size=vocab + (4 if kind == "roberta" else 0), hidden_size=32, num_hidden_layers=4,
        num_attention_heads=4, intermediate_size=64, max_position_embeddings=72, num_labels=2,
        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
    )
    base.update(overrides)
    if kind == "roberta":
        return RobertaConfig(pad_token_id=1, **base)
    return BertConfig(**base)


def tiny_model(kind: str = "bert", seed: int = 0, **overrides):
    from transformers import BertForSequenceClassification, RobertaForSequenceClassification

    torch.manual_seed(seed)
    cls = RobertaForSequenceClassification if kind == "roberta" else BertForSequenceClassification
    return cls(tiny_config(kind, **overrides)).eval()


def make_tiny_model_dir(root: Path, layers: int = 4, **overrides) -> Path:
    """A local model folder (config, safetensors weights, WordPiece tokenizer) like a hub download."""
    from transformers import BertTokenizerFast

    root.mkdir(parents=True, exist_ok=True)
    (root / "vocab.txt").write_text("\n".join(SPECIAL + GOOD + BAD + FILLER) + "\n", encoding="utf-8")
    tok = BertTokenizerFast.from_pretrained(str(root))  # reads vocab.txt (v5 takes no vocab_file=)
    tok.save_pretrained(str(root))
    model = tiny_model(num_hidden_layers=layers, **overrides)
    model.save_pretrained(str(root))
    return root


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_task_files(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tiny_task")
    return write_tsv(d / "train.tsv", tiny_sentences(192, 1)), write_tsv(d / "dev.tsv", tiny_sentences(64, 2))


def tiny_project_config(model_dir: Path, train: Path, dev: Path, **train_overrides):
    from dynastudio.core.config import DataConfig, ProjectConfig, profile_config

    t = dict(
        batch_size=16, eval_batch_size=32, max_seq_length=32, teacher_epochs=8, teacher_lr=2e-3,
        width_epochs=1, width_lr=5e-4, depth_epochs=1, depth_lr=5e-4, importance_examples=32,
        checkpoint_every=4,
    )
    t.update(train_overrides)
    return ProjectConfig(
        model=str(model_dir),
        data=DataConfig(kind="files", train=str(train), dev=str(dev), text_columns=("sentence",), label_column="label"),
        train=profile_config("quick", **t),
        name="tiny",
    )


# ---- the studio ---------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path, monkeypatch):
    # recent projects go to a temp folder, never the developer's own list
    monkeypatch.setenv("DYNASTUDIO_CONFIG_DIR", str(tmp_path / "config"))


@pytest.fixture
def window(qtbot):
    pytest.importorskip("PySide6")
    from dynastudio.studio.app import MainWindow

    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    yield w
    w.state.runner.shutdown()


def register_test_job(monkeypatch, name: str, fn: str, trains: bool = False, request_type: str = "StageRequest"):
    """Put a job of tests/studio_jobs.py (`fn`, its function's name) into the registry, here and in the job
    child processes the studio starts, for this test."""
    import os

    from dynastudio.core import jobs, requests

    job = jobs.Job(name, f"studio_jobs:{fn}", getattr(requests, request_type), f"test job {name}", trains=trains,
                   opens_project=False)
    monkeypatch.setitem(jobs.JOBS, name, job)
    here = str(Path(__file__).resolve().parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("DYNASTUDIO_JOB_MODULES", "studio_jobs")
    specs = [s for s in os.environ.get("DYNASTUDIO_TEST_JOBS", "").split(",") if s]
    monkeypatch.setenv("DYNASTUDIO_TEST_JOBS", ",".join(specs + [f"{name}:{fn}:{request_type}:{int(trains)}"]))
    return job


# ---- strictness: a test fails when it leaves a thread or a timer running -------------------------
def _leftover_threads(before: set) -> list:
    import threading

    # ignored: tqdm's monitor (a daemon that outlives its bars by design); and Python's stand-ins for
    # threads it did not start (a QThread that ran Python code), which never report dead: the
    # QThreads themselves are checked below.
    return [t for t in threading.enumerate()
            if t not in before and t.is_alive() and type(t).__name__ not in ("TMonitor", "_DummyThread")]


def _active_timers() -> list:
    import sys

    if "PySide6.QtWidgets" not in sys.modules:
        return []
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None:
        return []
    timers = []
    for w in app.topLevelWidgets():
        timers += [t for t in w.findChildren(QTimer) if t.isActive()]
    return timers


@pytest.fixture(autouse=True)
def _no_leftover_threads_or_timers():
    import sys
    import threading
    import time

    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 10
    while _leftover_threads(before) and time.monotonic() < deadline:
        time.sleep(0.05)  # a thread told to stop gets a moment to end
    left = _leftover_threads(before)
    assert not left, f"the test left threads running: {[t.name for t in left]}"
    if "dynastudio.studio.worker" in sys.modules:
        from dynastudio.studio.worker import running_job_processes

        deadline = time.monotonic() + 10
        while running_job_processes() and time.monotonic() < deadline:
            time.sleep(0.05)  # a stopped job's process gets a moment to exit
        left = running_job_processes()
        assert not left, f"the test left job processes running: {left}"
    timers = _active_timers()
    assert not timers, f"the test left timers running: {[t.objectName() or repr(t) for t in timers]}"
