"""The new-project form: folder, model, task (column pickers, preview), profile and hyper-parameters, validated inline."""

from __future__ import annotations

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

from dynastudio.core.config import BUILTIN_MINILM, PROFILES, DataConfig, ProjectConfig, profile_config
from dynastudio.core.data.columns import ColumnGuess, check_roles, guess_columns
from dynastudio.core.errors import DataError, UserError
from dynastudio.core.requests import CreateRequest, TableSummaryRequest

from ..errors import show_error
from ..state import StudioState
from ..style import ERROR_CSS, HINT_CSS
from ..worker import ChildJob, start_side_job
from .hyperparams import HyperParams

PREVIEW_ROWS = 8
NONE = "(none)"
READ_APART_BYTES = (
    2_000_000  # a data file this big is read by a short job in its own process (about 30,000 rows of SST-2)
)


def glue_tasks() -> list[str]:
    from dynastudio.core.data.glue import GLUE_TASKS

    return list(GLUE_TASKS)


class _StillReading(Exception):
    def __init__(self, path: Path):
        super().__init__(str(path))
        self.path = path


def file_sample(path: str) -> tuple[list[str], list[dict]]:
    """Header and first rows of a CSV/TSV/JSONL file (raises DataError with a one-line message)."""
    from dynastudio.core.data.readers import peek_rows  # the reader the loader itself uses, so the pickers match it

    return peek_rows(Path(path))


