"""The open project, the selected sub-network and the job runner, shared by every page (no computing here)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from typing import Any, Callable

from PySide6.QtCore import QObject, QStandardPaths, Signal
from PySide6.QtWidgets import QMessageBox, QWidget

from dynastudio.core import jobs
from dynastudio.core.config import STAGES
from dynastudio.core.errors import ProjectError, UserError
from dynastudio.core.project import Project, atomic_write_text

from .worker import JobHandle, JobRunner

# the workflow, in sidebar order
STEPS = ("project", "importance", "train", "explore", "export")
STEP_TITLES = {"project": "Project", "importance": "Importance", "train": "Train", "explore": "Explore", "export": "Export"}


class RecentProjects:
    """A short most-recent-first list of project folders in a JSON file (DYNASTUDIO_CONFIG_DIR overrides where)."""

    def __init__(self, path: Path | None = None, limit: int = 8):
        if path is None:
            base = os.environ.get("DYNASTUDIO_CONFIG_DIR") or str(Path(QStandardPaths.writableLocation(
                QStandardPaths.StandardLocation.GenericConfigLocation) or Path.home()) / "dynastudio")
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
    keep = ("It stops after the current step and saves a checkpoint; Resume on the Train page continues it."
            if running.trains else "It stops without saving its partial results.")
    answer = QMessageBox.question(
        parent, "Stop the running job?", f"{what}. Stop it and start “{new_title}”?\n\n{keep}",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


class StudioState(QObject):
    projectChanged = Signal(object)  # Project | None: a different project was opened
    projectUpdated = Signal(object)  # Project: same project, files on disk changed (a job ended)
    selectionChanged = Signal(object)  # sub-network label | None
    recentChanged = Signal(object)  # list[str]

    def __init__(self, parent: QObject | None = None, recent: RecentProjects | None = None):
        super().__init__(parent)
        self.runner = JobRunner(parent=self)
        self.recent = recent or RecentProjects()
        self.project: Project | None = None
        self.selected: str | None = None
        # tests replace this; the real one asks with a dialog
        self.confirm_replace: Callable[[QWidget | None, JobHandle, str], bool] = _ask_replace
        # reload from disk after every stage and every job: they wrote state.json, results.json...
        self.runner.jobStarted.connect(lambda h: h.bridge.stageEnded.connect(lambda _: self.reload()))
        self.runner.jobEnded.connect(lambda _: self.reload())

    # ---- jobs ------------------------------------------------------------------------------------
    def start_job(self, parent: QWidget | None, name: str, project: Path | str, request: Any = None) -> JobHandle | None:
        """Start a registered job. When another job runs, ask first: None when the user keeps it running."""
        running = self.runner.current
        if running is not None:
            if not self.confirm_replace(parent, running, jobs.JOBS[name].title):
                return None
            return self.runner.start(name, project, request, replace=True)
        return self.runner.start(name, project, request)

    def running_job(self, name: str | None = None) -> JobHandle | None:
        h = self.runner.current
        return h if h is not None and (name is None or h.name == name) else None

    # ---- project -------------------------------------------------------------------------------
    def open_project(self, folder: Path | str) -> Project:
        """Open a project folder; raises UserError (ProjectError/ConfigError) with a one-line message."""
        project = Project.open(Path(folder))
        self.set_project(project)
        return project

    def set_project(self, project: Project | None) -> None:
        self.project = project
        self.selected = None
        if project is not None:
            self.recentChanged.emit(self.recent.add(project.root))
        self.projectChanged.emit(project)
        self.selectionChanged.emit(None)

    def reload(self) -> None:
        if self.project is None:
            return
        try:
            self.project = Project.open(self.project.root)
        except UserError:
            return  # keep the last good view; the job's own error dialog says what went wrong
        self.projectUpdated.emit(self.project)

    # ---- what the project holds (None when not there yet or unreadable) -----------------------
    def results(self) -> dict | None:
        if self.project is None or not self.project.results_path.is_file():
            return None
        try:
            return self.project.load_results()
        except ProjectError:
            return None

    def importance(self) -> dict | None:
        if self.project is None or not self.project.importance_path.is_file():
            return None
        try:
            return {k: v.float().numpy() for k, v in self.project.load_importance().items()}
        except ProjectError:
            return None

    def select(self, label: str | None) -> None:
        if label != self.selected:
            self.selected = label
            self.selectionChanged.emit(label)

    def stage_status(self, stage: str) -> str:
        """'done', 'skipped', 'paused at step N' or 'pending'."""
        p = self.project
        if p is None:
            return "pending"
        info = p.stage_info(stage)
        if info.get("done"):
            return "skipped" if info.get("skipped") else "done"
        trainer = p.checkpoint_dir(stage) / "trainer.json"
        if trainer.is_file():
            try:
                return f"paused at step {json.loads(trainer.read_text(encoding='utf-8'))['step']}"
            except (OSError, ValueError, KeyError):
                return "paused"
        return "pending"

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
                return ("The importance scores are computed by the rewire stage, which has not run yet. "
                        "Start training on the Train page (it runs finetune, then rewire).")
            return None
        if self.results() is None:
            return ("There are no results yet: every sub-network is scored by the evaluate stage, the last one. "
                    "Run the training to the end on the Train page.")
        return None
