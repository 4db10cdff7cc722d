"""Explore page: metric vs latency per sub-network, the Pareto front, a latency budget, a table in step with it."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QSpinBox,
    QSplitter,
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
)
from dynastudio.core.store.shapes import describe_shape

from ..errors import show_error
from ..state import StudioState
from ..style import (
    HINT_CSS,
    METRIC_BOUNDS,
    SEARCHED_LEGEND,
    chance_name,
    encoding_legend_html,
    fmt_params,
    is_searched,
    label_sort_key,
    subnet_colour,
    subnet_symbol,
)
from . import ReloadWhenShown
from .grid_table import GridTable, fp32_size
from .pareto_chart import DetailLine, ParetoChart

SLIDER_STEPS = 1000
PRECISION_SEP = "@"  # a point's key: "w0.5_d1" (fp32) or "w0.5_d1@int8"
HOVER_HINT = "Hover a point for its details; click one (or a table row) to select it for export."
PRECISION_LOOKS = {"fp32": "filled: fp32", "int8": "hollow: INT8", "fp16": "faint: fp16"}  # as point_brush draws them
NO_RESULTS = Grid(None, None, None, None, None, ())


def point_key(label: str, precision: str) -> str:
    return label if precision == "fp32" else f"{label}{PRECISION_SEP}{precision}"


def split_key(key: str) -> tuple[str, str]:
    label, _, precision = str(key).partition(PRECISION_SEP)
    return label, precision or "fp32"


def wide_enough(button: QPushButton, *texts: str) -> None:
    """As wide as its longest text from the start (a count in its text must not widen the window); the last
    text stays on it."""
    for text in texts:
        button.setText(text)
        button.setMinimumWidth(max(button.minimumWidth(), button.sizeHint().width()))


class ExplorePage(ReloadWhenShown, QWidget):
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
        self.chance: float | None = None

        self.plot = ParetoChart(tip=self._tip)
        self.plot.budget_line.sigPositionChanged.connect(self._on_line_moved)
        self.plot.scatter.sigClicked.connect(self._on_points_clicked)
        # the rings sit on top of their point and get its clicks first: hand those on to the points
        for ring in (self.plot.best_ring, self.plot.selected_ring):
            ring.sigClicked.connect(self._on_ring_clicked)
        self.plot.scatter.sigHovered.connect(self._on_hovered)
        self.table = GridTable()
        self.table.itemSelectionChanged.connect(self._on_table_selection)
        chart = QWidget()
        cl = QVBoxLayout(chart)
        cl.setContentsMargins(0, 0, 0, 0)
        cl.addWidget(self.plot, 1)
        self.encoding = QLabel()
        self.encoding.setTextFormat(Qt.TextFormat.RichText)
        self.encoding.setWordWrap(True)  # a long line must wrap, not widen the window past a laptop screen
        cl.addWidget(self.encoding)
        self.split = split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(chart)
        split.addWidget(self.table)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setSizes([640, 440])

        # two lines at most, elided: a long detail must never widen the window (it did, for good)
        self.hover = DetailLine(HOVER_HINT, lines=2)
        self.hover.setObjectName("pointDetail")
        self.hover.setStyleSheet(HINT_CSS)
        lay = QVBoxLayout(self)
        lay.addLayout(self._latency_bar())
        lay.addLayout(self._device_bar())
        lay.addWidget(split, 1)
        lay.addLayout(self._budget_bar())
        lay.addLayout(self._search_bar())
        lay.addWidget(self.hover)

        self.handle = None  # the latency job this page started
        self.search_handle = None  # the search job this page started
        state.projectChanged.connect(self._on_project_changed)
        state.projectUpdated.connect(lambda _: self.reload_when_shown())
        state.selectionChanged.connect(self._show_selection)
        state.runner.busyChanged.connect(lambda _: self._update_measure())
        self._on_project_changed(state.project)

    def _latency_bar(self) -> QHBoxLayout:
        """The x axis, and how to measure latency on this machine."""
        self.axis = QComboBox()
        self.axis.setObjectName("xAxis")
        self.axis.currentIndexChanged.connect(lambda _: self._on_axis())
        self.axis.setMinimumWidth(150)  # its whole text when there is room; the window's minimum width stays put
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
        # as wide as its longest text from the start: counting "Cancel (3/12 done)" must not widen the window
        wide_enough(
            self.measure, "Measure latency", "Measure again", "Cancelling…", "Cancel measuring", "Cancel (88/88 done)"
        )
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
        return lat

    def _device_bar(self) -> QHBoxLayout:
        """How the latency was measured, and on which device: this machine or one with a device kit's results."""
        self.device = QLabel()
        self.device.setStyleSheet(HINT_CSS)
        self.device.setWordWrap(True)
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
        where = QHBoxLayout()
        where.addWidget(self.device, 1)
        where.addWidget(self.device_label)
        where.addWidget(self.device_pick)
        where.addWidget(self.import_button)
        return where

    def _budget_bar(self) -> QHBoxLayout:
        """The latency (or FLOPs) budget and the best sub-network under it."""
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setObjectName("budget")
        self.slider.setRange(0, SLIDER_STEPS)
        self.slider.setValue(SLIDER_STEPS)
        self.slider.valueChanged.connect(self._on_slider)
        self.budget_text = DetailLine(lines=1, min_width=420)  # elided when the window is narrow, never wider
        self.budget_text.setObjectName("budgetText")
        self.pick_best = QPushButton("Select it")
        self.pick_best.clicked.connect(
            lambda: self.best is not None and self.state.select(split_key(self._plot_labels[self.best])[0])
        )
        budget = QHBoxLayout()
        budget.addWidget(QLabel("Budget:"))
        budget.addWidget(self.slider, 1)
        budget.addWidget(self.budget_text)
        budget.addWidget(self.pick_best)
        return budget

    def _search_bar(self) -> QHBoxLayout:
        """A search for the best shape of any depth and per-layer width within a latency budget."""
        self.search_budget = QDoubleSpinBox()
        self.search_budget.setObjectName("searchBudget")
        self.search_budget.setRange(0.01, 1e6)
        self.search_budget.setDecimals(2)
        self.search_budget.setSuffix(" ms")
        self.search_budget.setValue(5.0)
        self.search_button = QPushButton("Search sub-networks")
        self.search_button.setObjectName("searchSubnets")
        self.search_button.setToolTip(
            "Searches shapes beyond the grid (a trained depth; per layer its own heads and neurons) for the best "
            "score on held-out train rows within this latency on the device shown, predicted from timed layer "
            "shapes; on this machine the best are then timed for real. The results join the chart as stars."
        )
        self.search_button.clicked.connect(self.search_subnets)
        wide_enough(self.search_button, "Cancelling…", "Cancel search (888/888)", "Search sub-networks")
        self.search_text = DetailLine(lines=1, min_width=300)
        self.search_text.setObjectName("searchText")
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Search any shape within:"))
        bar.addWidget(self.search_budget)
        bar.addWidget(self.search_button)
        bar.addWidget(self.search_text, 1)
        return bar

    def searching(self) -> bool:
        return self.search_handle is not None and self.search_handle.is_running()

    def search_subnets(self) -> None:
        """The button searches, or cancels the search it started (a later search resumes it)."""
        from dynastudio.core.requests import SearchRequest

        if self.searching():
            self.search_handle.stop()
            self.search_button.setText("Cancelling…")
            return
        project = self.state.project
        if project is None:
            return
        request = SearchRequest(budget_ms=float(self.search_budget.value()), device=self.selected_device())
        handle = self.state.start_job(self.window(), "search", project.root, request)
        if handle is None:
            return
        self.search_handle = handle
        self.search_text.setText("searching…")
        handle.bridge.stageProgress.connect(
            lambda e: self.search_button.setText(f"Cancel search ({e.done}/{e.total})") if e.stage == "search" else None
        )
        handle.bridge.log.connect(lambda e: e.text.startswith("search:") and self.search_text.setText(e.text))
        handle.failed.connect(lambda info: show_error(self.window(), info, "The search failed"))
        handle.finished.connect(self._on_search_done)
        handle.ended.connect(lambda _: self._on_search_ended())
        self._update_measure()

    def _on_search_done(self, result) -> None:
        if isinstance(result, dict) and "chosen" in result:
            chosen = next((p for p in result.get("points", []) if p.get("label") == result["chosen"]), None)
            if chosen is not None:
                self.search_text.setText(
                    f"best within {result['budget_ms']:g} ms: {chosen['label']}, dev {self.metric_name} "
                    f"{chosen['value']:.4f} (chosen on held-out train rows); select its star to export it"
                )

    def _on_search_ended(self) -> None:
        if self.search_text.text() == "searching…":
            self.search_text.setText("")
        self.state.reload()
        self.reload()
        self._update_measure()

    def _on_project_changed(self, project) -> None:
        """Another project: nothing of the last one stays (its hovered point, its budget, its device)."""
        if project is not None:  # latency is measured at the project's own sequence length unless changed
            self.seq.setValue(project.config.train.max_seq_length)
        self._show_device = None
        for w in (self.device_pick, self.axis, self.slider):  # its device, its axis, its budget: the defaults
            w.blockSignals(True)
        self.device_pick.clear()
        self.axis.clear()
        self.slider.setValue(SLIDER_STEPS)  # the whole range: every point fits until the user sets a budget
        for w in (self.device_pick, self.axis, self.slider):
            w.blockSignals(False)
        self.hover.setText(HOVER_HINT)
        self.reload()

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().resizeEvent(event)
        self._fit_table(grow_only=True)  # a width the user gave the table by dragging stays, unless too small

    def _fit_table(self, grow_only: bool = False) -> None:
        """Give the table the width its columns up to the latency ones need (40-50% of the split), by moving the
        splitter: a minimum width on the table would raise the window's, for good."""
        sizes = self.split.sizes()
        total = sum(sizes)
        want = int(min(max(self.table.need_width, 0.4 * total), 0.5 * total))
        if total > 0 and (sizes[1] < want or not grow_only):
            self.split.setSizes([total - want, want])

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
        self.plot.set_chance(self.chance, chance_name(self.metric_name), bool(self.rows))
        keep = self.axis.currentData()
        self.axis.blockSignals(True)
        self.axis.clear()
        measured = self.grid.precisions()
        if len(measured) > 1:  # first: every precision, each point with its own metric
            self.axis.addItem(f"latency: {' + '.join(measured)} (ms)", ANY_LATENCY)
        for p in measured:
            self.axis.addItem(f"latency {p} (ms)", latency_axis(p))
        self.axis.addItem("relative FLOPs (no latency)", FLOPS_AXIS)
        i = self.axis.findData(keep)
        self.axis.setCurrentIndex(i if i >= 0 and keep != FLOPS_AXIS else 0)
        self.axis.blockSignals(False)
        self.table.fill(self.rows, self.metric_name, measured)
        self._fit_table()
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
        cells = [r for r in self.rows if r.kind == "cell"]
        widths = sorted({r.width_mult for r in cells}, reverse=True) or [1.0]
        depths = sorted({r.depth_mult for r in cells}, reverse=True) or [1.0]
        self._colours = [subnet_colour(split_key(k)[0], widths) for k in self._plot_labels]
        legend = encoding_legend_html(widths, depths) if self.rows else ""
        if any(is_searched(split_key(k)[0]) for k in self._plot_labels):
            legend += f" &nbsp;·&nbsp; {SEARCHED_LEGEND}"
        shown = [p for p in PRECISION_LOOKS if p in self._precisions]  # only the precisions with points
        if len(shown) > 1:
            legend += f" &nbsp;·&nbsp; {', '.join(PRECISION_LOOKS[p] for p in shown)} (each at its own dev metric)"
        below = self.plot.draw(
            self.points,
            self.xs,
            self.ys,
            self._plot_labels,
            self._colours,
            [subnet_symbol(split_key(k)[0], depths) for k in self._plot_labels],
            self.chance,
            METRIC_BOUNDS.get(self.metric_name, (None, None)),
        )
        if below:  # far below the points: said, not drawn out of view
            legend += f" &nbsp;·&nbsp; {chance_name(self.metric_name)}: {self.chance:.3f}, below the chart"
        self.encoding.setText(legend)
        self.table.mark_axis(axis_precision(self.x_key))
        self._on_slider(self.slider.value())
        self._show_selection(self.state.selected)

    # ---- selection (chart <-> table <-> state) -------------------------------------------------
    def _on_points_clicked(self, _item, points, _ev=None) -> None:
        if len(points):
            self.state.select(split_key(points[0].data())[0])

    def _on_ring_clicked(self, _ring, _points, ev) -> None:
        scatter = self.plot.scatter
        self._on_points_clicked(scatter, scatter.pointsAt(scatter.mapFromScene(ev.scenePos())))

    def _on_table_selection(self) -> None:
        label = self.table.selected_label()
        if label is not None:
            self.state.select(label)

    def _show_selection(self, label) -> None:
        keys = [k for k in self._plot_labels if split_key(k)[0] == label]
        if keys:  # its fp32 point when shown, else its first one
            i = self._plot_labels.index(label if label in keys else keys[0])
            self.plot.selected_ring.setData([self.xs[i]], [self.ys[i]])
        else:
            self.plot.selected_ring.setData([], [])
        self.table.show_label(label)
        self.hover.setText(self._resting_text())

    def _resting_text(self) -> str:
        """The detail line when no point is hovered: the selection, or how to use the chart."""
        label = self.state.selected
        return f"Selected {label}: the Export page exports it." if label else HOVER_HINT

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
        size = fp32_size(r)
        how = " (predicted from the device's timed layer shapes)" if r.latency_predicted else ""
        lat = [f"latency {p}: {ms:.2f} ms{how}" for p in r.precisions if (ms := r.latency_ms(p)) is not None]
        shape = (
            "searched: " + describe_shape(r.searched)
            if r.searched
            else f"width {r.width_mult:g}, depth {r.depth_mult:g}"
        )
        return "\n".join(
            [
                f"{r.label}  ({shape})" + (f", point: {precision}" if precision != "fp32" else ""),
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
        else:  # off the points: back to the selection
            self.hover.setText(self._resting_text())

    # ---- budget --------------------------------------------------------------------------------
    def _budget_value(self, v: int) -> float:
        if not len(self.xs):
            return 0.0
        lo, hi = float(self.xs.min()), float(self.xs.max())
        return lo + (hi - lo) * v / SLIDER_STEPS

    def _on_slider(self, v: int) -> None:
        budget = self._budget_value(v)
        line = self.plot.budget_line
        line.blockSignals(True)
        line.setValue(budget)
        line.blockSignals(False)
        self._apply_budget(budget)

    def _on_line_moved(self) -> None:
        if not len(self.xs):
            return
        lo, hi = float(self.xs.min()), float(self.xs.max())
        v = int(round((self.plot.budget_line.value() - lo) / ((hi - lo) or 1) * SLIDER_STEPS))
        self.slider.blockSignals(True)
        self.slider.setValue(max(0, min(SLIDER_STEPS, v)))
        self.slider.blockSignals(False)
        self._apply_budget(self.plot.budget_line.value())

    def _apply_budget(self, budget: float) -> None:
        if not len(self.xs):
            self.best = None
            self.plot.best_ring.setData([], [])
            self.budget_text.setText("no results yet")
            self.pick_best.setEnabled(False)
            return
        best = best_under(self.points, budget)  # the same answer as `dynastudio report --budget-ms`
        self.best = next(i for i, p in enumerate(self.points) if p is best) if best is not None else None
        unit = " ms" if self.x_key != FLOPS_AXIS else "× FLOPs"
        self.plot.fade_past(budget, self.xs, self._colours, self._precisions)  # and no hover ring stays there
        if self.best is None:
            self.plot.best_ring.setData([], [])
            self.budget_text.setText(f"≤ {budget:.3g}{unit}: nothing fits")
            self.table.mark_best(None, None)
        else:
            b = self.best
            self.plot.best_ring.setData([self.xs[b]], [self.ys[b]])
            label, precision = split_key(self._plot_labels[b])
            self.budget_text.setText(
                f"≤ {budget:.3g}{unit}: best is {label}" + (f" in {precision}" if precision != "fp32" else "") + " "
                f"({self.metric_name} {self.ys[b]:.4f} at {self.xs[b]:.3g}{unit})"
            )
            self.table.mark_best(label, precision if self.x_key != FLOPS_AXIS else None)
        self.pick_best.setEnabled(self.best is not None)
        if self.x_key != FLOPS_AXIS and not self.searching():  # the search starts from the budget set here
            self.search_budget.setValue(round(budget, 2))

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
        searching = self.searching()
        free = self.state.project is not None and not self.state.runner.is_running()
        self.search_button.setEnabled(searching or free)
        if not searching:
            self.search_button.setText("Search sub-networks")
        self.measure.setEnabled(self.state.project is not None and (mine or not self.state.runner.is_running()))
        if mine:
            self.measure.setText("Cancel measuring")
        else:
            measured_here = self.selected_device() is None and self.grid.precisions()
            self.measure.setText("Measure again" if measured_here else "Measure latency")


if __name__ == "__main__":
    from ..preview import run_preview

    run_preview(ExplorePage)