class NewProjectForm(QWidget):
    """The "New project" tab: every section checked as the user types, Create enabled once nothing is left to fix."""

    created = Signal(object)  # the new project's folder, once the create job has made it

    def __init__(self, state: StudioState, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self._table_cache: dict = {}
        self._reading: ChildJob | None = None  # the short job reading a large file, if one is running
        self._reading_key = None
        self.errors: list[str] = []
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
        self.model_error = self._error_label()
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
        self.preview = QTableWidget(0, 3)
        self.preview.setObjectName("preview")
        self.preview.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.preview.verticalHeader().setVisible(False)
        self.preview.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.preview.verticalHeader().setDefaultSectionSize(22)
        self.preview.setMinimumHeight(120)
        self.preview.setMaximumHeight(210)
        self.label_counts = QLabel()
        self.label_counts.setObjectName("labelCounts")
        self.label_counts.setWordWrap(True)
        self.column_note = QLabel()
        self.column_note.setObjectName("columnGuess")
        self.column_note.setWordWrap(True)
        self.column_note.setStyleSheet(HINT_CSS)
        self._reserve_lines(self.column_note, 1)
        self._reserve_lines(self.label_counts, 2)
        fg.addWidget(self.column_note, 3, 0, 1, 6)
        fg.addWidget(self.preview, 4, 0, 1, 6)
        fg.addWidget(self.label_counts, 5, 0, 1, 6)
        tg.addWidget(self.files_box, 3, 0, 1, 4)
        self.task_error = self._error_label()
        tg.addWidget(self.task_error, 4, 0, 1, 4)

        # --- training ---
        self.profile = QComboBox()
        self.profile.setObjectName("profile")
        for name in PROFILES:
            self.profile.addItem(name, name)
        self.profile.setCurrentText("quick")
        self.profile_help = QLabel(
            "quick: short runs for a CPU (sequence 64, 3/2/2 epochs); "
            "paper: the DynaBERT paper's settings (sequence 128, 3 epochs per stage)"
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
        self.train_error = self._error_label()
        tl.addWidget(self.train_error)

        # --- create ---
        self.create_button = QPushButton("Create project")
        self.create_button.setObjectName("createProject")
        self.create_button.setMinimumHeight(32)
        self.create_button.clicked.connect(self.create_from_form)
        self.create_status = QLabel()
        self.create_status.setWordWrap(True)
        where = QGroupBox("Folder")
        QVBoxLayout(where).addLayout(folder_row)
        self.folder_error = self._error_label()
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
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(inner)
        QVBoxLayout(self).addWidget(scroll)

        # any change re-validates (debounced)
        for w in (self.folder, self.model_dir, self.model_id, self.glue_dir, self.train_file, self.dev_file):
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

    @staticmethod
    def _reserve_lines(label: QLabel, lines: int) -> None:
        """Keep room for `lines` lines even while empty, so text appearing does not push the buttons below it."""
        label.setMinimumHeight(lines * label.fontMetrics().lineSpacing() + 4)
        label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)

    @classmethod
    def _error_label(cls) -> QLabel:
        # always shown, empty when all is well: a message appearing must not move the buttons under the mouse
        label = QLabel()
        label.setStyleSheet(ERROR_CSS)
        label.setWordWrap(True)
        cls._reserve_lines(label, 2)
        return label

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
        self.column_note.setText(self._guess_text(guess, cols))
        if not self.dev_file.text().strip() and cols:
            # the usual layout: train.tsv beside dev.tsv
            p = Path(text)
            sibling = p.with_name(p.name.replace("train", "dev"))
            if sibling != p and sibling.is_file():
                self.dev_file.setText(str(sibling))
        self._schedule_validate()

    # ---- validation ----------------------------------------------------------------------------
    def _schedule_validate(self, *_):
        self._validate_timer.start()

    def model_name(self) -> str:
        if self.model_local.isChecked():
            t = self.model_dir.text().strip()
            return str(Path(t).expanduser().resolve()) if t else ""
        if self.model_hub.isChecked():
            return self.model_id.text().strip()
        return BUILTIN_MINILM

    def data_config(self) -> DataConfig:
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

    @staticmethod
    def _guess_text(guess: ColumnGuess, cols: list[str]) -> str:
        if not cols:
            return ""
        if not guess.guessed:
            return "Could not guess the columns from their names and values: pick them below."
        said = f"Guessed from the file: {guess.describe()}."
        if guess.label is None:
            said += " No column looks like the label: pick it."
        elif not guess.text:
            said += " No column reads as text: pick it."
        return said + " Change the pickers if this is wrong."

    def config(self) -> ProjectConfig:
        """The form as a ProjectConfig; raises UserError naming the first bad field."""
        values = self.hp.values()
        profile = self.profile.currentData() or "quick"
        train = profile_config(profile, **{k: v for k, v in values.items()})
        folder = self.folder.text().strip()
        return ProjectConfig(
            model=self.model_name(),
            model_is_finetuned=self.finetuned.isChecked(),
            data=self.data_config(),
            train=train,
            name=Path(folder).name if folder else "project",
        )

    def validate(self) -> list[str]:
        """Check every section without running anything; show each problem under its section."""
        self._validate_timer.stop()
        problems: dict[QLabel, str] = {}
        folder = self.folder.text().strip()
        if not folder:
            problems[self.folder_error] = "Choose the folder the project will live in."
        elif (Path(folder).expanduser() / "project.json").exists():
            problems[self.folder_error] = (
                f"{folder} already holds a project: open it from the Open tab, or pick another folder."
            )
        elif Path(folder).expanduser().exists() and not Path(folder).expanduser().is_dir():
            problems[self.folder_error] = f"{folder} is a file: pick a folder."
        if msg := self._check_model():
            problems[self.model_error] = msg
        if msg := self._check_task():
            problems[self.task_error] = msg
        try:
            self.config()
        except UserError as exc:
            problems[self.train_error] = str(exc)
        for label in (self.folder_error, self.model_error, self.task_error, self.train_error):
            label.setText(problems.get(label, ""))
            label.setToolTip(problems.get(label, ""))
        self.errors = list(problems.values())
        self._update_create()
        return self.errors

    def _check_model(self) -> str | None:
        if self.model_local.isChecked():
            t = self.model_dir.text().strip()
            if not t:
                return "Choose the model folder."
            p = Path(t).expanduser()
            if not (p / "config.json").is_file():
                return f"{t}: no config.json here: pick the folder a transformers model was saved to."
            try:
                from dynastudio.core.support import check_model_folder

                check_model_folder(p.resolve())  # reads config.json, checks the architecture (no engine import)
            except UserError as exc:
                return str(exc)
        elif self.model_hub.isChecked() and not self.model_id.text().strip():
            return "Type a Hugging Face model id, e.g. bert-base-uncased."
        return None

    def _check_task(self) -> str | None:
        self.preview.setRowCount(0)
        self.label_counts.setText("")
        if self.task_glue.isChecked():
            d = self.glue_dir.text().strip()
            if d and not Path(d).expanduser().is_dir():
                return f"{d}: folder not found: point it at the GLUE folder, or leave it empty to download."
            return None
        if not self.task_files.isChecked():
            return None
        tr, dv = self.train_file.text().strip(), self.dev_file.text().strip()
        if not tr or not dv:
            return "Choose a train file and a dev file."
        cfg = self.data_config()
        if not cfg.text_columns or cfg.label_column is None:
            missing = " and ".join(
                w for w, bad in (("text", not cfg.text_columns), ("label", cfg.label_column is None)) if bad
            )
            return f"Pick the {missing} column{'s' if ' and ' in missing else ''}."
        try:
            check_roles(cfg.text_columns, cfg.label_column, "columns")
        except UserError as exc:
            return str(exc)
        cols = cfg.text_columns
        try:
            train = self._read(cfg.train, cols, cfg.label_column, None, None)
            self._show_preview(train, cols, cfg.label_column)
            self._read(cfg.dev, cols, cfg.label_column, train["names"], train["regression"])
        except _StillReading as reading:
            return f"Reading {reading.path.name}… (a large file takes a few seconds)"
        except UserError as exc:
            return str(exc)
        return None

    # ---- reading the data files ----------------------------------------------------------------
    def _read(self, path, cols, label, names, regression) -> dict:
        """The file read as the loader reads it (table_summary), remembered per file version so typing elsewhere
        does not re-read big files. A large file is read by a short job in its own process, so the window never
        waits on it (in a thread, parsing a million rows held the interpreter for up to 1.8 s at a time):
        _StillReading until it is done, then the form checks itself again."""
        from dynastudio.core.data.readers import table_summary

        p = Path(path)
        try:
            stamp = p.stat().st_mtime_ns, p.stat().st_size
        except OSError:
            stamp = None
        label_names = tuple(names) if names else None
        key = (str(p), stamp, tuple(cols), label, label_names, regression)
        if key not in self._table_cache:
            if stamp is not None and stamp[1] >= READ_APART_BYTES:
                if self._reading is None or self._reading_key != key:
                    request = TableSummaryRequest(str(p), tuple(cols), label, label_names, regression, PREVIEW_ROWS)
                    self._start_reading(key, request)
                raise _StillReading(p)
            self._remember(key, table_summary(p, cols, label, names, regression=regression, preview_rows=PREVIEW_ROWS))
        got = self._table_cache[key]
        if "error" in got:
            raise DataError(got["error"])
        return got

    def _remember(self, key, summary: dict) -> None:
        self._table_cache = {k: v for k, v in list(self._table_cache.items())[-3:]}
        self._table_cache[key] = summary

    def _start_reading(self, key, request: TableSummaryRequest) -> None:
        """Read a large file in a short job; it replaces a read still running, whose answer nobody needs now."""
        self.stop_reading()
        handle = start_side_job("table-summary", Path(request.path).parent, request, parent=self)
        self._reading, self._reading_key = handle, key
        handle.finished.connect(lambda summary, h=handle: self._on_table_read(h, key, summary))
        handle.failed.connect(lambda info, h=handle: self._on_table_failed(h, key, info))
        handle.ended.connect(lambda _kind, h=handle: h.deleteLater())

    def stop_reading(self) -> None:
        """End the read in flight, if any, and forget it (waits the moment a killed process takes to go)."""
        handle, self._reading, self._reading_key = self._reading, None, None
        if handle is not None and handle.is_running():
            handle.kill()
            handle.wait(5)

    def _on_table_read(self, handle: ChildJob, key, summary: dict) -> None:
        if handle is not self._reading:
            return  # a read replaced by a newer one
        self._reading, self._reading_key = None, None
        self._remember(key, summary)
        self.validate()

    def _on_table_failed(self, handle: ChildJob, key, info) -> None:
        if handle is not self._reading:
            return
        self._reading, self._reading_key = None, None
        self._remember(key, {"error": info.message})  # remembered: the form must not start the same failing read again
        self.validate()
        if not info.user:
            show_error(self.window(), info, "Cannot read the data file")

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
        if summary["regression"]:
            self.label_counts.setText(
                f"{summary['rows']} rows; numeric labels (regression) from {summary['min']:g} to {summary['max']:g}"
            )
        else:
            parts = [
                f"{names[k] if names and isinstance(k, int) else k}: {c}" for k, c in sorted(summary["counts"].items())
            ]
            self.label_counts.setText(f"{summary['rows']} train rows; label counts: " + " · ".join(parts))

    def _update_create(self) -> None:
        creating = self.handle is not None and self.handle.is_running()
        self.create_button.setEnabled(not self.errors and not creating)
        if creating:
            self.create_status.setText("Creating the project: checking the data and the model, tokenizing the task…")
        elif self.errors:
            self.create_status.setText(f"{len(self.errors)} thing(s) to fix above.")
        else:
            self.create_status.setText("Ready.")

    # ---- create --------------------------------------------------------------------------------
    def create_from_form(self) -> None:
        if self.validate():
            return
        try:
            config = self.config()
        except UserError as exc:
            show_error(self.window(), exc, "Cannot create the project")
            return
        self.create(Path(self.folder.text().strip()).expanduser(), config)

    def create(self, root: Path, config: ProjectConfig) -> None:
        root = Path(root).resolve()
        handle = self.state.start_job(self.window(), "create", root, CreateRequest(config))
        if handle is None:
            return
        self.handle = handle
        handle.finished.connect(self._on_finished)
        handle.failed.connect(self._on_errored)
        handle.ended.connect(lambda _: self._update_create())
        self.create_status.setText(f"Creating {root}…")
        self._update_create()

    def _on_finished(self, root) -> None:
        self.create_status.setText(f"Created {root}.")
        self.created.emit(root)

    def _on_errored(self, info) -> None:
        self.create_status.setText(f"Not created: {info.message}")
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
