"""Shared fixtures (the tiny model folder, the tiny task files, the studio window) and the suite's strictness checks;
the helpers they build on live in helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from helpers import make_tiny_model_dir, tiny_sentences, write_tsv

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_task_files(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tiny_task")
    return write_tsv(d / "train.tsv", tiny_sentences(192, 1)), write_tsv(d / "dev.tsv", tiny_sentences(64, 2))


class CliResult:
    """What a `dynastudio` command gave: exit code, stdout, stderr (named like subprocess's result)."""

    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys):
    """Run `dynastudio` in this process (no interpreter start-up): the same main() the entry point calls."""
    from dynastudio.core.cli import main

    def run(*args) -> CliResult:
        capsys.readouterr()
        rc = main([str(a) for a in args])
        out = capsys.readouterr()
        return CliResult(rc, out.out, out.err)

    return run


# ---- the studio ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path, monkeypatch):
    # recent projects go to a temp folder, never the developer's own list
    monkeypatch.setenv("DYNASTUDIO_CONFIG_DIR", str(tmp_path / "config"))
    # `dynastudio run` runs its stages in this process, where a test's monkeypatches reach them (each stage in a
    # child process of its own is tested in test_stage_processes.py)
    monkeypatch.setenv("DYNASTUDIO_ONE_PROCESS", "1")


@pytest.fixture
def window(qtbot):
    pytest.importorskip("PySide6")
    from dynastudio.studio.app import MainWindow

    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    yield w
    w.state.runner.shutdown()


# ---- strictness: a test fails when it leaves a thread or a timer running -------------------------
def _leftover_threads(before: set) -> list:
    import threading

    # ignored: tqdm's monitor (a daemon that outlives its bars by design); and Python's stand-ins for
    # threads it did not start (a QThread that ran Python code), which never report dead: the
    # QThreads themselves are checked below.
    return [
        t
        for t in threading.enumerate()
        if t not in before and t.is_alive() and type(t).__name__ not in ("TMonitor", "_DummyThread")
    ]


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
