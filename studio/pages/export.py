"""Export page: the selected sub-network, a target preset, one click; then the verification, the files and their sizes."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from dynastudio.core.export.targets import FORMATS, PRESET_DESCRIPTIONS, PRESETS, TRIM_BY_DEFAULT

from ..dialogs import open_folder
from ..errors import show_error
from ..state import StudioState
from ..style import HINT_CSS, fmt_bytes, label_sort_key


def presets() -> tuple[dict, dict, dict]:
    """(preset -> format, preset -> description, format -> description)."""
    return dict(PRESETS), dict(PRESET_DESCRIPTIONS), dict(FORMATS)


class ExportPage(QWidget):
    def __init__(self, state: StudioState, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.report = None  # the last ExportReport
        self._out_edited = False
        self.preset_formats, self.preset_text, self.format_text = presets()

        self.subnet = QComboBox()
        self.subnet.setObjectName("exportSubnet")
        self.subnet.currentIndexChanged.connect(self._on_subnet)
        # only a choice made here is a selection for the other pages; filling the list is not
        self.subnet.activated.connect(lambda _: self.state.select(self.subnet.currentData()))
        self.target = QComboBox()
        self.target.setObjectName("exportTarget")
        for name, fmt in self.preset_formats.items():
            self.target.addItem(f"{name}  →  {fmt}", name)
        self.target.insertSeparator(self.target.count())
        for fmt in self.format_text:  # or a format as it is
            self.target.addItem(f"format: {fmt}", fmt)
        self.target.currentIndexChanged.connect(self._on_target)
        self.target_help = QLabel()
        self.target_help.setStyleSheet(HINT_CSS)
        self.target_help.setWordWrap(True)
        self.out = QLineEdit()
        self.out.setObjectName("exportFolder")
        self.out.textEdited.connect(lambda _: setattr(self, "_out_edited", True))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out, 1)
        out_row.addWidget(browse)
        self.overwrite = QCheckBox("Replace an earlier export in this folder")
        self.trim = QCheckBox("Trim the vocabulary to the task's tokens")
        self.trim.setToolTip(
            "Keep only the tokens of the task's train and dev texts: a much smaller file for small "
            "sub-networks. The phone presets (android, ios) turn it on."
        )
        self.trim.setObjectName("exportTrim")
        self.export_button = QPushButton("Export")
        self.export_button.setObjectName("exportButton")
        self.export_button.setMinimumHeight(32)
        self.export_button.clicked.connect(self.start_export)
        self.status = QLabel()
        self.status.setWordWrap(True)

        form_box = QGroupBox("What to export")
        form = QFormLayout(form_box)
        form.addRow("Sub-network", self.subnet)
        target_col = QVBoxLayout()
        target_col.setSpacing(2)
        target_col.addWidget(self.target)
        target_col.addWidget(self.target_help)
        form.addRow("Target", target_col)
        form.addRow("Folder", out_row)
        form.addRow("", self.trim)
        form.addRow("", self.overwrite)
        form.addRow("", self.export_button)
        form.addRow("", self.status)

        self.verify = QLabel("No export yet.")
        self.verify.setObjectName("verification")
        self.verify.setWordWrap(True)
        self.verify.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.files = QTableWidget(0, 2)
        self.files.setHorizontalHeaderLabels(["file", "size"])
        self.files.verticalHeader().setVisible(False)
        self.files.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.files.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.files.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.open_folder = QPushButton("Open folder")
        self.open_folder.setObjectName("openFolder")
        self.open_folder.setEnabled(False)
        self.open_folder.clicked.connect(self._open_folder)
        result_box = QGroupBox("Result")
        rl = QVBoxLayout(result_box)
        rl.addWidget(self.verify)
        rl.addWidget(self.files, 1)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.open_folder)
        rl.addLayout(row)

        lay = QVBoxLayout(self)
        lay.addWidget(form_box)
        lay.addWidget(result_box, 1)

        state.projectChanged.connect(self._on_project)
        state.projectUpdated.connect(lambda _: self._fill_subnets())
        state.selectionChanged.connect(self._on_selection)
        self.handle = None  # the export job this page started
        state.runner.busyChanged.connect(lambda _: self._update_button())
        self._on_target()
        self._on_project(state.project)

    # ---- inputs --------------------------------------------------------------------------------
    def _on_project(self, _project) -> None:
        self.report = None
        self._out_edited = False
        self._show_report(None)
        self._fill_subnets()

    def _fill_subnets(self) -> None:
        res = self.state.results() or {}
        rows = sorted(res.get("rows", []), key=lambda r: label_sort_key(r.get("label", "")))
        metric = res.get("metric", "metric")
        keep = self.state.selected or self.subnet.currentData()
        self.subnet.blockSignals(True)
        self.subnet.clear()
        for r in rows:
            v = r.get("value")
            text = f"{r['label']}   ({metric} {v:.4f})" if isinstance(v, (int, float)) else r["label"]
            self.subnet.addItem(text, r["label"])
        i = self.subnet.findData(keep)
        self.subnet.setCurrentIndex(max(0, i))
        self.subnet.blockSignals(False)
        self._on_subnet()

    def _on_selection(self, label) -> None:
        i = self.subnet.findData(label)
        if i >= 0:
            self.subnet.setCurrentIndex(i)

    def _on_subnet(self, *_):
        self._default_out()
        self._update_button()

    def _on_target(self, *_):
        name = self.target.currentData()
        if name in self.preset_formats:
            fmt = self.preset_formats[name]
            self.target_help.setText(f"For {self.preset_text.get(name, '')}. Format: {self.format_text.get(fmt, '')}.")
        else:
            self.target_help.setText(f"{self.format_text.get(name, '')}.")
        self.trim.setChecked(name in TRIM_BY_DEFAULT)
        self._default_out()

    def _default_out(self) -> None:
        project, label = self.state.project, self.subnet.currentData()
        if project is None or label is None or self._out_edited:
            return
        self.out.setText(str(project.root / "exports" / f"{label}-{self.target.currentData()}"))

    def _browse(self) -> None:
        start = self.out.text() or (str(self.state.project.root) if self.state.project else "")
        folder = QFileDialog.getExistingDirectory(self, "Export into folder", str(Path(start).parent))
        if folder:
            self.out.setText(str(Path(folder) / Path(self.out.text() or "export").name))
            self._out_edited = True

    def _update_button(self) -> None:
        running = self.handle is not None and self.handle.is_running()
        self.export_button.setText("Exporting…" if running else "Export")
        self.export_button.setEnabled(
            self.state.project is not None
            and self.subnet.currentData() is not None
            and not running
            and bool(self.preset_formats)
        )

    # ---- the job -------------------------------------------------------------------------------
    def start_export(self) -> None:
        project, label = self.state.project, self.subnet.currentData()
        if project is None or label is None:
            return
        row = next((r for r in (self.state.results() or {}).get("rows", []) if r["label"] == label), None)
        if row is None:
            return
        out = self.out.text().strip()
        if not out:
            show_error(self.window(), _user_error("choose a folder to export into"), "Export")
            return
        from dynastudio.core.requests import ExportRequest

        target = self.target.currentData()
        request = ExportRequest(
            row["width_mult"],
            row["depth_mult"],
            target,
            out,
            overwrite=self.overwrite.isChecked(),
            trim_vocab=self.trim.isChecked(),
        )
        handle = self.state.start_job(self.window(), "export", project.root, request)
        if handle is None:
            return
        self.handle = handle
        handle.finished.connect(self._on_finished)
        handle.failed.connect(self._on_errored)
        handle.cancelled.connect(lambda: self.status.setText("Export stopped: nothing was written."))
        handle.ended.connect(lambda _: self._update_button())
        self.status.setText(f"Exporting {label} for {target}… (extract, convert, then verify against PyTorch)")
        self._update_button()

    def _on_finished(self, report) -> None:
        self.report = report
        if report.passed:
            self.status.setText(f"Exported to {report.path}")
        else:
            self.status.setText(f"Export FAILED its check (kept in {report.path} for inspection): {report.failure}")
        self._show_report(report)

    def _on_errored(self, info) -> None:
        self.status.setText(f"Export failed: {info.message}")
        show_error(self.window(), info, "Export failed")

    def _show_report(self, report) -> None:
        self.files.setRowCount(0)
        self.open_folder.setEnabled(report is not None)
        if report is None:
            self.verify.setText("No export yet: pick a sub-network and a target, then Export.")
            return
        v = report.verification or {}
        ok = v.get("passed", True)
        tol = v.get("tolerance")
        lines = [
            f"<b>{'✔ verified' if ok else '✘ verification failed'}</b>: {report.format} "
            f"(target {report.target or '-'}) of w{report.width_mult:g} d{report.depth_mult:g}",
        ]
        if report.max_abs_diff is not None:
            lines.append(
                f"largest difference to PyTorch: {report.max_abs_diff:.2e}" + (f" (tolerance {tol:g})" if tol else "")
            )
        else:
            lines.append(
                "not verified on this machine (no runtime for this format here): the model's inputs, "
                "outputs and shapes were checked"
            )
        if report.agreement is not None:
            need = v.get("min_agreement")
            lines.append(
                f"agreement with PyTorch ({(v.get('dev') or {}).get('agreement_kind', 'same prediction')}): "
                f"{100 * report.agreement:.2f}% of {report.dev_examples} dev examples"
                + (f" (required {100 * need:g}%)" if need else "")
            )
        if voc := v.get("vocabulary"):
            lines.append(
                f"vocabulary trimmed to {voc['kept_tokens']:,} of {voc['original_tokens']:,} tokens: "
                f"{voc['size_before_mb']:.1f} MB → {voc['size_after_mb']:.1f} MB; agreement on new text "
                f"(dev rows held out from the vocabulary): {100 * voc['heldout']['agreement']:.2f}%"
            )
        if not ok and v.get("failure"):
            lines.append(f"<span style='color:#b00020'>{v['failure']}</span>")
        sub = v.get("subnet", {})
        if sub:
            lines.append(
                f"{sub.get('layers')} layers × {sub.get('heads')} heads × {sub.get('neurons')} FFN neurons, "
                f"{sub.get('params', 0):,} parameters; model file {report.size_mb:.1f} MB"
            )
        self.verify.setText("<br>".join(lines))
        # what is really in the folder (the report's list predates the README written last)
        folder = Path(report.path)
        try:
            files = sorted(
                (p.name, sum(q.stat().st_size for q in p.rglob("*") if q.is_file()) if p.is_dir() else p.stat().st_size)
                for p in folder.iterdir()
            )
        except OSError:
            files = sorted(report.files.items())
        files.append(("total", sum(size for _, size in files)))
        self.files.setRowCount(len(files))
        for i, (name, size) in enumerate(files):
            self.files.setItem(i, 0, QTableWidgetItem(name))
            item = QTableWidgetItem(fmt_bytes(size))
            item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.files.setItem(i, 1, item)

    def _open_folder(self) -> None:
        if self.report is not None:
            open_folder(self.window(), self.report.path)


def _user_error(message: str):
    from dynastudio.core.errors import UserError

    return UserError(message)


if __name__ == "__main__":
    from ..preview import run_preview

    run_preview(ExportPage)
