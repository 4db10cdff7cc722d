"""Live training curves: the points per stage and sub-network, and a plot that keeps one item per curve."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QPainter, QPen, QPixmap
from PySide6.QtWidgets import QHBoxLayout, QLabel, QVBoxLayout, QWidget

from dynastudio.core.config import STAGES

from ..style import (
    chance_in_view,
    chance_line,
    fit_view,
    label_sort_key,
    parse_label,
    place_chance_label,
    plain_axes,
    subnet_pen,
)

EDGE_PX = 6.0  # room between a bound the data reach (accuracy 1.000) and the frame, so markers sit whole inside
# where the chance line's label may go, tried in order: (position along the line, text anchor); anchor y 1 puts
# the text above the line, 0 below it


class CurveSet:
    """Points per stage and sub-network; a repeated step (after a resume) replaces the points from there on."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, tuple[list[int], list[float]]]] = {}

    def add(self, stage: str, step: int, values: dict) -> None:
        per_label = self.data.setdefault(stage, {})
        for label, value in values.items():
            xs, ys = per_label.setdefault(label, ([], []))
            if xs and step <= xs[-1]:
                cut = int(np.searchsorted(np.asarray(xs), step))  # steps redone after a resume
                del xs[cut:], ys[cut:]
            xs.append(step)
            ys.append(float(value))

    def restart(self, stage: str, from_step: int) -> None:
        """A stage (re)starting at `from_step` makes every later point of it stale."""
        for xs, ys in self.data.get(stage, {}).values():
            cut = int(np.searchsorted(np.asarray(xs), from_step, side="right"))
            del xs[cut:], ys[cut:]

    def clear(self) -> None:
        self.data.clear()

    def stages(self) -> list[str]:
        return [s for s in STAGES if s in self.data] + [s for s in self.data if s not in STAGES]

    def labels(self, stage: str) -> list[str]:
        return sorted(self.data.get(stage, {}), key=label_sort_key)


def show_options(labels) -> list[tuple[str, str]]:
    """The "Show:" choices for a set of sub-network labels: all of them, one width, or one depth (key "", "w0.5",
    "d0.75"); a dimension with a single value offers nothing (it would show them all again)."""
    wds = [wd for wd in map(parse_label, labels) if wd is not None]
    out = [("all sub-networks", "")]
    for name, i, key in (("width", 0, "w"), ("depth", 1, "d")):
        values = sorted({wd[i] for wd in wds}, reverse=True)
        if len(values) > 1:
            out += [(f"{name} {v:g}", f"{key}{v:g}") for v in values]
    return out


def keep_label(label: str, key: str) -> bool:
    """Whether `label` is shown under the "Show:" choice `key` (see show_options)."""
    if not key:
        return True
    wd = parse_label(label)
    if wd is None:
        return False
    return abs(wd[0 if key[0] == "w" else 1] - float(key[1:])) < 1e-9


def filter_curves(per_label: dict, key: str) -> dict:
    return {label: v for label, v in per_label.items() if keep_label(label, key)}


