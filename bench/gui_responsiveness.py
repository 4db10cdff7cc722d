"""How responsive the studio's GUI thread stays while a training runs: the longest gap between ticks of a 10 ms timer.

    python bench/gui_responsiveness.py [--model minilm|tiny] [--seconds 60]

The main window is opened offscreen on the Train page (so the live curves, progress bars and log
really repaint), a 10 ms QTimer on the GUI thread records when it fires, first with nothing running
(the baseline) and then while the pipeline trains in the child process the Train page starts, side by
side in one run. The project is made in a separate process, so the measured GUI process holds only what
the studio itself imports (no torch).
A gap is the time between two ticks; 10 ms is perfect, anything under 100 ms feels instant.
Results go to bench/results/gui_responsiveness.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import numpy as np  # noqa: E402

TICK_MS = 10


def make_project(kind: str, scratch: Path) -> Path:
    """Create the project in a child process (this one must not load the engine); returns its folder."""
    import subprocess

    code = f"import sys; sys.path[:0] = {[str(REPO), str(REPO / 'tests')]!r}; from gui_responsiveness import _make; _make({kind!r}, {str(scratch)!r})"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(REPO / "bench"))
    return scratch / "project"


def _make(kind: str, scratch: str):
    from dynastudio.core.config import DataConfig, ProjectConfig, profile_config
    from dynastudio.core.prepare import new_project

    scratch = Path(scratch)

    if kind == "tiny":
        from helpers import make_tiny_model_dir, tiny_project_config, tiny_sentences, write_tsv

        model = make_tiny_model_dir(scratch / "tiny-model")
        train = write_tsv(scratch / "train.tsv", tiny_sentences(2000, 1))
        dev = write_tsv(scratch / "dev.tsv", tiny_sentences(128, 2))
        cfg = tiny_project_config(model, train, dev, teacher_epochs=50)
    else:
        # the demo model on a slice of the demo set: real MiniLM steps, a run that lasts about a minute
        cfg = ProjectConfig(
            model="builtin:minilm",
            data=DataConfig(kind="demo"),
            train=profile_config("quick", max_train_examples=320, checkpoint_every=20),
            name="bench",
        )
    return new_project(scratch / "project", cfg)


class TickRecorder:
    def __init__(self, app):
        from PySide6.QtCore import Qt, QTimer

        self.app = app
        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def worst(self, n: int = 5) -> list[tuple[float, float]]:
        """(seconds since recording began, gap ms) of the n longest gaps, by time."""
        t = np.asarray(self.ticks)
        if t.size < 2:
            return []
        g = np.diff(t)
        idx = sorted(np.argsort(g)[-n:])
        return [(round(float(t[i] - t[0]), 2), round(float(g[i] * 1e3), 1)) for i in idx]

    def record(self, seconds: float, until=None) -> np.ndarray:
        from PySide6.QtCore import QEventLoop

        # QEventLoop.processEvents, not QApplication.processEvents: in PySide6 6.12 the latter drops a reference
        # to None on every call, and a process without torch has few enough of them to crash within seconds
        loop = QEventLoop()
        self.ticks = []
        self.timer.start()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end and not (until is not None and until()):
            # the real app runs app.exec(); processEvents in a loop is the same event dispatch
            loop.processEvents()
            time.sleep(0.001)
        self.timer.stop()
        return np.diff(np.asarray(self.ticks)) * 1e3


def summary(gaps: np.ndarray) -> dict:
    if gaps.size == 0:
        return {"ticks": 0}
    return {
        "ticks": int(gaps.size + 1),
        "max_ms": float(gaps.max()),
        "p99_ms": float(np.percentile(gaps, 99)),
        "p50_ms": float(np.median(gaps)),
        "over_100ms": int((gaps > 100).sum()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("minilm", "tiny"), default="minilm")
    ap.add_argument("--seconds", type=float, default=60.0, help="how long to measure during training")
    ap.add_argument("--idle-seconds", type=float, default=5.0)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    a = ap.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="dynastudio-bench-"))
    os.environ["DYNASTUDIO_CONFIG_DIR"] = str(scratch / "config")
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    from dynastudio.studio.app import MainWindow

    project_root = make_project(a.model, scratch)

    w = MainWindow()
    w.resize(1280, 820)
    w.show()
    w.pages["project"].open_folder(project_root)
    w.go_to("train")
    rec = TickRecorder(app)

    idle = rec.record(a.idle_seconds)
    state = w.state
    steps, first_step, handles = [], [], []

    def follow(handle) -> None:
        # every job has its own bridge: follow the training job the Train page starts
        if handle.name != "run":
            return
        handles.append(handle)
        handle.bridge.steps.connect(lambda batch: steps.extend(batch))
        handle.bridge.steps.connect(lambda batch: first_step or first_step.append(time.perf_counter()))

    state.runner.jobStarted.connect(follow)
    w.pages["train"].start()
    t0 = time.perf_counter()
    if not handles:
        raise SystemExit("the Train page did not start a training job")
    bridge = handles[0].bridge
    try:
        busy = rec.record(a.seconds, until=lambda: not state.runner.is_running())
        trained_s = time.perf_counter() - t0
        worst = rec.worst()
        finished = not state.runner.is_running()
    finally:  # the training is a process of its own: never leave it running
        state.runner.shutdown()
    w.close()

    result = {
        "model": a.model,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f}"
        if hasattr(os, "getloadavg")
        else platform.machine(),
        "training_in": "a child process (dynastudio run)",
        "gui_process_has_torch": "torch" in sys.modules,
        "tick_ms": TICK_MS,
        "bridge_interval_ms": bridge._timer.interval(),
        "idle": summary(idle),
        "training": summary(busy),
        "training_seconds": round(trained_s, 1),
        "training_finished": finished,
        "optimizer_steps": len(steps),
        # the first steps come after the worker loaded the data and the model: gaps before it are loading
        "first_step_after_s": round(first_step[0] - t0, 2) if first_step else None,
        "worst_gaps_at_s_ms": worst,
        "events": bridge.events_received,
        "flushes": bridge.flushes,
        "stages_done": [
            s
            for s in ("finetune", "rewire", "width", "depth", "evaluate")
            if json.loads((project_root / "state.json").read_text()).get("stages", {}).get(s, {}).get("done")
        ],
    }
    i, t = result["idle"], result["training"]
    lines = [
        f"GUI responsiveness, {a.model} model, {result['machine']}, training in a child process, "
        f"torch in the GUI process: {result['gui_process_has_torch']}",
        f"{'':<10} {'ticks':>7} {'max gap':>9} {'p99 gap':>9} {'median':>8} {'>100 ms':>8}",
        f"{'idle':<10} {i['ticks']:>7} {i['max_ms']:>7.1f}ms {i['p99_ms']:>7.1f}ms {i['p50_ms']:>6.1f}ms {i['over_100ms']:>8}",
        f"{'training':<10} {t['ticks']:>7} {t['max_ms']:>7.1f}ms {t['p99_ms']:>7.1f}ms {t['p50_ms']:>6.1f}ms {t['over_100ms']:>8}",
        f"max gap while training / idle: {t['max_ms'] / max(i['max_ms'], 1e-9):.1f}x; "
        f"{result['optimizer_steps']} optimizer steps in {result['training_seconds']} s, "
        f"{result['events']} events drawn in {result['flushes']} repaints",
        f"worst gaps (s after Start, ms): {worst}; first step drawn {result['first_step_after_s']} s after Start",
    ]
    print("\n".join(lines))
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "gui_responsiveness.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    md = [
        "# GUI responsiveness while training",
        "",
        "`python bench/gui_responsiveness.py` (main window offscreen on the Train page; a 10 ms timer on the GUI thread; "
        "gap = time between two ticks, 10 ms is perfect).",
        "",
        "```",
        *lines,
        "```",
        "",
    ]
    (a.out / "gui_responsiveness.md").write_text("\n".join(md), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
