"""Render a PNG of every studio page on the demo project (offscreen) into docs/screenshots/.

    python docs/make_screenshots.py [--project DIR] [--out docs/screenshots]

Without --project it creates the demo project in a temporary folder and runs the quick pipeline
through core (a few minutes on a CPU). Latency is measured through core if the results have none,
the Export page runs a real export into a scratch folder, and the Train page is shot while a
training really runs: the depth stage of a scratch copy is redone for a few steps, then stopped.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIZE = (1280, 820)  # MainWindow's default size
SMALL = (1280, 800)  # a common laptop screen, the other size every page is checked at


def ensure_demo(folder: Path | None, scratch: Path) -> Path:
    from dynastudio.core import jobs
    from dynastudio.core.prepare import new_project
    from dynastudio.core.project import Project
    from dynastudio.studio.pages.project import demo_config

    root = folder or scratch / "demo"
    if not (root / "project.json").is_file():
        print(f"creating the demo project in {root}", flush=True)
        new_project(root, demo_config("demo"))
    project = Project.open(root)
    if not project.is_done("evaluate"):
        from dynastudio.core.cli.progress import ProgressPrinter

        print("running the quick pipeline (a few minutes)…", flush=True)
        jobs.run("run", project, jobs.RunRequest(), ProgressPrinter())
    return root


def ensure_latency(root: Path, runs: int) -> None:
    from dynastudio.core import jobs
    from dynastudio.core.project import Project

    project = Project.open(root)
    if any(k.startswith("latency_") for r in project.load_results()["rows"] for k in r):
        return
    print(f"measuring latency ({runs} runs per sub-network)…", flush=True)
    jobs.run(
        "latency", project, jobs.LatencyRequest(batch=1, seq=None, threads=1, formats=("fp32",), runs=runs, warmup=3)
    )


def redo_from(root: Path, stage: str) -> None:
    """Forget `stage` and every stage after it in a project (state.json and their checkpoints), so `run` redoes them."""
    from dynastudio.core.config import STAGES
    from dynastudio.core.project import Project

    project = Project.open(root)
    for s in STAGES[STAGES.index(stage) :]:
        project.state.get("stages", {}).pop(s, None)
        project.clear_checkpoint(s)
    project._save_state()


def pump(app, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def wait_for(app, cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        app.processEvents()
        if cond():
            return True
        time.sleep(0.02)
    return False


def shoot(window, app, out: Path, name: str) -> None:
    """The window at its default size (NAME.png, what the README and the studio docs page show) and at 1280x800 (NAME-1280x800.png)."""
    for size, suffix in ((SIZE, ""), (SMALL, f"-{SMALL[0]}x{SMALL[1]}")):
        window.resize(*size)
        pump(app, 0.4)
        path = out / f"{name}{suffix}.png"
        got = (window.width(), window.height())
        if got != tuple(size):  # a page whose minimum size outgrew the screen: the picture would hide it
            print(f"warning: {name}: the window is {got[0]}x{got[1]}, not {size[0]}x{size[1]}", file=sys.stderr)
        window.grab().save(str(path))
        print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}", flush=True)
    window.resize(*SIZE)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, help="a trained demo project to use (it is not modified)")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    ap.add_argument("--latency-runs", type=int, default=20)
    ap.add_argument(
        "--live-steps", type=int, default=12, help="depth steps to run for the live Train shot (0: history only)"
    )
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="dynastudio-shots-"))
    os.environ["DYNASTUDIO_CONFIG_DIR"] = str(scratch / "config")  # leave the user's recent list alone

    # work on a copy: latency, exports and the live training write into the project
    src = ensure_demo(a.project, scratch)
    root = scratch / "demo-copy"
    shutil.copytree(src, root, ignore=shutil.ignore_patterns("exports", "checkpoints"))
    ensure_latency(root, a.latency_runs)

    from PySide6.QtWidgets import QApplication, QScrollArea

    app = QApplication.instance() or QApplication(sys.argv[:1])
    from dynastudio.studio.app import MainWindow

    w = MainWindow()
    w.resize(*SIZE)
    w.show()
    state = w.state

    # 1. Project: the new-project form on a local file, with the column pickers, preview and label counts
    pp = w.pages["project"]
    pp.tabs.setCurrentIndex(1)
    pp.form.folder.setText(str(Path.home() / "dynabert" / "reviews"))
    pp.form.task_files.setChecked(True)
    pp.form.train_file.setText(str(REPO / "core" / "demo" / "train.tsv"))
    pp.form.validate()
    w.go_to("project")
    scroll = pp.tabs.currentWidget().findChild(QScrollArea)
    if scroll is not None:
        scroll.ensureWidgetVisible(pp.form.label_counts, 0, 40)
    shoot(w, app, a.out, "1-project")

    pp.open_folder(root)
    w.go_to("project")
    pp.tabs.setCurrentIndex(0)  # the Current project tab: every stage with its time
    shoot(w, app, a.out, "1b-project-current")

    # 2. Importance
    w.go_to("importance")
    shoot(w, app, a.out, "2-importance")

    # 3. Train: redo the depth stage for a few steps on a scratch copy, shoot it live, stop it
    tp = w.pages["train"]
    if a.live_steps > 0:
        live = scratch / "live"
        shutil.copytree(root, live)
        redo_from(live, "depth")
        pp.open_folder(live)
        w.go_to("train")
        seen = []

        def follow(handle) -> None:  # each job has its own bridge: follow the training the Train page starts
            if handle.name == "run":
                handle.bridge.progress.connect(lambda e: seen.append(e) if e.stage == "depth" else None)

        state.runner.jobStarted.connect(follow)
        tp.start()
        state.runner.jobStarted.disconnect(follow)
        if not wait_for(app, lambda: len(seen) >= 1 and seen[-1].step >= a.live_steps, timeout=1800):
            print("warning: the live training did not reach its steps in time", file=sys.stderr)
        shoot(w, app, a.out, "3-train")
        tp.stop()
        wait_for(app, lambda: not state.runner.is_running(), timeout=600)
        shoot(w, app, a.out, "3b-train-paused")  # after Stop: the depth bar at its checkpoint's step
        pp.open_folder(root)
    else:
        w.go_to("train")
        shoot(w, app, a.out, "3-train")

    # 4. Explore: latency on the x axis, a budget, a selection
    ep = w.pages["explore"]
    w.go_to("explore")
    pump(app, 0.3)
    if len(ep.xs):
        from dynastudio.core.store import best_under

        lo, hi = float(ep.xs.min()), float(ep.xs.max())
        # select a cheaper pick than the budget's best, so both rings show
        pick = best_under(ep.points, lo + 0.2 * (hi - lo))
        if pick is not None:
            state.select(pick.label)
        ep.set_budget(lo + 0.45 * (hi - lo))
    shoot(w, app, a.out, "4-explore")

    # 5. Export: a real export of the selection, then the verification and the files
    xp = w.pages["export"]
    w.go_to("export")
    xp.target.setCurrentIndex(max(0, xp.target.findData("android")))
    xp.out.setText(str(scratch / "exports" / f"{state.selected or 'w1_d1'}-android"))
    xp._out_edited = True
    xp.start_export()
    wait_for(app, lambda: not state.runner.is_running(), timeout=900)
    shoot(w, app, a.out, "5-export")

    w.close()
    state.runner.shutdown()
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
