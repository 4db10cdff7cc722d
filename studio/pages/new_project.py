"""The new-project form: folder, model, task (column pickers, preview), profile and hyper-parameters, validated inline."""

from __future__ import annotations

import dataclasses
import html
import re
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from dynastudio.core.config import (
    BUILTIN_MINILM,
    PROFILES,
    DataConfig,
    ProjectConfig,
    profile_config,
    validate_train,
)
from dynastudio.core.data.columns import ColumnGuess, check_roles, guess_columns
from dynastudio.core.errors import UserError
from dynastudio.core.requests import CreateRequest

from ..errors import show_error
from ..state import StudioState
from ..style import HINT_CSS
from ..worker import ChildJob
from .form_parts import counts_line, error_label, guard_wheel, guess_text, picks_text, reserve_lines
from .hyperparams import HyperParams
from .table_reader import READ_APART_BYTES, StillReading, TableReader, file_sample

__all__ = ["NONE", "READ_APART_BYTES", "NewProjectForm", "file_sample"]  # READ_APART_BYTES: tests import it here

NONE = "(none)"


def glue_tasks() -> list[str]:
    from dynastudio.core.data.glue import GLUE_TASKS

    return list(GLUE_TASKS)


class NewProjectForm(QWidget):
    """The "New project" tab: every section checked as the user types, Create enabled once nothing is left to fix."""

    created = Signal(object)  # the new project's folder, once the create job has made it

    def __init__(self, state: StudioState, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.reader = TableReader(self)
        self.reader.done.connect(self.validate)
        self.reader.failed.connect(lambda info: show_error(self.window(), info, "Cannot read the data file"))
        self.errors: list[str] = []
        self._problem_fields: list[QWidget] = []  # the field to fix for each of self.errors, in the form's order
        self._guess: ColumnGuess | None = None  # what the rule made of the train file, while the pickers move
        self._guess_cols: list[str] = []
        self._from_form = False  # the running create job is the form's own (not the demo's)
        self._idle_note = ""  # what the status line says before the user has touched the form
        self._build()

        self._validate_timer = QTimer(self)
        self._validate_timer.setObjectName("validateTimer")
        self._validate_timer.setSingleShot(True)
        self._validate_timer.setInterval(250)  # files are re-read at most a few times a second while typing
        self._validate_timer.timeout.connect(self.validate)

        self.handle = None  # the create job this form started
        state.runner.busyChanged.connect(lambda _: self._update_create())
        self.hp.load(profile_config("quick"))
        self._on_kind_changed()
        # no red message before the user has typed anything (a first launch showed "Choose the folder ..." in red
        # while the demo was being created); any change, or Create, sets it
        self._touched = False
        self.wheel_guard = guard_wheel(self)

    # ---- building ------------------------------------------------------------------------------
    def _build(self) -> None:
        # --- where ---
        self.folder = QLineEdit()
        self.folder.setObjectName("newFolder")
        self.folder.setPlaceholderText("a new or empty folder, e.g. ~/dynabert/sentiment")
        folder_row = self._with_browse(self.folder, self._pick_folder)

        # --- model ---
        self.model_builtin = QRadioButton("Built-in MiniLM-L6-H384 (6 layers, 22 M parameters, no download)")
        self.model_local = QRadioButton("Local folder")
        self.model_hub = QRadioButton("Hugging Face hub id")
        self.model_builtin.setChecked(True)
        self.model_group = QButtonGroup(self)
        for b in (self.model_builtin, self.model_local, self.model_hub):
            self.model_group.addButton(b)
        self.model_dir = QLineEdit()
        self.model_dir.setObjectName("modelDir")
        self.model_dir.setPlaceholderText("a folder with config.json, weights and tokenizer files")
        self.model_id = QLineEdit()
        self.model_id.setObjectName("modelId")
        self.model_id.setPlaceholderText("e.g. bert-base-uncased (downloaded when the project is created)")
        self.finetuned = QCheckBox("Already fine-tuned on this task (skip the teacher fine-tuning)")
        model_box = QGroupBox("Model")
        mg = QGridLayout(model_box)
        mg.addWidget(self.model_builtin, 0, 0, 1, 2)
        mg.addWidget(self.model_local, 1, 0)
        mg.addLayout(self._with_browse(self.model_dir, lambda: self._pick_dir(self.model_dir)), 1, 1)
        mg.addWidget(self.model_hub, 2, 0)
        mg.addWidget(self.model_id, 2, 1)
        mg.addWidget(self.finetuned, 3, 0, 1, 2)
        self.model_error = error_label()
        mg.addWidget(self.model_error, 4, 0, 1, 2)

        # --- task ---
        self.task_demo = QRadioButton("Demo set (synthetic movie-review sentiment, 2 labels)")
        self.task_glue = QRadioButton("GLUE task")
        self.task_files = QRadioButton("Local files (CSV, TSV or JSONL)")
        self.task_demo.setChecked(True)
        self.task_group = QButtonGroup(self)
        for b in (self.task_demo, self.task_glue, self.task_files):
            self.task_group.addButton(b)
        self.glue = QComboBox()
        self.glue.addItems(glue_tasks())
        self.glue_dir = QLineEdit()
        self.glue_dir.setPlaceholderText("optional: a local GLUE folder (else downloaded with `datasets`)")
        self.train_file = QLineEdit()
        self.train_file.setObjectName("trainFile")
        self.dev_file = QLineEdit()
        self.dev_file.setObjectName("devFile")
        self.text_a, self.text_b, self.label_col = QComboBox(), QComboBox(), QComboBox()
        self.text_a.setObjectName("textColumn")
        self.text_b.setObjectName("textColumnB")
        self.label_col.setObjectName("labelColumn")
        task_box = QGroupBox("Task")
        tg = QGridLayout(task_box)
        tg.addWidget(self.task_demo, 0, 0, 1, 4)
        tg.addWidget(self.task_glue, 1, 0)
        tg.addWidget(self.glue, 1, 1)
        tg.addLayout(self._with_browse(self.glue_dir, lambda: self._pick_dir(self.glue_dir)), 1, 2, 1, 2)
        tg.addWidget(self.task_files, 2, 0, 1, 4)
        self.files_box = QWidget()
        fg = QGridLayout(self.files_box)
        fg.setContentsMargins(20, 0, 0, 0)
        fg.addWidget(QLabel("train file"), 0, 0)
        fg.addLayout(self._with_browse(self.train_file, lambda: self._pick_file(self.train_file)), 0, 1, 1, 5)
        fg.addWidget(QLabel("dev file"), 1, 0)
        fg.addLayout(self._with_browse(self.dev_file, lambda: self._pick_file(self.dev_file)), 1, 1, 1, 5)
        fg.addWidget(QLabel("text"), 2, 0)
        fg.addWidget(self.text_a, 2, 1)
        fg.addWidget(QLabel("second text (pairs)"), 2, 2)
        fg.addWidget(self.text_b, 2, 3)
        fg.addWidget(QLabel("label"), 2, 4)
        fg.addWidget(self.label_col, 2, 5)
        self.preview = QTableWidget(0, 2)
        self.preview.setObjectName("preview")
        self.preview.setHorizontalHeaderLabels(["text", "label"])  # until a file is read: not Qt's "1 2 3"
        self.preview.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.preview.verticalHeader().setVisible(False)
        self.preview.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.preview.verticalHeader().setDefaultSectionSize(22)
        self.preview.setMinimumHeight(120)
        self.preview.setMaximumHeight(210)
        self.label_counts = QLabel()
        self.label_counts.setObjectName("labelCounts")
        self.label_counts.setWordWrap(True)
        self.label_counts.setTextFormat(Qt.TextFormat.PlainText)  # label names come from the user's file
        self.column_note = QLabel()
        self.column_note.setObjectName("columnGuess")
        self.column_note.setWordWrap(True)
        self.column_note.setStyleSheet(HINT_CSS)
        reserve_lines(self.column_note, 1)
        reserve_lines(self.label_counts, 2)
        fg.addWidget(self.column_note, 3, 0, 1, 6)
        fg.addWidget(self.preview, 4, 0, 1, 6)
        fg.addWidget(self.label_counts, 5, 0, 1, 6)
        tg.addWidget(self.files_box, 3, 0, 1, 4)
        self.unlabeled_file = QLineEdit()
        self.unlabeled_file.setObjectName("unlabeledFile")
        self.unlabeled_file.setPlaceholderText(
            "optional: your unlabeled in-domain text (.txt one per line, or .csv/.tsv/.jsonl with the task's text "
            "columns); the width, depth and INT8-aware stages learn the teacher's outputs on it"
        )
        tg.addWidget(QLabel("unlabeled text"), 4, 0)
        tg.addLayout(self._with_browse(self.unlabeled_file, lambda: self._pick_file(self.unlabeled_file)), 4, 1, 1, 3)
        self.task_error = error_label()
        tg.addWidget(self.task_error, 5, 0, 1, 4)

        # --- training ---
        self.profile = QComboBox()
        self.profile.setObjectName("profile")
        for name in PROFILES:
            self.profile.addItem(name, name)
        self.profile.setCurrentText("quick")
        self.profile_help = QLabel(
            "quick: short runs for a CPU (sequence 64, 3/2/2 epochs); "
            "paper: the DynaBERT paper's settings (sequence 128, 3 epochs per stage, augmented rows for a small task)"
        )
        self.profile_help.setStyleSheet(HINT_CSS)
        self.profile_help.setWordWrap(True)
        self.hp = HyperParams()
        train_box = QGroupBox("Training")
        tl = QVBoxLayout(train_box)
        prow = QHBoxLayout()
        prow.addWidget(QLabel("profile"))
        prow.addWidget(self.profile)
        reset = QPushButton("Reset to the profile's defaults")
        reset.clicked.connect(self._on_profile)
        prow.addWidget(reset)
        prow.addStretch(1)
        tl.addLayout(prow)
        tl.addWidget(self.profile_help)
        tl.addWidget(self.hp)
        self.train_error = error_label()
        tl.addWidget(self.train_error)

        # --- create ---
        self.create_button = QPushButton("Create project")
        self.create_button.setObjectName("createProject")
        self.create_button.setMinimumHeight(32)
        self.create_button.clicked.connect(self.create_from_form)
        self.create_status = QLabel()
        self.create_status.setObjectName("createStatus")
        self.create_status.setWordWrap(True)
        self.create_status.setTextFormat(Qt.TextFormat.RichText)
        self.create_status.linkActivated.connect(lambda _: self.go_to_first_problem())
        where = QGroupBox("Folder")
        QVBoxLayout(where).addLayout(folder_row)
        self.folder_error = error_label()
        where.layout().addWidget(self.folder_error)

        inner = QWidget()
        il = QVBoxLayout(inner)
        for w in (where, model_box, task_box, train_box):
            il.addWidget(w)
        row = QHBoxLayout()
        row.addWidget(self.create_button)
        row.addWidget(self.create_status, 1)
        il.addLayout(row)
        il.addStretch(1)
        self.scroll_area = QScrollArea()
        self.scroll_area.setObjectName("newProjectScroll")
        self.scroll_area.setWidgetResizable(True)
        self.scroll_area.setWidget(inner)
        QVBoxLayout(self).addWidget(self.scroll_area)

        # any change re-validates (debounced)
        for w in (
            self.folder,
            self.model_dir,
            self.model_id,
            self.glue_dir,
            self.train_file,
            self.dev_file,
            self.unlabeled_file,
        ):
            w.textChanged.connect(self._schedule_validate)
        for b in (
            self.model_builtin,
            self.model_local,
            self.model_hub,
            self.task_demo,
            self.task_glue,
            self.task_files,
        ):
            b.toggled.connect(self._on_kind_changed)
        for c in (self.text_a, self.text_b, self.label_col, self.glue):
            c.currentIndexChanged.connect(self._schedule_validate)
        for c in (self.text_a, self.text_b, self.label_col):
            c.currentIndexChanged.connect(self._on_pick)
        self.finetuned.toggled.connect(self._schedule_validate)
        self.train_file.textChanged.connect(self._on_train_file)
        self.profile.currentIndexChanged.connect(self._on_profile)
        self.hp.changed.connect(self._schedule_validate)

    def _with_browse(self, edit: QLineEdit, pick) -> QHBoxLayout:
        row = QHBoxLayout()
        row.addWidget(edit, 1)
        b = QPushButton("Browse…")
        b.clicked.connect(pick)
        row.addWidget(b)
        return row

    # ---- pickers -------------------------------------------------------------------------------
    def _pick_folder(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Project folder")
        if d:
            self.folder.setText(d)

    def _pick_dir(self, edit: QLineEdit) -> None:
        d = QFileDialog.getExistingDirectory(self, "Choose a folder", edit.text())
        if d:
            edit.setText(d)

    def _pick_file(self, edit: QLineEdit) -> None:
        f, _ = QFileDialog.getOpenFileName(
            self, "Choose a data file", edit.text(), "Tables (*.csv *.tsv *.txt *.jsonl *.json);;All files (*)"
        )
        if f:
            edit.setText(f)

    def _on_kind_changed(self, *_):
        self.model_dir.setEnabled(self.model_local.isChecked())
        self.model_id.setEnabled(self.model_hub.isChecked())
        self.glue.setEnabled(self.task_glue.isChecked())
        self.glue_dir.setEnabled(self.task_glue.isChecked())
        self.files_box.setEnabled(self.task_files.isChecked())
        self.files_box.setVisible(self.task_files.isChecked())
        self._schedule_validate()

    def _on_profile(self, *_):
        self.hp.load(profile_config(self.profile.currentData() or "quick"))

    def _on_train_file(self, text: str) -> None:
        """New train file: offer its columns in the pickers, pre-selecting the loader's own guesses."""
        try:
            cols, rows = file_sample(text) if text.strip() and Path(text).is_file() else ([], [])
        except UserError:
            cols, rows = [], []
        guess = guess_columns(cols, rows) if cols else ColumnGuess((), None)
        a = guess.text[0] if guess.text else None
        b = guess.text[1] if len(guess.text) > 1 else None
        for combo, pick in ((self.text_a, a), (self.text_b, b), (self.label_col, guess.label)):
            combo.blockSignals(True)
            combo.clear()
            combo.addItem(NONE)  # nothing is picked unless the rule picked it: no column lands in a role by position
            combo.addItems(cols)
            combo.setCurrentText(pick or NONE)
            combo.blockSignals(False)
        self._guess, self._guess_cols = (guess if cols else None), cols
        self.column_note.setText(guess_text(guess, cols))
        if not self.dev_file.text().strip() and cols:
            # the usual layout: train.tsv beside dev.tsv
            p = Path(text)
            sibling = p.with_name(p.name.replace("train", "dev"))
            if sibling != p and sibling.is_file():
                self.dev_file.setText(str(sibling))
        self._schedule_validate()

    def _on_pick(self, *_) -> None:
        """A picker moved: the column line says what is picked now, not only what the file suggested."""
        if not self._guess_cols:
            return
        cfg = self.data_config()
        self.column_note.setText(
            picks_text(ColumnGuess(cfg.text_columns, cfg.label_column), self._guess, self._guess_cols)
        )

    # ---- validation ----------------------------------------------------------------------------
    def _schedule_validate(self, *_):
        self._touched = True
        self._validate_timer.start()

    def model_name(self) -> str:
        if self.model_local.isChecked():
            t = self.model_dir.text().strip()
            return str(Path(t).expanduser().resolve()) if t else ""
        if self.model_hub.isChecked():
            return self.model_id.text().strip()
        return BUILTIN_MINILM

    def data_config(self) -> DataConfig:
        data = self._task_config()
        u = self.unlabeled_file.text().strip()
        return dataclasses.replace(data, unlabeled=str(Path(u).expanduser().resolve()) if u else None)

    def _task_config(self) -> DataConfig:
        if self.task_demo.isChecked():
            return DataConfig(kind="demo")
        if self.task_glue.isChecked():
            d = self.glue_dir.text().strip()
            return DataConfig(
                kind="glue", task=self.glue.currentText(), data_dir=str(Path(d).expanduser()) if d else None
            )
        cols = tuple(c for c in (self.text_a.currentText(), self.text_b.currentText()) if c and c != NONE)
        label = self.label_col.currentText()
        tr, dv = self.train_file.text().strip(), self.dev_file.text().strip()
        return DataConfig(
            kind="files",
            train=str(Path(tr).expanduser().resolve()) if tr else None,
            dev=str(Path(dv).expanduser().resolve()) if dv else None,
            text_columns=cols,
            label_column=label if label and label != NONE else None,
        )

    def config(self) -> ProjectConfig:
        """The form as a ProjectConfig; raises UserError naming the first bad field."""
        values = self.hp.values()
        profile = self.profile.currentData() or "quick"
        train = profile_config(profile, **{k: v for k, v in values.items()})
        # an emptied box means its null (teacher_lr: a trial chooses it), where profile_config keeps the profile's
        nulls = {k: None for k, v in values.items() if v is None and getattr(train, k) is not None}
        if nulls:
            train = validate_train(dataclasses.replace(train, **nulls))
        folder = self.folder.text().strip()
        return ProjectConfig(
            model=self.model_name(),
            model_is_finetuned=self.finetuned.isChecked(),
            data=self.data_config(),
            train=train,
            name=Path(folder).name if folder else "project",
        )

    def validate(self) -> list[str]:
        """Check every section without running anything; show each problem under its section (once the user has
        touched the form: before that Create stays off without a word in red)."""
        self._validate_timer.stop()
        problems: dict[QLabel, tuple[str, QWidget]] = {}
        folder = self.folder.text().strip()
        if not folder:
            problems[self.folder_error] = "Choose the folder the project will live in.", self.folder
        elif (Path(folder).expanduser() / "project.json").exists():
            problems[self.folder_error] = (
                f"{folder} already holds a project: open it from the Open tab, or pick another folder.",
                self.folder,
            )
        elif Path(folder).expanduser().exists() and not Path(folder).expanduser().is_dir():
            problems[self.folder_error] = f"{folder} is a file: pick a folder.", self.folder
        if found := self._check_model():
            problems[self.model_error] = found
        if found := self._check_task():
            problems[self.task_error] = found
        try:
            self.config()
        except UserError as exc:
            named = re.match(r"train\.(\w+)", str(exc))
            problems[self.train_error] = str(exc), self.hp.editors.get(named[1] if named else "", self.profile)
        for label in (self.folder_error, self.model_error, self.task_error, self.train_error):
            shown = problems[label][0] if label in problems and self._touched else ""
            label.setText(shown)
            label.setToolTip(shown)
        self.errors = [msg for msg, _ in problems.values()]
        self._problem_fields = [field for _, field in problems.values()]
        self._update_create()
        return self.errors

    def go_to_first_problem(self) -> QWidget | None:
        """Scroll to the first field in error and put the cursor in it (the "thing(s) to fix above" link)."""
        if not self._problem_fields:
            return None
        field = self._problem_fields[0]
        self.scroll_area.ensureWidgetVisible(field, 40, 60)
        field.setFocus(Qt.FocusReason.OtherFocusReason)
        return field

    def _check_model(self) -> tuple[str, QWidget] | None:
        if self.model_local.isChecked():
            t = self.model_dir.text().strip()
            if not t:
                return "Choose the model folder.", self.model_dir
            p = Path(t).expanduser()
            if not (p / "config.json").is_file():
                return f"{t}: no config.json here: pick the folder a transformers model was saved to.", self.model_dir
            try:
                from dynastudio.core.support import check_model_folder

                check_model_folder(p.resolve())  # reads config.json, checks the architecture (no engine import)
            except UserError as exc:
                return str(exc), self.model_dir
        elif self.model_hub.isChecked() and not self.model_id.text().strip():
            return "Type a Hugging Face model id, e.g. bert-base-uncased.", self.model_id
        return None

    def _check_task(self) -> tuple[str, QWidget] | None:
        self.preview.setRowCount(0)
        self.label_counts.setText("")
        u = self.unlabeled_file.text().strip()
        if u and not Path(u).expanduser().is_file():
            return f"{u}: file not found: pick your unlabeled text file, or leave the box empty.", self.unlabeled_file
        if self.task_glue.isChecked():
            d = self.glue_dir.text().strip()
            if d and not Path(d).expanduser().is_dir():
                return (
                    f"{d}: folder not found: point it at the GLUE folder, or leave it empty to download.",
                    self.glue_dir,
                )
            return None
        if not self.task_files.isChecked():
            return None
        tr, dv = self.train_file.text().strip(), self.dev_file.text().strip()
        if not tr or not dv:
            return "Choose a train file and a dev file.", self.train_file if not tr else self.dev_file
        cfg = self.data_config()
        if not cfg.text_columns or cfg.label_column is None:
            missing = " and ".join(
                w for w, bad in (("text", not cfg.text_columns), ("label", cfg.label_column is None)) if bad
            )
            field = self.text_a if not cfg.text_columns else self.label_col
            return f"Pick the {missing} column{'s' if ' and ' in missing else ''}.", field
        try:
            check_roles(cfg.text_columns, cfg.label_column, "columns")
        except UserError as exc:
            # a text column picked twice is fixed in the second picker; a text column as label in the label one
            return str(exc), self.text_b if "picked twice" in str(exc) else self.label_col
        cols = cfg.text_columns
        field: QWidget = self.train_file
        try:
            train = self.reader.summary(cfg.train, cols, cfg.label_column, None, None)
            self._show_preview(train, cols, cfg.label_column)
            self.label_counts.setText(counts_line(train, "train") + f"\nreading {Path(dv).name}…")
            field = self.dev_file
            dev = self.reader.summary(cfg.dev, cols, cfg.label_column, train["names"], train["regression"])
            self.label_counts.setText(counts_line(train, "train") + "\n" + counts_line(dev, "dev"))
        except StillReading as reading:
            return f"Reading {reading.path.name}… (a large file takes a few seconds)", field
        except UserError as exc:
            if field is self.dev_file:
                self.label_counts.setText(counts_line(train, "train"))
            return str(exc), field
        return None

    # ---- reading the data files ----------------------------------------------------------------
    @property
    def _reading(self) -> ChildJob | None:
        """The short job reading a large data file, if one is running (tests and bench/huge_csv.py wait on it)."""
        return self.reader.reading

    def stop_reading(self) -> None:
        self.reader.stop()

    def _show_preview(self, summary: dict, cols, label) -> None:
        headers = list(cols) + [label]
        names = summary["names"]
        rows = summary["preview"]
        self.preview.setColumnCount(len(headers))
        self.preview.setHorizontalHeaderLabels(headers)
        header = self.preview.horizontalHeader()
        for j in range(len(headers)):  # texts share the room, the label column takes what it needs
            header.setSectionResizeMode(
                j, QHeaderView.ResizeMode.ResizeToContents if j == len(headers) - 1 else QHeaderView.ResizeMode.Stretch
            )
        self.preview.setRowCount(len(rows))
        for i, cells in enumerate(rows):
            for j, v in enumerate(cells):
                shown = names[v] if names and isinstance(v, int) and j == len(cells) - 1 and 0 <= v < len(names) else v
                self.preview.setItem(i, j, QTableWidgetItem(str(shown)))

    def _update_create(self) -> None:
        creating = self.handle is not None and self.handle.is_running()
        self.create_button.setEnabled(not self.errors and not creating)
        if creating:
            text = "Creating the project: checking the data and the model, tokenizing the task…"
        elif not self._touched:
            text = self._idle_note or "Start with the folder the project will live in."
        elif self.errors:
            n = len(self.errors)
            text = f"{n} thing{'s' if n > 1 else ''} to fix above: <a href='#first-problem'>show me</a>"
        else:
            text = "Ready."
        self.create_status.setText(text if "<a " in text else html.escape(text))

    # ---- create --------------------------------------------------------------------------------
    def create_from_form(self) -> None:
        self._touched = True
        if self.validate():
            return
        try:
            config = self.config()
        except UserError as exc:
            show_error(self.window(), exc, "Cannot create the project")
            return
        self.create(Path(self.folder.text().strip()).expanduser(), config, from_form=True)

    def create(self, root: Path, config: ProjectConfig, from_form: bool = False):
        """Start the create job (None when the user keeps another job running); `from_form`: the form's own
        project, whose folder is cleared once it is made."""
        root = Path(root).resolve()
        handle = self.state.start_job(self.window(), "create", root, CreateRequest(config))
        if handle is None:
            return None
        self.handle, self._from_form = handle, from_form
        handle.finished.connect(self._on_finished)
        handle.failed.connect(self._on_errored)
        handle.ended.connect(lambda _: self._update_create())
        self._update_create()
        return handle

    def _on_finished(self, root) -> None:
        if self._from_form:
            # the next project needs another folder; the model, the data and the settings often stay
            self.folder.clear()
            self._touched = False
            self._idle_note = f"Created {root}. For another project, choose a new folder: the other settings stay."
        else:
            self._idle_note = f"Created {root}."
        self._update_create()
        self.created.emit(root)

    def _on_errored(self, info) -> None:
        self._idle_note = f"Not created: {info.message}"
        show_error(self.window(), info, "Cannot create the project")

    def shut_down(self) -> None:
        """Nothing left to validate or read once the window closes."""
        self._validate_timer.stop()
        self.stop_reading()

    def closeEvent(self, event) -> None:
        self.shut_down()
        super().closeEvent(event)


if __name__ == "__main__":
    from ..preview import run_preview

    run_preview(NewProjectForm)
