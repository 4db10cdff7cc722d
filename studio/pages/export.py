"""Export page: the selected sub-network, a target preset, one click; then the verification, the files and their sizes."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
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
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from dynastudio.core.export.targets import (
    FORMAT_EXTRAS,
    FORMATS,
    PRESET_DESCRIPTIONS,
    PRESETS,
    TRIM_BY_DEFAULT,
    missing_extra,
)
from dynastudio.core.requests import INT8_METHODS_BY_FORMAT

from ..dialogs import open_folder
from ..errors import show_error
from ..state import StudioState
from ..style import HINT_CSS, fmt_bytes, label_sort_key
from .pareto_chart import DetailLine

NO_EXPORT = "No export yet: pick a sub-network and a target, then Export."

# how each INT8 method reads in the list (core/requests.INT8_METHODS_BY_FORMAT; docs/deploying.md has the measurements)
INT8_METHOD_TEXT = {
    "per-token": "per-token: each token's input gets its own range (closest to fp32)",
    "dynamic": "dynamic: one range per input tensor (onnxruntime's quantize_dynamic)",
    "static": "static: fixed ranges calibrated on 300 train rows (NNCF)",
}


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
        self.subnet.setPlaceholderText("pick a sub-network here, or click one on Explore")
        self.subnet.currentIndexChanged.connect(self._on_subnet)
        # only a choice made here is a selection for the other pages; filling the list is not
        self.subnet.activated.connect(lambda _: self.state.select(self.subnet.currentData()))
        self.target = QComboBox()
        self.target.setObjectName("exportTarget")
        self._fill_targets()
        self.target.currentIndexChanged.connect(self._on_target)
        self.target_help = QLabel()
        self.target_help.setStyleSheet(HINT_CSS)
        self.target_help.setWordWrap(True)
        self.target_help.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)  # copy the command
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
        self.int8_method = QComboBox()
        self.int8_method.setObjectName("exportInt8Method")
        self.int8_method.setToolTip(
            "How the INT8 formats (onnx-int8, ort-int8, openvino-int8; the android and arm-linux presets) quantize "
            "each matrix product's input. per-token agrees with fp32 on more rows."
        )
        self.int8_label = QLabel("INT8 method")
        self.export_button = QPushButton("Export")
        self.export_button.setObjectName("exportButton")
        self.export_button.setMinimumHeight(32)
        self.export_button.clicked.connect(self.start_export)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setMinimumWidth(200)  # a long folder path is one word: it must not raise the window's width
        # the running export, here rather than in the status bar only, with a way to stop it
        self.progress = QProgressBar()
        self.progress.setObjectName("exportProgress")
        self.step = DetailLine(lines=1)  # the job's latest line, elided: it names long folders
        self.step.setStyleSheet(HINT_CSS)
        self.cancel = QPushButton("Cancel")
        self.cancel.setObjectName("cancelExport")
        self.cancel.clicked.connect(self.cancel_export)
        self.progress_box = QWidget()
        pl = QHBoxLayout(self.progress_box)
        pl.setContentsMargins(0, 0, 0, 0)
        pl.addWidget(self.progress, 1)
        pl.addWidget(self.step, 2)
        pl.addWidget(self.cancel)
        self.progress_box.setVisible(False)

        form_box = QGroupBox("What to export")
        form = QFormLayout(form_box)
        form.addRow("Sub-network", self.subnet)
        target_col = QVBoxLayout()
        target_col.setSpacing(2)
        target_col.addWidget(self.target)
        target_col.addWidget(self.target_help)
        form.addRow("Target", target_col)
        form.addRow("Folder", out_row)
        form.addRow(self.int8_label, self.int8_method)
        form.addRow("", self.trim)
        form.addRow("", self.overwrite)
        form.addRow("", self.export_button)
        form.addRow("", self.progress_box)
        form.addRow("", self.status)

        self.verify = QLabel("No export yet.")
        self.verify.setObjectName("verification")
        self.verify.setWordWrap(True)
        self.verify.setMinimumWidth(200)
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
    def _fill_targets(self) -> None:
        """The presets, then the formats; a target whose format needs an extra not installed here says so."""
        self.missing = {fmt: cmd for fmt in self.format_text if (cmd := missing_extra(fmt)) is not None}
        items = [(f"{name}  →  {fmt}", name, fmt) for name, fmt in self.preset_formats.items()]
        items += [(f"format: {fmt}", fmt, fmt) for fmt in self.format_text]  # or a format as it is
        for i, (text, data, fmt) in enumerate(items):
            if i == len(self.preset_formats):
                self.target.insertSeparator(self.target.count())
            if fmt in self.missing:
                text += f"   (needs pip install 'dynabert-studio[{FORMAT_EXTRAS[fmt][1]}]')"
            self.target.addItem(text, data)
            if fmt in self.missing:
                j = self.target.count() - 1
                self.target.setItemData(j, QColor("#888"), Qt.ItemDataRole.ForegroundRole)
                self.target.setItemData(j, f"Not installed here: {self.missing[fmt]}", Qt.ItemDataRole.ToolTipRole)

    def _on_project(self, _project) -> None:
        """Another project: nothing of the last one stays (its sub-network, its folder, its result, its status)."""
        self.report = None
        self._out_edited = False
        self.handle = None  # a job still running for the last project no longer writes on this page
        self._show_progress(False)
        self._show_report(None)
        self.status.setText("")
        self.out.clear()
        self.subnet.blockSignals(True)
        self.subnet.clear()
        self.subnet.blockSignals(False)
        self._fill_subnets()

    def _fill_subnets(self) -> None:
        res = self.state.results() or {}
        rows = sorted(res.get("rows", []), key=lambda r: label_sort_key(r.get("label", "")))
        metric = res.get("metric", "metric")
        keep = self.state.selected or self.subnet.currentData()  # nothing chosen: nothing picked for the user
        self.subnet.blockSignals(True)
        self.subnet.clear()
        for r in rows:
            v = r.get("value")
            text = f"{r['label']}   ({metric} {v:.4f})" if isinstance(v, (int, float)) else r["label"]
            self.subnet.addItem(text, r["label"])
        self.subnet.setCurrentIndex(self.subnet.findData(keep) if keep is not None else -1)
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
        fmt = self.preset_formats.get(name, name)
        if name in self.preset_formats:
            text = f"For {self.preset_text.get(name, '')}. Format: {self.format_text.get(fmt, '')}."
        else:
            text = f"{self.format_text.get(name, '')}."
        if fmt in self.missing:  # the exact command for the interpreter this studio runs on
            text += f" Not installed here; install it with: {self.missing[fmt]}"
        self.target_help.setText(text)
        self.trim.setChecked(name in TRIM_BY_DEFAULT)
        methods = INT8_METHODS_BY_FORMAT.get(fmt, ())  # the other formats quantize nothing: not shown for them
        if methods != tuple(self.int8_method.itemData(i) for i in range(self.int8_method.count())):
            self.int8_method.clear()  # this format's methods, its default first
            for m in methods:
                self.int8_method.addItem(INT8_METHOD_TEXT.get(m, m), m)
        int8 = bool(methods)
        self.int8_method.setVisible(int8)
        self.int8_label.setVisible(int8)
        self._default_out()

    def _default_out(self) -> None:
        project, label = self.state.project, self.subnet.currentData()
        if self._out_edited:
            return
        if project is None or label is None:
            self.out.clear()
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
            int8_method=self.int8_method.currentData() or "per-token",
            # a point `dynastudio search` found: exported by its label (its shape), not by width x depth
            searched=label if isinstance(row.get("searched"), dict) else None,
        )
        handle = self.state.start_job(self.window(), "export", project.root, request)
        if handle is None:
            return
        self.handle = handle

        def mine(slot):  # a job of an earlier project, or one replaced since, no longer writes on this page
            return lambda *a: slot(*a) if handle is self.handle else None

        handle.finished.connect(mine(self._on_finished))
        handle.failed.connect(mine(self._on_errored))
        handle.cancelled.connect(mine(lambda: self.status.setText("Export stopped: nothing was written.")))
        handle.ended.connect(mine(lambda _: self._show_progress(False)))
        handle.ended.connect(lambda _: self._update_button())
        handle.bridge.stageProgress.connect(mine(self._on_progress))
        handle.bridge.log.connect(mine(lambda e: self.step.setText(e.text)))
        self.status.setText(f"Exporting {label} for {target}… (extract, convert, then verify against PyTorch)")
        self.report = None  # an earlier result is not this one's
        self._show_report(None, "Exporting… the verification and the files show here when it is done.")
        self._show_progress(True)
        self._update_button()

    def cancel_export(self) -> None:
        """Stop the running export: it writes nothing (the job stops between its steps)."""
        if self.handle is not None and self.handle.is_running():
            self.handle.stop()
            self.cancel.setText("Cancelling…")
            self.cancel.setEnabled(False)

    def _show_progress(self, running: bool) -> None:
        self.progress_box.setVisible(running)
        if running:
            self.progress.setRange(0, 0)  # busy until the job says how many steps
            self.step.setText("starting…")
            self.cancel.setText("Cancel")
            self.cancel.setEnabled(True)

    def _on_progress(self, e) -> None:
        if e.stage == "export" and e.total:
            self.progress.setRange(0, e.total)
            self.progress.setValue(e.done)
            self.progress.setFormat(f"step {e.done} of {e.total}")

    def _on_finished(self, report) -> None:
        self.report = report
        if report.passed:
            self.status.setText(f"Exported to {report.path}")
        else:
            self.status.setText(f"Export FAILED its check (kept in {report.path} for inspection): {report.failure}")
        self._show_report(report)

    def _on_errored(self, info) -> None:
        self.status.setText(f"Export failed: {info.message}")
        self.report = None
        self._show_report(None, "No export: the last one failed (the reason is above).")
        show_error(self.window(), info, "Export failed")

    def _show_report(self, report, empty: str = NO_EXPORT) -> None:
        """The verification and the files of `report`; without one, `empty` (and no earlier result)."""
        self.files.setRowCount(0)
        self.open_folder.setEnabled(report is not None)
        if report is None:
            self.verify.setText(empty)
            return
        v = report.verification or {}
        ok = v.get("passed", True)
        tol = v.get("tolerance")
        lines = [
            f"<b>{'✔ verified' if ok else '✘ verification failed'}</b>: {report.format} "
            f"(target {report.target or '-'}) of "
            + (
                v["subnet"]["label"]
                if "label" in v.get("subnet", {})
                else f"w{report.width_mult:g} d{report.depth_mult:g}"
            ),
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
        if q := v.get("quantization"):
            text = f"INT8: {q.get('path', '?')}, {q.get('method', '?')}"
            if sp := q.get("speed"):
                text += (
                    f"; {sp['speedup']:.2f}x the fp32 file's speed here ({sp['int8_ms']:.1f} vs {sp['fp32_ms']:.1f} ms)"
                )
            lines.append(text)
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