class LegendBox(QWidget):
    """The sub-network legend as plain widgets beside the plots: each sample is painted with the curve's own
    pen and sits on the line of its label (pyqtgraph's LegendItem drifted apart when its cell grew)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.rows = QVBoxLayout(self)
        self.rows.setContentsMargins(4, 24, 4, 4)
        self.rows.setSpacing(2)
        self.rows.addStretch(1)
        self.labels: list[str] = []

    def set_items(self, items: list[tuple[str, QPen]]) -> None:
        while self.rows.count() > 1:
            w = self.rows.takeAt(0).widget()
            if w is not None:
                w.hide()  # at once: deleteLater waits for the event loop, and the old rows showed under the new
                w.deleteLater()
        for i, (label, pen) in enumerate(items):
            row = QWidget()
            h = QHBoxLayout(row)
            h.setContentsMargins(0, 0, 0, 0)
            h.setSpacing(6)
            sample = QLabel()
            sample.setPixmap(_pen_sample(pen))
            h.addWidget(sample, 0, Qt.AlignmentFlag.AlignVCenter)
            text = QLabel(label)
            text.setObjectName(f"legend:{label}")
            h.addWidget(text, 1, Qt.AlignmentFlag.AlignVCenter)
            self.rows.insertWidget(i, row)
        self.labels = [label for label, _ in items]


def _pen_sample(pen: QPen, width: int = 30, height: int = 12) -> QPixmap:
    pix = QPixmap(width, height)
    pix.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pix)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    p = QPen(pen)
    p.setWidthF(max(2.0, pen.widthF()))
    painter.setPen(p)
    painter.drawLine(2, height // 2, width - 2, height // 2)
    painter.end()
    return pix


class CurvePlot:
    """One PlotDataItem per sub-network, kept and fed with setData; the legend is rebuilt only when the set changes.

    The view is framed from the data (x from 0 to the stage's last step, y inside the metric's bounds),
    ticks are in the values' own units, and an optional dashed line marks the chance level."""

    def __init__(
        self,
        plot: pg.PlotItem,
        title: str,
        y_label: str,
        symbols: bool = False,
        legend: LegendBox | None = None,
        bounds: tuple[float | None, float | None] = (None, None),
    ):
        self.plot = plot
        self.title = title
        self.chance_what, self.chance_below = "chance", False
        plot.setTitle(title, size="11pt")
        plot.setLabel("bottom", "optimizer step")
        plot.setLabel("left", y_label)
        plot.showGrid(x=True, y=True, alpha=0.25)
        plain_axes(plot)
        self.legend = legend
        self.symbols = symbols
        self.bounds = bounds
        self.x_end: float | None = None  # the stage's last step, so curves fill the plot from left to right
        self.items: dict[str, pg.PlotDataItem] = {}
        self.shown: list[str] = []
        self.chance: float | None = None
        self.chance_line = chance_line()
        plot.addItem(self.chance_line, ignoreBounds=True)
        # said where the curves will be, so an empty plot reads as "not yet", not as broken
        self.placeholder = pg.TextItem("", color="#888", anchor=(0.5, 0.5))
        self.placeholder.setParentItem(plot.getViewBox())
        self.chance_note = pg.TextItem("", color="#555", anchor=(0, 1))
        self.chance_note.setParentItem(plot.getViewBox())
        plot.getViewBox().sigResized.connect(self._place_placeholder)

    def set_placeholder(self, text: str) -> None:
        self.placeholder.setText(text)
        self._place_placeholder()

    def _place_placeholder(self, *_):
        r = self.plot.getViewBox().boundingRect()
        self.placeholder.setPos(r.center().x(), r.top() + 0.3 * r.height())  # above a chance line at mid-height
        self.chance_note.setPos(r.left() + 4, r.bottom() - 2)
        self._place_chance_label()

    def _place_chance_label(self) -> None:
        curves = [(it.xData, it.yData) for it in (self.items[l] for l in self.shown) if it.xData is not None]
        place_chance_label(self.chance_line, self.plot.getViewBox(), self.chance, curves)

    def setTitle(self, title: str, **kw) -> None:
        self.title = title
        self.plot.setTitle(title, **kw)

    def setLabel(self, axis: str, text: str) -> None:
        self.plot.setLabel(axis, text)

    def set_chance(self, value: float | None, what: str = "chance") -> None:
        """A dashed line at the score of always predicting the majority class (or the mean)."""
        self.chance = value
        self.chance_what = what
        self.chance_line.setVisible(value is not None)
        if value is not None:
            self.chance_line.setValue(value)
            self.chance_line.label.setFormat(f"{what} {value:.3f}")

    def show_curves(self, per_label: dict[str, tuple[list, list]]) -> None:
        labels = sorted((l for l, (xs, _) in per_label.items() if xs), key=label_sort_key)
        if labels != self.shown:
            self._relabel(labels)
        self.placeholder.setVisible(not labels)
        ends_x, ends_y = [], []
        for label in labels:
            xs, ys = (np.asarray(v, dtype=float) for v in per_label[label])
            self.items[label].setData(xs, ys)
            ends_x += [xs.min(), xs.max()]
            ends_y += [np.nanmin(ys), np.nanmax(ys)]
        # far below the curves the chance line is out of view: a note in the corner says where it is instead
        shown = bool(labels) and chance_in_view(ends_y, self.chance)
        self.chance_below = bool(labels) and self.chance is not None and not shown
        self.chance_note.setText(f"▼ {self.chance_what} {self.chance:.3f}, below" if self.chance_below else "")
        if labels:
            ys = ends_y + ([self.chance] if shown else [])
            _, y_range = fit_view(self.plot, ends_x, ys, x_end=self.x_end, bounds=self.bounds)
            note_px = self.chance_note.textItem.boundingRect().height() + 4 if self.chance_below else 0.0
            self._clear_of_edges(y_range, min(ys), max(ys), note_px)
        else:
            lo, hi = self.bounds
            self.plot.disableAutoRange()
            self.plot.setRange(
                xRange=(0, self.x_end or 1), yRange=(lo or 0.0, hi if hi is not None else 1.0), padding=0
            )
        # an empty plot has nothing to compare with the chance level, and its label would cross the placeholder
        self.chance_line.setVisible(self.chance is not None and bool(labels))
        self._place_placeholder()  # and the chance label, now that the curves are drawn

    def _clear_of_edges(self, y_range: tuple[float, float], y_min: float, y_max: float, note_px: float) -> None:
        """Widen the view where the data touch its edges: by EDGE_PX where a bound clipped the margin (accuracy
        1.000 at the top: the markers sit whole inside the frame, and no tick appears beyond the bound), and by
        `note_px` at the bottom, a strip of its own for the chance note, clear of the curves."""
        lo, hi = y_range
        height = self.plot.getViewBox().height()
        if hi <= lo:
            return
        # shares of the view's height; before the first layout the height is unknown: small shares then
        top = EDGE_PX / height if height > 4 * EDGE_PX else 0.03
        bottom = max(EDGE_PX, note_px) / height if height > 4 * EDGE_PX else (0.15 if note_px else 0.03)
        new_lo, new_hi = lo, hi
        for _ in range(4):  # each margin is a share of a span they widen: a few rounds settle it
            span = new_hi - new_lo
            new_lo, new_hi = min(lo, y_min - bottom * span), max(hi, y_max + top * span)
        if (new_lo, new_hi) != (lo, hi):
            self.plot.setYRange(new_lo, new_hi, padding=0)

    def _relabel(self, labels: list[str]) -> None:
        for label, item in self.items.items():
            if label not in labels and item.scene() is not None:
                self.plot.removeItem(item)
        for label in labels:
            item = self.items.get(label)
            if item is None:
                pen = subnet_pen(label)
                kw = dict(symbol="o", symbolSize=5, symbolBrush=pen.color(), symbolPen=None) if self.symbols else {}
                item = pg.PlotDataItem(pen=pen, **kw)
                # long runs: draw at most about one point per pixel
                item.setDownsampling(auto=True, method="peak")
                item.setClipToView(True)
                self.items[label] = item
            if item.scene() is None:
                self.plot.addItem(item)
        if self.legend is not None:
            self.legend.set_items([(label, self.items[label].opts["pen"]) for label in labels])
        self.shown = labels

    def point_count(self) -> int:
        return sum(len(self.items[l].xData) for l in self.shown if self.items[l].xData is not None)
