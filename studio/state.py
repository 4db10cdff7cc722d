"""The open project, the selected sub-network and the job runner, shared by every page (no computing here)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QStandardPaths, QTimer, Signal
from PySide6.QtWidgets import QMessageBox, QWidget

from dynastudio.core import registry, runs
from dynastudio.core.config import STAGES
from dynastudio.core.errors import ProjectError, UserError
from dynastudio.core.store import Grid, ProjectStore, atomic_write_text
from dynastudio.core.tensorfiles import load_arrays

from .style import fmt_seconds
from .worker import JobHandle, JobRunner, RunJob

# the workflow, in sidebar order
STEPS = ("project", "importance", "train", "explore", "export")
STEP_TITLES = {
    "project": "Project",
    "importance": "Importance",
    "train": "Train",
    "explore": "Explore",
    "export": "Export",
}


def will_skip(cfg, stage: str) -> bool:
    """A stage the settings skip (a "pending" bar there read as work still to come)."""
    if stage == "finetune-subnets":
        return cfg.train.subnet_epochs <= 0
    if stage == "int8-aware":
        return cfg.train.int8_epochs <= 0
    if stage == "width":
        return cfg.train.stage_order == "joint"
    return stage == "finetune" and bool(cfg.model_is_finetuned)


@dataclass(frozen=True)
class StageView:
    """A stage as the user should see it now. state: done, skipped, running, paused, pending or will skip."""

    state: str
    step: int | None = None
    total: int | None = None
    seconds: float | None = None

    def fraction(self) -> float | None:
        if self.state in ("done", "skipped"):
            return 1.0
        if self.step is not None and self.total:
            return min(1.0, self.step / self.total)
        return None if self.state in ("running", "paused") else 0.0

    def text(self) -> str:
        of = f" of {self.total}" if self.total else ""
        if self.state == "done":
            return f"done in {fmt_seconds(self.seconds)}" if self.seconds is not None else "done"
        if self.state == "running":
            return f"running, step {self.step}{of}" if self.step is not None else "running"
        if self.state == "paused":
            return f"paused at step {self.step}{of}" if self.step is not None else "paused (unreadable checkpoint)"
        return self.state


class RecentProjects:
    """A short most-recent-first list of project folders in a JSON file (DYNASTUDIO_CONFIG_DIR overrides where)."""

    def __init__(self, path: Path | None = None, limit: int = 8):
        if path is None:
            base = os.environ.get("DYNASTUDIO_CONFIG_DIR") or str(
                Path(
                    QStandardPaths.writableLocation(QStandardPaths.StandardLocation.GenericConfigLocation)
                    or Path.home()
                )
                / "dynastudio"
            )
            path = Path(base) / "recent.json"
        self.path = Path(path)
        self.limit = limit

    def load(self) -> list[str]:
        try:
            items = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []  # a missing or broken list is just an empty history
        return [p for p in items if isinstance(p, str) and (Path(p) / "project.json").is_file()][: self.limit]

    def add(self, folder: Path | str) -> list[str]:
        folder = str(Path(folder).resolve())
        items = [folder] + [p for p in self.load() if p != folder]
        try:
            atomic_write_text(self.path, json.dumps(items[: self.limit], indent=1))
        except OSError:
            pass  # an unwritable config folder must not stop anyone from opening a project
        return items[: self.limit]


def _ask_replace(parent: QWidget | None, running: JobHandle, new_title: str) -> bool:
    what = "A training is running" if running.trains else f"“{running.title}” is running"
    keep = (
        "It stops after the current step and saves a checkpoint; Resume on the Train page continues it."
        if running.trains
        else "It stops without saving its partial results."
    )
    answer = QMessageBox.question(
        parent,
        "Stop the running job?",
        f"{what}. Stop it and start “{new_title}”?\n\n{keep}",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes


class StudioState(QObject):
    projectChanged = Signal(object)  # ProjectStore | None: a different project was opened
    projectUpdated = Signal(object)  # ProjectStore: same project, files on disk changed (a job ended)
    selectionChanged = Signal(object)  # sub-network label | None
    recentChanged = Signal(object)  # list[str]
    liveChanged = Signal()  # the running job's stage or step moved (see stage_view)

    def __init__(self, parent: QObject | None = None, recent: RecentProjects | None = None):
        super().__init__(parent)
        self.runner = JobRunner(parent=self)
        self.recent = recent or RecentProjects()
        self.project: ProjectStore | None = None  # read through the store: the studio never loads torch
        self.selected: str | None = None
        # tests replace this; the real one asks with a dialog
        self.confirm_replace: Callable[[QWidget | None, JobHandle, str], bool] = _ask_replace
        self.live: dict[str, tuple[int, int | None]] = {}  # stage -> (step, total) of the running job
        # reload from disk after every stage and every job: they wrote state.json, results.json...
        self.runner.jobStarted.connect(self._follow)
        self.runner.jobEnded.connect(lambda _: self._job_ended())
        # a run started elsewhere (a terminal, another window) is followed as soon as it takes the project
        self._watch = QTimer(self)
        self._watch.setObjectName("runWatchTimer")
        self._watch.setInterval(1000)
        self._watch.timeout.connect(self.attach_live_run)

    # ---- jobs ------------------------------------------------------------------------------------
    def start_job(
        self, parent: QWidget | None, name: str, project: Path | str, request: Any = None, processes: int = 1
    ) -> JobHandle | None:
        """Start a registered job. When another job runs, ask first: None when the user keeps it running."""
        running = self.runner.current
        if running is not None:
            if not self.confirm_replace(parent, running, registry.JOBS[name].title):
                return None
            return self.runner.start(name, project, request, replace=True, processes=processes)
        return self.runner.start(name, project, request, processes=processes)

    def attach_live_run(self) -> JobHandle | None:
        """Follow the open project's run if one is going and nothing is followed yet (reopening a project)."""
        if self.project is None or self.runner.is_running():
            return None
        try:
            lock = runs.live_lock(self.project.root)
        except UserError:
            return None
        if lock is None or lock.job == "latency":
            return None
        return self.runner.attach(self.project.root)

    def running_job(self, name: str | None = None) -> JobHandle | None:
        h = self.runner.current
        return h if h is not None and (name is None or h.name == name) else None

    # ---- project -------------------------------------------------------------------------------
    def open_project(self, folder: Path | str) -> ProjectStore:
        """Open a project folder; raises UserError (ProjectError/ConfigError) with a one-line message."""
        # resolved once here: the title, the recent list and export folders then all name the same absolute path,
        # whatever the folder was given as (a relative `dynastudio gui demo`, a picked folder, a recent entry)
        project = ProjectStore.open(Path(folder).resolve())
        self.set_project(project)
        return project

    def set_project(self, project: ProjectStore | None) -> None:
        current = self.runner.current
        if isinstance(current, RunJob) and (
            project is None or current.project_root.resolve() != project.root.resolve()
        ):
            self.runner.detach()  # the other project's run goes on by itself; reopening it follows it again
        self.project = project
        self.selected = None
        if project is not None:
            self.recentChanged.emit(self.recent.add(project.root))
        self.projectChanged.emit(project)
        self.selectionChanged.emit(None)
        if project is not None:
            self.attach_live_run()
            self._watch.start()
        else:
            self._watch.stop()

    def reload(self) -> None:
        if self.project is None:
            return
        try:
            self.project = ProjectStore.open(self.project.root)
        except UserError:
            return  # keep the last good view; the job's own error dialog says what went wrong
        self.projectUpdated.emit(self.project)

    # ---- what the project holds (None when not there yet or unreadable) -----------------------
    def results(self, device: str | None = None) -> dict | None:
        """The grid as JSON (see grid()); with `device`, its latency is that device's (imported from a device kit)."""
        if self.project is None or not self.project.results_path.is_file():
            return None
        try:
            return self.project.load_results(device=device)
        except ProjectError:
            return None

    def grid(self, device: str | None = None) -> Grid | None:
        """The grid as typed rows, what the pages read; with `device`, that device's latency."""
        res = self.results() if device is None else self.results(device=device)
        return Grid.from_dict(res, device) if res is not None else None

    def importance(self) -> dict | None:
        if self.project is None or not self.project.importance_path.is_file():
            return None
        try:
            return {
                k: v.astype("float32")
                for k, v in load_arrays(self.project.importance_path, "the importance scores").items()
            }
        except ProjectError:
            return None

    def select(self, label: str | None) -> None:
        if label != self.selected:
            self.selected = label
            self.selectionChanged.emit(label)

    def stage_view(self, stage: str) -> StageView:
        """What a stage is at this moment: done (with its time), running (the running job's step), paused
        (the checkpoint's step of the total) or pending. Every page reads stage state from here."""
        p = self.project
        if p is None:
            return StageView("pending")
        info = p.stage_info(stage)
        if info.get("done"):
            return StageView(
                "skipped" if info.get("skipped") else "done", info.get("steps"), info.get("steps"), info.get("seconds")
            )
        if stage in self.live:
            done, total = self.live[stage]
            return StageView("running", done, total)
        ck = p.checkpoint_progress(stage)
        if ck is not None:
            return StageView("paused", *ck)
        if will_skip(p.config, stage):
            return StageView("will skip")
        return StageView("pending")

    def stage_status(self, stage: str) -> str:
        return self.stage_view(stage).text()

    def _follow(self, handle: JobHandle) -> None:
        """Keep `live` in step with a job's stage events, so views show the running stage and step."""
        b = handle.bridge

        def started(e):
            self.live[e.stage] = (e.resumed_from_step, e.total_steps or None)
            self.liveChanged.emit()

        def stepped(e):
            self.live[e.stage] = (e.step, e.total_steps)
            self.liveChanged.emit()

        def progressed(e):
            self.live[e.stage] = (e.done, e.total)
            self.liveChanged.emit()

        def ended(e):
            self.live.pop(e.stage, None)
            self.reload()  # the stage wrote state.json (and maybe importance, results): views re-read it
            self.liveChanged.emit()

        b.stageStarted.connect(started)
        b.progress.connect(stepped)
        b.stageProgress.connect(progressed)
        b.stageEnded.connect(ended)

    def _job_ended(self) -> None:
        self.live.clear()  # a stopped or failed job leaves its stage paused or pending: read from disk
        self.reload()
        self.liveChanged.emit()

    def all_done(self) -> bool:
        return self.project is not None and all(self.project.is_done(s) for s in STAGES)

    # ---- the workflow gate -----------------------------------------------------------------------
    def blocked_reason(self, step: str) -> str | None:
        """Why a step cannot be used yet and what to do first; None when it can."""
        if step == "project":
            return None
        if self.project is None:
            return "No project is open. Create a new project or open one on the Project page first."
        if step == "train":
            return None
        if step == "importance":
            if not self.project.importance_path.is_file():
                return (
                    "The importance scores are computed by the rewire stage, which has not run yet. "
                    "Start training on the Train page (it runs finetune, then rewire)."
                )
            return None
        if self.results() is None:
            return (
                "There are no results yet: every sub-network is scored by the evaluate stage, the last one. "
                "Run the training to the end on the Train page."
            )
        return None
