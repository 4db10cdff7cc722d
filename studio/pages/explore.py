"""Explore page: metric vs latency per sub-network, the Pareto front, a latency budget, and a table synced with the chart."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSlider,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from dynastudio.core.errors import UserError
from dynastudio.core.store import (
    ANY_LATENCY,
    FLOPS_AXIS,
    Grid,
    GridRow,
    Point,
    axis_precision,
    best_under,
    grid_points,
    latency_axis,
    pareto_front,
)

from ..errors import show_error
from ..state import StudioState
from ..style import (
    HINT_CSS,
    METRIC_BOUNDS,
    chance_in_view,
    chance_name,
    encoding_legend_html,
    fit_view,
    fmt_params,
    label_sort_key,
    plain_axes,
    subnet_colour,
    subnet_symbol,
)
from . import ReloadWhenShown

SLIDER_STEPS = 1000
PRECISION_SEP = "@"  # a point's key: "w0.5_d1" (fp32) or "w0.5_d1@int8"
NO_RESULTS = Grid(None, None, None, None, None, ())


def point_key(label: str, precision: str) -> str:
    return label if precision == "fp32" else f"{label}{PRECISION_SEP}{precision}"


def split_key(key: str) -> tuple[str, str]:
    label, _, precision = str(key).partition(PRECISION_SEP)
    return label, precision or "fp32"


class ExplorePage(ReloadWhenShown, QWidget):
    COLUMNS = ("sub-network", "metric", "params", "size", "FLOPs", "latency")

    def __init__(self, state: StudioState, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.grid = NO_RESULTS  # the evaluated rows of the shown device's grid, in label order
        self.rows: list[GridRow] = []
        self.points: list[Point] = []
        self.labels: list[str] = []
        self._plot_labels: list[str] = []
        self._precisions: list[str] = []
        self._colours: list[str] = []
        self.xs = np.zeros(0)
        self.ys = np.zeros(0)
        self.metric_name = "metric"
        self.flops_seq = 128
        self.x_key = FLOPS_AXIS
        self.best: int | None = None
        self.setup: dict = {}
        self._show_device: str | None = None

        # ---- axis and latency controls ----
        self.axis = QComboBox()
        self.axis.setObjectName("xAxis")
        self.axis.currentIndexChanged.connect(lambda _: self._on_axis())
        self.threads = QSpinBox()
        self.threads.setRange(1, max(1, os.cpu_count() or 1))
        self.threads.setValue(1)
        self.batch = QSpinBox()
        self.batch.setRange(1, 256)
        self.batch.setValue(1)
        self.seq = QSpinBox()
        self.seq.setRange(8, 512)
        self.seq.setValue(128)
        self.formats = QComboBox()
        for text, fmts in (("fp32", ("fp32",)), ("fp32 + int8", ("fp32", "int8"))):
            self.formats.addItem(text, fmts)
        self.formats.setCurrentIndex(1)  # INT8 points with their own accuracy come with the measurement
        self.runtime = QComboBox()
        self.runtime.setObjectName("latencyRuntime")
        self.runtime.addItem("onnxruntime", "onnxruntime")
        import importlib.util

        if importlib.util.find_spec("openvino") is not None:  # the intel-cpu / desktop-cpu presets' runtime
            self.runtime.addItem("OpenVINO", "openvino")
        self.runtime.setToolTip(
            "The runtime the latency is measured with. OpenVINO is what the intel-cpu and "
            "desktop-cpu presets deploy; its figures are kept as the device "
            "'this machine (OpenVINO)' in the 'measured on' list"
        )
        self.measure = QPushButton("Measure latency")
        self.measure.setObjectName("measureLatency")
        self.measure.setToolTip(
            "Exports every sub-network to ONNX and times it with onnxruntime on this machine "
            "(in a separate process). Figures taken while other work runs are slower and noisier."
        )
        self.measure.clicked.connect(self.measure_latency)
        # latency measured on a device with a device kit (dynastudio device-kit), picked here
        self.device_pick = QComboBox()
        self.device_pick.setObjectName("latencyDevice")
        self.device_pick.setToolTip("Whose latency the chart shows: this machine's, or a device's (from a device kit)")
        self.device_pick.activated.connect(lambda _: self.reload())
        self.device_label = QLabel("measured on:")
        self.import_button = QPushButton("Import device latency…")
        self.import_button.setObjectName("importDeviceLatency")
        self.import_button.setToolTip(
            "Add the latency-<device>.json that a device kit's run_kit.py wrote on the device"
        )
        self.import_button.clicked.connect(self.import_device_latency)
        # tests replace this; the real one asks with a file dialog
        self.pick_file = lambda: QFileDialog.getOpenFileName(
            self, "Import device latency", "", "Device latency (latency-*.json);;JSON (*.json)"
        )[0]
        lat = QHBoxLayout()
        lat.addWidget(QLabel("x axis:"))
        lat.addWidget(self.axis)
        lat.addSpacing(16)
        for text, w in (
            ("threads", self.threads),
            ("batch", self.batch),
            ("sequence", self.seq),
            ("formats", self.formats),
            ("runtime", self.runtime),
        ):
            lat.addWidget(QLabel(text))
            lat.addWidget(w)
        lat.addWidget(self.measure)
        lat.addStretch(1)
        self.device = QLabel()
        self.device.setStyleSheet(HINT_CSS)
        self.device.setWordWrap(True)

        # ---- chart ----
        self.plot = pg.PlotWidget()
        self.plot.showGrid(x=True, y=True, alpha=0.25)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.front_line = pg.PlotDataItem(
            pen=pg.mkPen("#888", width=1.5, style=Qt.PenStyle.DashLine), name="Pareto front"
        )
        self.scatter = pg.ScatterPlotItem(
            size=13,
            pen=pg.mkPen("w", width=1),
            hoverable=True,
            hoverPen=pg.mkPen("k", width=2),
            hoverSize=16,
            tip=self._tip,
            name="sub-network",
        )
        self.best_ring = pg.ScatterPlotItem(
            size=26, symbol="o", pen=pg.mkPen("#2ca02c", width=3), brush=None, name="best under the budget"
        )
        self.selected_ring = pg.ScatterPlotItem(
            size=22, symbol="s", pen=pg.mkPen("#d62728", width=2.5), brush=None, name="selected"
        )
        self.budget_line = pg.InfiniteLine(
            angle=90,
            movable=True,
            pen=pg.mkPen("#2ca02c", width=1.5, style=Qt.PenStyle.DotLine),
            label="budget",
            labelOpts={"position": 0.96, "color": "#2ca02c", "anchors": [(1, 0), (1, 0)]},
        )
        self.plot.addLegend(offset=(-40, -10), labelTextSize="9pt")
        plain_axes(self.plot.getPlotItem())
        # the score of always predicting the majority class (or the mean): a cell on this line learned nothing
        self.chance_line = pg.InfiniteLine(
            angle=0,
            movable=False,
            pen=pg.mkPen("#777", width=1.2, style=Qt.PenStyle.DashLine),
            label="",
            labelOpts={"position": 0.02, "color": "#555", "anchors": [(0, 1), (0, 1)]},
        )
        self.chance_line.setVisible(False)
        self.plot.addItem(self.chance_line, ignoreBounds=True)
        self.chance: float | None = None
        for item in (self.front_line, self.scatter, self.best_ring, self.selected_ring):
            self.plot.addItem(item)
        self.plot.addItem(self.budget_line, ignoreBounds=True)
        self.budget_line.sigPositionChanged.connect(self._on_line_moved)
        self.scatter.sigClicked.connect(self._on_points_clicked)
        # the rings sit on top of their point and get its clicks first: hand those on to the points
        for ring in (self.best_ring, self.selected_ring):
            ring.sigClicked.connect(self._on_ring_clicked)
        self.scatter.sigHovered.connect(self._on_hovered)

        # ---- budget ----
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setObjectName("budget")
        self.slider.setRange(0, SLIDER_STEPS)
        self.slider.setValue(SLIDER_STEPS)
        self.slider.valueChanged.connect(self._on_slider)
        self.budget_text = QLabel()
        self.budget_text.setObjectName("budgetText")
        self.budget_text.setMinimumWidth(420)
        self.pick_best = QPushButton("Select it")
        self.pick_best.clicked.connect(
            lambda: self.best is not None and self.state.select(split_key(self._plot_labels[self.best])[0])
        )
        budget = QHBoxLayout()
        budget.addWidget(QLabel("Budget:"))
        budget.addWidget(self.slider, 1)
        budget.addWidget(self.budget_text)
        budget.addWidget(self.pick_best)

        # ---- table ----
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setSortingEnabled(True)
        self.table.itemSelectionChanged.connect(self._on_table_selection)

        chart = QWidget()
        cl = QVBoxLayout(chart)
        cl.setContentsMargins(0, 0, 0, 0)
        cl.addWidget(self.plot, 1)
        self.encoding = QLabel()
        self.encoding.setTextFormat(Qt.TextFormat.RichText)
        self.encoding.setWordWrap(True)  # a long line must wrap, not widen the window past a laptop screen
        cl.addWidget(self.encoding)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(chart)
        split.addWidget(self.table)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setSizes([640, 440])

        self.hover = QLabel("Hover a point for its details; click one (or a table row) to select it for export.")
        self.hover.setStyleSheet(HINT_CSS)
        lay = QVBoxLayout(self)
        lay.addLayout(lat)
        where = QHBoxLayout()  # how the latency was measured, and on which device
        where.addWidget(self.device, 1)
        where.addWidget(self.device_label)
        where.addWidget(self.device_pick)
        where.addWidget(self.import_button)
        lay.addLayout(where)
        lay.addWidget(split, 1)
        lay.addLayout(budget)
        lay.addWidget(self.hover)

        self.handle = None  # the latency job this page started
        state.projectChanged.connect(self._on_project_changed)
        state.projectUpdated.connect(lambda _: self.reload_when_shown())
        state.selectionChanged.connect(self._show_selection)
        state.runner.busyChanged.connect(lambda _: self._update_measure())
        self._on_project_changed(state.project)

    def _on_project_changed(self, project) -> None:
        if project is not None:  # latency is measured at the project's own sequence length unless changed
            self.seq.setValue(project.config.train.max_seq_length)
        self.reload()

    # ---- data ----------------------------------------------------------------------------------

    def selected_device(self) -> str | None:
        """The device whose latency is shown; None for this machine."""
        return self.device_pick.currentData()

    def reload(self) -> None:
        grid = self.state.grid() or NO_RESULTS
        devices = list(grid.devices)
        keep = self.selected_device()
        if self._show_device in devices:  # a measurement kept as a device of its own (OpenVINO): show it
            keep, self._show_device = self._show_device, None
        self.device_pick.blockSignals(True)
        self.device_pick.clear()
        self.device_pick.addItem("this machine", None)
        for d in devices:
            self.device_pick.addItem(d, d)
        self.device_pick.setCurrentIndex(max(0, self.device_pick.findData(keep)) if keep in devices else 0)
        self.device_pick.blockSignals(False)
        for w in (self.device_pick, self.device_label):
            w.setVisible(bool(devices))
        if self.selected_device() is not None:  # the same grid, with that device's latency columns
            grid = self.state.grid(device=self.selected_device()) or grid
        rows = sorted([r for r in grid.rows if r.value is not None], key=lambda r: label_sort_key(r.label))
        self.grid = replace(grid, rows=tuple(rows))
        self.rows = rows
        self.labels = [r.label for r in self.rows]
        self.metric_name = grid.metric or "metric"
        self.setup = grid.setup or {}
        self.flops_seq = grid.flops_seq_len
        self.chance = grid.chance
        self.chance_line.setVisible(self.chance is not None and bool(self.rows))
        if self.chance is not None:
            self.chance_line.setValue(self.chance)
            self.chance_line.label.setFormat(f"{chance_name(self.metric_name)} {self.chance:.3f}")
        keep = self.axis.currentData()
        self.axis.blockSignals(True)
        self.axis.clear()
        measured = self.grid.precisions()
        if len(measured) > 1:  # first: every precision, each point with its own metric
            self.axis.addItem(f"latency: {' + '.join(measured)} (ms)", ANY_LATENCY)
        for p in measured:
            self.axis.addItem(f"latency {p} (ms)", latency_axis(p))
        self.axis.addItem("relative FLOPs (no latency needed)", FLOPS_AXIS)
        i = self.axis.findData(keep)
        self.axis.setCurrentIndex(i if i >= 0 and keep != FLOPS_AXIS else 0)
        self.axis.blockSignals(False)
        self._fill_table()
        self._on_axis()
        self._update_measure()

    def _on_axis(self) -> None:
        self.x_key = self.axis.currentData() or FLOPS_AXIS
        self.points = grid_points(self.grid, self.x_key)
        self.xs = np.asarray([p.x for p in self.points], dtype=float)
        self.ys = np.asarray([p.y for p in self.points], dtype=float)
        self._plot_labels = [point_key(p.label, p.precision) for p in self.points]  # "@int8" for INT8 points
        self._precisions = [p.precision for p in self.points]
        unscored = sorted(set(self.grid.precisions()) - {"fp32"} - set(self._precisions))
        if self.x_key == FLOPS_AXIS:
            self.plot.setLabel(
                "bottom",
                f"relative FLOPs at {self.flops_seq} tokens (1.0 = full model)"
                + (" — latency not measured yet" if not self.grid.precisions() else ""),
            )
            self.device.setText(
                "The x axis is the compute each sub-network needs, relative to the full model. "
                "Measure latency to place them on this machine's real timings."
            )
        else:
            s = self.setup
            what = "" if self.x_key == ANY_LATENCY else f"{axis_precision(self.x_key)} "
            self.plot.setLabel("bottom", f"{what}latency, ms per batch (median)")
            self.device.setText(
                f"Measured on {s.get('device', 'this machine')}: {s.get('threads', '?')} thread(s), "
                f"batch {s.get('batch', '?')}, {s.get('seq', '?')} tokens, {s.get('runtime', 'onnxruntime')}."
                + (
                    f" No dev {self.metric_name} measured for {', '.join(unscored)} yet: measure latency "
                    "again to place those points."
                    if unscored
                    else ""
                )
            )
        self.plot.setLabel("left", f"dev {self.metric_name}")
        self.plot.setTitle(
            f"dev {self.metric_name} vs {'latency' if self.x_key != FLOPS_AXIS else 'compute'}: "
            f"{len(self.xs)} sub-networks",
            size="11pt",
        )
        widths = sorted({r.width_mult for r in self.rows}, reverse=True) or [1.0]
        depths = sorted({r.depth_mult for r in self.rows}, reverse=True) or [1.0]
        self._colours = [subnet_colour(split_key(k)[0], widths) for k in self._plot_labels]
        spots = [
            dict(
                pos=(x, y),
                data=key,
                brush=self._fill(c, p),
                symbol=subnet_symbol(split_key(key)[0], depths),
                pen=pg.mkPen(c if p != "fp32" else "w", width=2 if p != "fp32" else 1),
            )
            for x, y, key, c, p in zip(self.xs, self.ys, self._plot_labels, self._colours, self._precisions)
        ]
        legend = encoding_legend_html(widths, depths) if self.rows else ""
        if len(set(self._precisions)) > 1:
            legend += " &nbsp;·&nbsp; filled: fp32, hollow: INT8, faint: fp16 (each at its own dev metric)"
        self.encoding.setText(legend)
        self.scatter.setData(spots=spots)
        if len(self.xs):
            front = pareto_front(self.points)
            self.front_line.setData([p.x for p in front], [p.y for p in front])
            shown = chance_in_view(self.ys, self.chance)
            fit_view(
                self.plot.getPlotItem(),
                self.xs,
                list(self.ys) + ([self.chance] if shown else []),
                x_start=None,
                bounds=METRIC_BOUNDS.get(self.metric_name, (None, None)),
            )
            if self.chance is not None and not shown:  # far below the points: said, not drawn out of view
                self.encoding.setText(
                    self.encoding.text() + f" &nbsp;·&nbsp; {chance_name(self.metric_name)}: "
                    f"{self.chance:.3f}, below the chart"
                )
        else:
            self.front_line.setData([], [])
        self._fill_table_x()
        self._on_slider(self.slider.value())
        self._show_selection(self.state.selected)

    @staticmethod
    def _fill(colour, precision: str):
        if precision == "int8":
            return pg.mkBrush(255, 255, 255, 230)
        c = QColor(colour)
        if precision == "fp16":
            c.setAlpha(110)
        return pg.mkBrush(c)

    # ---- table ---------------------------------------------------------------------------------
    def _fill_table(self) -> None:
        self.table.blockSignals(True)
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(self.rows))
        self.table.horizontalHeaderItem(1).setText(self.metric_name)
        for i, r in enumerate(self.rows):
            size, params, flops = _fp32_size(r), r.total_params or 0, r.flops_rel or 0
            size_text = f"{size:.1f} MB" if size is not None else f"≈{params * 4 / 1e6:.0f} MB"
            cells = [
                (r.label, (r.width_mult, r.depth_mult)),
                (f"{r.value:.4f}", r.value),
                (fmt_params(r.total_params), params),
                (size_text, size or params * 4 / 1e6),
                (f"{flops:.3f}", flops),
                ("-", 0.0),
            ]
            for j, (text, key) in enumerate(cells):
                item = _SortItem(text, key)
                item.setData(Qt.ItemDataRole.UserRole + 1, r.label)
                if j == 0:
                    item.setForeground(QBrush(QColor(subnet_colour(r.label))))
                self.table.setItem(i, j, item)
        self.table.setSortingEnabled(True)
        self.table.blockSignals(False)

    def _fill_table_x(self) -> None:
        """The latency column follows the chosen x axis."""
        self.table.setSortingEnabled(False)
        lat = axis_precision(self.x_key) or (self.grid.precisions() or [None])[0]
        self.table.horizontalHeaderItem(5).setText(f"latency {lat} (ms)" if lat else "latency (ms)")
        by_label = {r.label: r for r in self.rows}
        for i in range(self.table.rowCount()):
            label = self.table.item(i, 0).data(Qt.ItemDataRole.UserRole + 1)
            v = by_label[label].latency_ms(lat) if lat else None
            item = _SortItem(f"{v:.2f}" if v is not None else "—", v if v is not None else 1e18)
            item.setData(Qt.ItemDataRole.UserRole + 1, label)
            self.table.setItem(i, 5, item)
        self.table.setSortingEnabled(True)
        self.table.resizeColumnsToContents()
        # the whole table fits beside the chart: no hidden latency column behind a scroll bar
        h = self.table.horizontalHeader()
        need = sum(max(self.table.sizeHintForColumn(j), h.sectionSizeHint(j)) for j in range(self.table.columnCount()))
        self.table.setMinimumWidth(min(560, need + self.table.frameWidth() * 2 + 20))

    def _table_row_of(self, label: str) -> int:
        for i in range(self.table.rowCount()):
            if self.table.item(i, 0).data(Qt.ItemDataRole.UserRole + 1) == label:
                return i
        return -1

    # ---- selection (chart <-> table <-> state) -------------------------------------------------
    def _on_points_clicked(self, _item, points, _ev=None) -> None:
        if len(points):
            self.state.select(split_key(points[0].data())[0])

    def _on_ring_clicked(self, _ring, _points, ev) -> None:
        self._on_points_clicked(self.scatter, self.scatter.pointsAt(self.scatter.mapFromScene(ev.scenePos())))

    def _on_table_selection(self) -> None:
        items = self.table.selectedItems()
        if items:
            self.state.select(items[0].data(Qt.ItemDataRole.UserRole + 1))

    def _show_selection(self, label) -> None:
        keys = [k for k in self._plot_labels if split_key(k)[0] == label]
        if keys:  # its fp32 point when shown, else its first one
            i = self._plot_labels.index(label if label in keys else keys[0])
            self.selected_ring.setData([self.xs[i]], [self.ys[i]])
        else:
            self.selected_ring.setData([], [])
        row = self._table_row_of(label) if label else -1
        self.table.blockSignals(True)
        if row >= 0:
            self.table.selectRow(row)
            self.table.scrollToItem(self.table.item(row, 0))
        else:
            self.table.clearSelection()
        self.table.blockSignals(False)
        if label:
            self.hover.setText(f"Selected {label}: the Export page exports it.")

    def point_for(self, label: str, precision: str = "fp32") -> tuple[float, float]:
        i = self._plot_labels.index(point_key(label, precision))
        return float(self.xs[i]), float(self.ys[i])

    # ---- hover ---------------------------------------------------------------------------------
    def _tip(self, x: float, y: float, data) -> str:
        label, precision = split_key(data)
        r = self.grid.row(label)
        if r is None:
            return str(data)
        scores = [
            f"dev {self.metric_name} {p}: {m:.4f}"
            for p in r.precisions
            if p != "fp32" and (m := r.metric_at(p)) is not None
        ]
        size = _fp32_size(r)
        lat = [f"latency {p}: {ms:.2f} ms" for p in r.precisions if (ms := r.latency_ms(p)) is not None]
        return "\n".join(
            [
                f"{r.label}  (width {r.width_mult:g}, depth {r.depth_mult:g})"
                + (f", point: {precision}" if precision != "fp32" else ""),
                f"dev {self.metric_name} fp32: {r.value:.4f}",
                *scores,
                f"parameters: {fmt_params(r.total_params)}",
                f"ONNX fp32 size: {size:.1f} MB"
                if size is not None
                else f"size: ≈{(r.total_params or 0) * 4 / 1e6:.0f} MB (fp32 weights)",
                f"FLOPs: {r.flops_rel or 0:.3f} of the full model",
                *(lat or ["latency: not measured"]),
            ]
        )

    def _on_hovered(self, _item, points, _ev) -> None:
        if len(points):
            self.hover.setText(self._tip(0, 0, points[0].data()).replace("\n", " · "))

    # ---- budget --------------------------------------------------------------------------------
    def _budget_value(self, v: int) -> float:
        if not len(self.xs):
            return 0.0
        lo, hi = float(self.xs.min()), float(self.xs.max())
        return lo + (hi - lo) * v / SLIDER_STEPS

    def _on_slider(self, v: int) -> None:
        budget = self._budget_value(v)
        self.budget_line.blockSignals(True)
        self.budget_line.setValue(budget)
        self.budget_line.blockSignals(False)
        self._apply_budget(budget)

    def _on_line_moved(self) -> None:
        if not len(self.xs):
            return
        lo, hi = float(self.xs.min()), float(self.xs.max())
        v = int(round((self.budget_line.value() - lo) / ((hi - lo) or 1) * SLIDER_STEPS))
        self.slider.blockSignals(True)
        self.slider.setValue(max(0, min(SLIDER_STEPS, v)))
        self.slider.blockSignals(False)
        self._apply_budget(self.budget_line.value())

    def _apply_budget(self, budget: float) -> None:
        if not len(self.xs):
            self.best = None
            self.best_ring.setData([], [])
            self.budget_text.setText("no results yet")
            self.pick_best.setEnabled(False)
            return
        best = best_under(self.points, budget)  # the same answer as `dynastudio report --budget-ms`
        self.best = next(i for i, p in enumerate(self.points) if p is best) if best is not None else None
        unit = " ms" if self.x_key != FLOPS_AXIS else "× FLOPs"
        # points over the budget fade, the rest keep their colour: updated in place
        brushes = [
            self._fill(c, p) if x <= budget + 1e-12 else pg.mkBrush(200, 200, 200, 160)
            for x, c, p in zip(self.xs, self._colours, self._precisions)
        ]
        self.scatter.setBrush(brushes)
        if self.best is None:
            self.best_ring.setData([], [])
            self.budget_text.setText(f"≤ {budget:.3g}{unit}: nothing fits")
        else:
            b = self.best
            self.best_ring.setData([self.xs[b]], [self.ys[b]])
            label, precision = split_key(self._plot_labels[b])
            self.budget_text.setText(
                f"≤ {budget:.3g}{unit}: best is {label}" + (f" in {precision}" if precision != "fp32" else "") + " "
                f"({self.metric_name} {self.ys[b]:.4f} at {self.xs[b]:.3g}{unit})"
            )
        self.pick_best.setEnabled(self.best is not None)

    def set_budget(self, budget: float) -> None:
        lo, hi = (float(self.xs.min()), float(self.xs.max())) if len(self.xs) else (0.0, 1.0)
        self.slider.setValue(int(round((budget - lo) / ((hi - lo) or 1) * SLIDER_STEPS)))

    def import_device_latency(self) -> None:
        """Merge a device kit's result file into the project and show that device's latency."""
        from dynastudio.core import runs
        from dynastudio.core.store import import_device_latency

        project = self.state.project
        if project is None:
            return
        path = self.pick_file()
        if not path:
            return
        try:
            runs.check_not_running(project.root, "import latency while a run holds the project")
            name = import_device_latency(project, Path(path))
        except UserError as exc:
            show_error(self.window(), exc, "Cannot import the device latency")
            return
        self.state.reload()
        self.reload()
        self.device_pick.setCurrentIndex(max(0, self.device_pick.findData(name)))
        self.reload()

    # ---- latency job ---------------------------------------------------------------------------
    def measuring(self) -> bool:
        return self.handle is not None and self.handle.is_running()

    def measure_latency(self) -> None:
        """The button measures, or cancels the measurement it started."""
        from dynastudio.core.requests import LatencyRequest

        if self.measuring():
            self.handle.stop()
            self.measure.setText("Cancelling…")
            return
        project = self.state.project
        if project is None:
            return
        request = LatencyRequest(
            batch=self.batch.value(),
            seq=self.seq.value(),
            threads=self.threads.value(),
            formats=tuple(self.formats.currentData()),
            runtime=self.runtime.currentData(),
        )
        handle = self.state.start_job(self.window(), "latency", project.root, request)
        if handle is None:
            return
        if request.runtime == "openvino":
            from dynastudio.core.export.targets import OPENVINO_DEVICE

            self._show_device = OPENVINO_DEVICE
        self.handle = handle
        handle.bridge.stageProgress.connect(
            lambda e: self.measure.setText(f"Cancel ({e.done}/{e.total} done)") if e.stage == "latency" else None
        )
        handle.bridge.log.connect(lambda e: e.level == "warning" and self.device.setText(f"⚠ {e.text}"))
        handle.failed.connect(lambda info: show_error(self.window(), info, "Latency measurement failed"))
        handle.ended.connect(lambda _: self._update_measure())
        self._update_measure()

    def _update_measure(self) -> None:
        mine = self.measuring()
        self.measure.setEnabled(self.state.project is not None and (mine or not self.state.runner.is_running()))
        if mine:
            self.measure.setText("Cancel measuring")
        else:
            measured_here = self.selected_device() is None and self.grid.precisions()
            self.measure.setText("Measure again" if measured_here else "Measure latency")


def _fp32_size(row: GridRow) -> float | None:
    f = row.figures("fp32")
    return f.size_mb if f is not None else None


class _SortItem(QTableWidgetItem):
    """Sorts by a number kept beside the shown text (so '20.1 M' sorts after '9.8 M')."""

    def __init__(self, text: str, key):
        super().__init__(text)
        self.key = key

    def __lt__(self, other):
        if isinstance(other, _SortItem):
            try:
                return self.key < other.key
            except TypeError:
                return str(self.key) < str(other.key)
        return super().__lt__(other)


if __name__ == "__main__":
    from ..preview import run_preview

    run_preview(ExplorePage)
