"""The studio's main window: a workflow sidebar (Project -> Importance -> Train -> Explore -> Export) over one page per step."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from PySide6.QtCore import QSize, QTimer
from PySide6.QtGui import QAction, QCloseEvent, QColor
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from .errors import install_excepthook
from .pages.train_parts import STAGE_TITLES
from .state import STEP_TITLES, STEPS, StudioState
from .style import BANNER_CSS
from .worker import RunJob

# the step a blocked step sends people to
PREREQUISITE = {"importance": "train", "train": "project", "explore": "train", "export": "train"}


# what the status bar says while a job runs: words, not the engine's stage names ("export: 1/5" said little)
JOB_TITLES = {
    **STAGE_TITLES,
    "export": "Exporting (Cancel on the Export page)",
    "latency": "Measuring latency",
    "device-kit": "Writing the device kit",
}


def job_text(stage: str, done: int, total: int, unit: str = "") -> str:
    """'Width distillation: step 12 of 50' / 'Exporting (...): 1 of 5'."""
    of = f"{unit} {done} of {total}" if unit else f"{done} of {total}"
    return f"{JOB_TITLES.get(stage, stage)}: {of}"


class BlockedPanel(QWidget):
    """Shown instead of a page that cannot be used yet: why, and a button to the step to do first."""

    def __init__(self, go_to, parent: QWidget | None = None):
        super().__init__(parent)
        self.reason = QLabel()
        self.reason.setObjectName("blockedReason")
        self.reason.setWordWrap(True)
        self.reason.setStyleSheet(BANNER_CSS)
        self.button = QPushButton()
        self.button.clicked.connect(lambda: go_to(self.target))
        self.target = "project"
        lay = QVBoxLayout(self)
        lay.addStretch(1)
        lay.addWidget(self.reason)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.button)
        row.addStretch(1)
        lay.addLayout(row)
        lay.addStretch(2)

    def show_reason(self, reason: str, target: str) -> None:
        self.reason.setText(reason)
        self.target = target
        self.button.setText(f"Go to {STEP_TITLES[target]}")


class MainWindow(QMainWindow):
    def __init__(self, state: StudioState | None = None):
        super().__init__()
        from .pages.explore import ExplorePage
        from .pages.export import ExportPage
        from .pages.importance import ImportancePage
        from .pages.project import ProjectPage
        from .pages.train import TrainPage

        self.state = state or StudioState(self)
        self.setWindowTitle("DynaBERT Studio")
        self.resize(1280, 820)
        self._closing = False
        # tests replace this; the real one asks with a dialog
        self.confirm_close = self._ask_close

        self.pages = {
            "project": ProjectPage(self.state),
            "importance": ImportancePage(self.state),
            "train": TrainPage(self.state),
            "explore": ExplorePage(self.state),
            "export": ExportPage(self.state),
        }
        self.sidebar = QListWidget()
        self.sidebar.setObjectName("sidebar")
        self.sidebar.setFixedWidth(190)
        self.sidebar.setIconSize(QSize(8, 8))
        f = self.sidebar.font()
        f.setPointSizeF(f.pointSizeF() * 1.15)
        self.sidebar.setFont(f)
        self.sidebar.setStyleSheet(
            "QListWidget { border: none; background: #f1f3f6; padding-top: 8px; }"
            "QListWidget::item { padding: 10px 12px; }"
            "QListWidget::item:selected { background: #dbe6f7; color: #000; }"
        )
        self.stack = QStackedWidget()
        self.slots: dict[str, QStackedWidget] = {}
        self.blocked: dict[str, BlockedPanel] = {}
        for i, step in enumerate(STEPS):
            slot = QStackedWidget()
            panel = BlockedPanel(self.go_to)
            slot.addWidget(self.pages[step])
            slot.addWidget(panel)
            self.slots[step], self.blocked[step] = slot, panel
            self.stack.addWidget(slot)
            self.sidebar.addItem(QListWidgetItem(f"{i + 1}   {STEP_TITLES[step]}"))
        self.sidebar.currentRowChanged.connect(self._on_step)

        central = QWidget()
        lay = QHBoxLayout(central)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self.sidebar)
        lay.addWidget(self.stack, 1)
        self.setCentralWidget(central)
        self.job_label = QLabel()
        self.statusBar().addPermanentWidget(self.job_label)
        self._build_menu()

        s = self.state
        s.projectChanged.connect(lambda _: self._refresh_steps())
        s.projectUpdated.connect(lambda _: self._refresh_steps())
        s.runner.busyChanged.connect(self._on_busy)
        s.runner.jobStarted.connect(self._follow_job)
        s.recentChanged.connect(self._fill_recent_menu)
        self.pages["project"].projectOpened.connect(self._on_project_opened)
        # a finished training moves on to its results, unless the user is busy on another page
        self.pages["train"].trainingFinished.connect(
            lambda: self.state.all_done() and self.current_step() == "train" and self.go_to("explore")
        )
        self._refresh_steps()
        self.sidebar.setCurrentRow(0)

    # ---- menu ----------------------------------------------------------------------------------
    def _build_menu(self) -> None:
        m = self.menuBar().addMenu("&File")
        for text, slot, key in (
            ("&New project", lambda: (self.go_to("project"), self.pages["project"].tabs.setCurrentIndex(1)), "Ctrl+N"),
            ("&Open project…", self.pages["project"]._pick_and_open, "Ctrl+O"),
            ("Open the &demo project", lambda: self.pages["project"].open_or_create_demo(Path("demo")), None),
        ):
            a = QAction(text, self)
            a.triggered.connect(slot)
            if key:
                a.setShortcut(key)
            m.addAction(a)
        self.recent_menu = m.addMenu("Open &recent")
        self._fill_recent_menu(self.state.recent.load())
        m.addSeparator()
        quit_action = QAction("&Quit", self)
        quit_action.setShortcut("Ctrl+Q")
        quit_action.triggered.connect(self.close)
        m.addAction(quit_action)

    def _fill_recent_menu(self, items: list[str]) -> None:
        self.recent_menu.clear()
        for p in items:
            a = QAction(p, self)
            a.triggered.connect(lambda _=False, p=p: self.pages["project"].open_folder(p))
            self.recent_menu.addAction(a)
        self.recent_menu.setEnabled(bool(items))

    # ---- navigation ----------------------------------------------------------------------------
    def go_to(self, step: str) -> None:
        self.sidebar.setCurrentRow(STEPS.index(step))

    def current_step(self) -> str:
        return STEPS[max(0, self.sidebar.currentRow())]

    def _on_step(self, row: int) -> None:
        if row < 0:
            return
        self.stack.setCurrentIndex(row)
        self._show_slot(STEPS[row])

    def blocked_reason_shown(self, step: str) -> bool:
        """True while `step` shows its "do this first" panel instead of the page."""
        return self.slots[step].currentIndex() == 1

    def _show_slot(self, step: str) -> None:
        reason = self.state.blocked_reason(step)
        slot = self.slots[step]
        if reason is None:
            slot.setCurrentIndex(0)
        else:
            self.blocked[step].show_reason(
                reason, "project" if self.state.project is None else PREREQUISITE.get(step, "project")
            )
            slot.setCurrentIndex(1)

    def _refresh_steps(self) -> None:
        for i, step in enumerate(STEPS):
            item = self.sidebar.item(i)
            reason = self.state.blocked_reason(step)
            item.setForeground(QColor("#999") if reason else QColor("#111"))
            item.setToolTip(reason or "")
            p = self.state.project
            done = p is not None and (
                step == "project"
                or (step == "importance" and p.is_done("rewire"))
                or (step == "train" and self.state.all_done())
            )
            item.setText(f"{i + 1}   {STEP_TITLES[step]}" + ("   ✓" if done else ""))
            self._show_slot(step)
        p = self.state.project
        self.setWindowTitle(f"DynaBERT Studio — {p.config.name} ({p.root})" if p else "DynaBERT Studio")

    def _on_project_opened(self, project) -> None:
        self.statusBar().showMessage(f"opened {project.root}", 5000)
        self.go_to("explore" if self.state.results() is not None else "train")

    def _follow_job(self, handle) -> None:
        self.job_label.setText(f"running: {handle.title}")
        handle.bridge.progress.connect(
            lambda e: self.job_label.setText(job_text(e.stage, e.step, e.total_steps, "step"))
        )
        handle.bridge.stageProgress.connect(lambda e: self.job_label.setText(job_text(e.stage, e.done, e.total)))

    def _on_busy(self, busy: bool) -> None:
        if not busy:
            self.job_label.setText("")
            if self._closing:
                self.close()

    # ---- closing -------------------------------------------------------------------------------
    def _ask_close(self, handle) -> str:
        """ "keep" (training goes on in the background), "stop" (stop, then close) or "cancel"."""
        box = QMessageBox(self)
        box.setIcon(QMessageBox.Icon.Question)
        if isinstance(handle, RunJob):
            box.setWindowTitle("Training is running")
            box.setText("A training is running. Keep it training in the background, or stop it?")
            box.setInformativeText(
                "In the background it goes on after this window closes; opening the project again "
                "shows it (or `dynastudio status`). Stop saves a checkpoint first: Resume continues "
                "from there."
            )
            keep = box.addButton("Keep training in the background", QMessageBox.ButtonRole.AcceptRole)
        else:
            box.setWindowTitle("A job is running")
            box.setText(f"“{handle.title}” is running. Stop it and quit?")
            keep = None
        stop = box.addButton("Stop and quit", QMessageBox.ButtonRole.DestructiveRole)
        cancel = box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(cancel)
        box.exec()
        return (
            {keep: "keep", stop: "stop"}.get(box.clickedButton(), "cancel")
            if box.clickedButton() is not None
            else "cancel"
        )

    def closeEvent(self, event: QCloseEvent) -> None:
        runner = self.state.runner
        if runner.is_running() and not self._closing:
            choice = self.confirm_close(runner.current)
            if choice == "cancel":
                event.ignore()
                return
            if choice == "keep" and isinstance(runner.current, RunJob):
                runner.detach()  # the run goes on by itself
            else:
                self._closing = True
        if not runner.is_running():
            for timer in self.findChildren(QTimer):  # a pending validation or repaint has nothing left to show
                timer.stop()
            self.pages["project"].form.shut_down()  # nor has a data file being read for the new-project form
            self.pages["train"].shut_down()  # nor has the estimate's timing of this machine
            event.accept()
            return
        # stop and close once the job has checkpointed and ended (busyChanged(False) calls close again)
        runner.cancel_all()
        self.statusBar().showMessage("Stopping: saving a checkpoint, then closing…")
        self.setEnabled(False)
        event.ignore()


def default_demo_dir() -> Path:
    return Path("demo")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dynastudio gui", description="Open DynaBERT Studio.")
    parser.add_argument("dir", nargs="?", help="a project folder to open (with --demo: where the demo lives)")
    parser.add_argument(
        "--demo", action="store_true", help="open the built-in demo project, creating it the first time"
    )
    parser.add_argument("--screenshot", metavar="PNG", help="save a picture of the window once it is shown, then quit")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if QApplication.instance() is None:
        from .platform_check import platform_problem

        if problem := platform_problem():  # Qt would abort with a core dump; say what to do instead
            print(f"error: {problem}", file=sys.stderr)
            return 2
    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "dynastudio"])
    app.setApplicationName("DynaBERT Studio")
    window = MainWindow()
    install_excepthook(lambda: window)
    # a quit that bypasses closeEvent (session end, Ctrl-C) stops a short job; a training goes on by itself
    app.aboutToQuit.connect(lambda: window.state.runner.shutdown(keep_run=True))
    window.show()
    page = window.pages["project"]
    if args.demo:
        folder = Path(args.dir) if args.dir else default_demo_dir()
        print(f"demo project: {folder.resolve()}", flush=True)
        page.open_or_create_demo(folder)
    elif args.dir:
        page.open_folder(args.dir)
    if args.screenshot:
        QTimer.singleShot(0, lambda: _screenshot_and_quit(window, Path(args.screenshot)))
    return app.exec()


def _screenshot_and_quit(window: MainWindow, path: Path) -> None:
    """Once the project (or the demo's creation) is done, save the window as a picture and quit: a set-up check."""
    if window.state.runner.is_running():
        QTimer.singleShot(200, lambda: _screenshot_and_quit(window, path))
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    ok = window.grab().save(str(path))
    project = window.state.project
    shown = f" (project {project.root}, page {window.current_step()})" if project is not None else " (no project open)"
    print(f"screenshot: {path.resolve()}{shown}" if ok else f"error: could not write {path}", flush=True)
    QApplication.instance().exit(0 if ok else 1)


if __name__ == "__main__":
    sys.exit(main())
