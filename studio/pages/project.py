"""Project page: the open project and how far it got, the new-project form (new_project.py), opening a folder."""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QScrollArea,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from dynastudio.core.config import BUILTIN_MINILM, STAGES, DataConfig, ProjectConfig, profile_config
from dynastudio.core.errors import UserError
from dynastudio.core.store import TaskInfo, read_task

from ..errors import show_error
from ..state import StudioState
from .new_project import NewProjectForm


def demo_config(name: str = "demo") -> ProjectConfig:
    """The built-in demo: MiniLM on the synthetic sentiment set, quick profile (what `dynastudio new --demo` makes)."""
    return ProjectConfig(model=BUILTIN_MINILM, data=DataConfig(kind="demo"), train=profile_config("quick"), name=name)


class ProjectPage(QWidget):
    """Three tabs: the current project (settings, task, every stage's state), the new-project form, Open."""

    projectOpened = Signal(object)  # Project, after open or create

    def __init__(self, state: StudioState, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.creating_demo: Path | None = None  # the demo's folder while its create job runs
        self.form = NewProjectForm(state)
        self.form.created.connect(self.open_folder)
        self.tabs = QTabWidget()
        self.tabs.addTab(self._build_current(), "Current project")
        self.tabs.addTab(self.form, "New project")
        self.tabs.addTab(self._build_open(), "Open")
        QVBoxLayout(self).addWidget(self.tabs)

        state.projectChanged.connect(self._show_current)
        state.projectUpdated.connect(self._show_current)
        state.liveChanged.connect(lambda: self._show_current(state.project))  # the running stage and its step
        state.recentChanged.connect(self._fill_recent)
        self._show_current(state.project)
        self._fill_recent(state.recent.load())
        self.tabs.setCurrentIndex(0 if state.project is not None else 1)

    # ---- building ------------------------------------------------------------------------------
    def _build_current(self) -> QWidget:
        w = QWidget()
        self.current = QLabel()
        self.current.setObjectName("currentProject")
        self.current.setWordWrap(True)
        self.current.setTextFormat(Qt.TextFormat.RichText)
        self.current.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.current.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.current.setContentsMargins(16, 12, 16, 12)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.current)
        QVBoxLayout(w).addWidget(scroll)
        return w

    def _build_open(self) -> QWidget:
        w = QWidget()
        open_button = QPushButton("Open a project folder…")
        open_button.clicked.connect(self._pick_and_open)
        demo_button = QPushButton("Open the demo project (creates it in ./demo the first time)")
        demo_button.setObjectName("openDemo")
        demo_button.clicked.connect(lambda: self.open_or_create_demo(Path("demo")))
        self.recent = QListWidget()
        self.recent.setObjectName("recentProjects")
        self.recent.itemActivated.connect(lambda item: self.open_folder(item.data(Qt.ItemDataRole.UserRole)))
        lay = QVBoxLayout(w)
        row = QHBoxLayout()
        row.addWidget(open_button)
        row.addWidget(demo_button)
        row.addStretch(1)
        lay.addLayout(row)
        lay.addWidget(QLabel("Recent projects (double-click to open):"))
        lay.addWidget(self.recent, 1)
        return w

    # ---- open ----------------------------------------------------------------------------------
    def _pick_and_open(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Open a project folder")
        if d:
            self.open_folder(d)

    def open_or_create_demo(self, folder: Path) -> None:
        folder = Path(folder)
        if (folder / "project.json").is_file():
            self.open_folder(folder)
            return
        handle = self.form.create(folder, demo_config(folder.resolve().name or "demo"))
        if handle is None:
            return
        # a neutral "being made" page, not the empty New-project form (a first launch showed it, with a red
        # "Choose the folder ..." nobody had asked for)
        self.creating_demo = folder.resolve()
        handle.ended.connect(lambda _: self._demo_created())
        self.tabs.setCurrentIndex(0)
        self._show_current(self.state.project)

    def _demo_created(self) -> None:
        self.creating_demo = None
        self._show_current(self.state.project)

    def open_folder(self, folder) -> bool:
        running = self.state.running_job()
        if running is not None and running.name != "create":
            # the running job's events would land in the other project's views
            show_error(
                self.window(),
                UserError(
                    f"“{running.title}” is running in {running.project_root}: "
                    f"stop it first, then open the other project"
                ),
                "Cannot open the project",
            )
            return False
        try:
            project = self.state.open_project(folder)
        except UserError as exc:
            show_error(self.window(), exc, "Cannot open the project")
            return False
        except Exception as exc:  # an unreadable folder is still the user's file, never a crash
            show_error(self.window(), exc, "Cannot open the project")
            return False
        self.tabs.setCurrentIndex(0)
        self.projectOpened.emit(project)
        return True

    def closeEvent(self, event) -> None:
        self.form.shut_down()  # the form is a child: it gets no close event of its own
        super().closeEvent(event)

    # ---- current project -----------------------------------------------------------------------
    def _show_current(self, project) -> None:
        if self.creating_demo is not None:
            self.current.setText(
                f"<h3>Creating the demo project…</h3><p>in {html.escape(str(self.creating_demo))}: the built-in "
                "MiniLM on the synthetic movie-review set. Checking the data and tokenizing it takes a few seconds; "
                "the project opens by itself when it is ready.</p>"
            )
            return
        if project is None:
            self.current.setText(
                "<h3>No project open</h3><p>Create one on the <b>New project</b> tab, "
                "or open a folder (or the demo) on the <b>Open</b> tab.</p>"
            )
            return
        cfg = project.config
        d = cfg.data
        data = {
            "demo": "built-in demo set",
            "glue": f"GLUE {d.task}" + (f" from {d.data_dir}" if d.data_dir else ""),
            "files": f"{d.train} / {d.dev}, text {', '.join(d.text_columns)}, label {d.label_column}",
        }.get(d.kind, d.kind)
        if d.unlabeled:
            data += f"; unlabeled text {d.unlabeled}"
        task = self._task_info(project)

        def took(stage: str) -> str:
            view = self.state.stage_view(stage)
            return f"{view.total} steps" if view.state == "done" and view.total else ""

        rows = "".join(
            f"<tr><td>{s}</td><td>&nbsp;&nbsp;{html.escape(self.state.stage_status(s))}</td>"
            f"<td style='color:#666'>&nbsp;&nbsp;{took(s)}</td></tr>"
            for s in STAGES
        )
        t = cfg.train
        hp = ", ".join(
            f"{k} {v}"
            for k, v in (
                ("batch", t.batch_size),
                ("sequence", t.max_seq_length),
                ("epochs", f"{t.teacher_epochs:g}/{t.width_epochs:g}/{t.depth_epochs:g}"),
                (
                    "lr",
                    f"{'auto' if t.teacher_lr is None else format(t.teacher_lr, 'g')}/{t.width_lr:g}/{t.depth_lr:g}",
                ),
                ("augment", "auto" if t.augment is None else f"{t.augment} copies" if t.augment else "off"),
                ("widths", ",".join(f"{w:g}" for w in t.width_mults)),
                ("depths", ",".join(f"{x:g}" for x in t.depth_mults)),
                ("depth rule", t.depth_rule),
                ("stage order", t.stage_order),
            )
        )
        task_line = (
            (
                f"{task.name}: {task.train_rows} train / {task.dev_rows} dev rows, metric "
                f"{task.metric}, labels {', '.join(map(str, task.label_names)) or 'numeric'}"
            )
            if task
            else ""
        )
        self.current.setText(
            f"<h3>{html.escape(cfg.name)}</h3><p><b>Folder</b> {html.escape(str(project.root))}<br>"
            f"<b>Model</b> {html.escape(cfg.model)}{' (already fine-tuned)' if cfg.model_is_finetuned else ''}<br>"
            f"<b>Data</b> {html.escape(data)}<br>{html.escape(task_line)}<br>"
            f"<b>Profile</b> {t.profile}: {html.escape(hp)}</p>"
            f"<p><b>Stages</b></p><table>{rows}</table>"
            f"<p style='color:#666'>Next: the Train page runs (or resumes) every unfinished stage.</p>"
        )

    def _task_info(self, project) -> TaskInfo | None:
        """task.json, read once per project: it is written at creation only, and this tab redraws at every step."""
        cached = getattr(self, "_task_cache", None)
        if cached is not None and cached[0] == project.root:
            return cached[1]
        try:
            task = read_task(project.root)
        except UserError:
            return None  # not cached: a later redraw tries again (the stage views say what is wrong)
        self._task_cache = (project.root, task)
        return task

    def _fill_recent(self, items: list[str]) -> None:
        self.recent.clear()
        for p in items:
            item = QListWidgetItem(p)
            item.setData(Qt.ItemDataRole.UserRole, p)
            self.recent.addItem(item)
        if not items:
            placeholder = QListWidgetItem("(none yet)")
            placeholder.setFlags(Qt.ItemFlag.NoItemFlags)
            self.recent.addItem(placeholder)


if __name__ == "__main__":
    from ..preview import run_preview

    run_preview(ProjectPage)
