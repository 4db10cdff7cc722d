"""Importance page: head and FFN-neuron importance as heatmaps with colour bars, before and after rewiring, values on hover."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt
from PySide6.QtWidgets import QButtonGroup, QCheckBox, QHBoxLayout, QLabel, QRadioButton, QVBoxLayout, QWidget

from dynastudio.core.events import ImportanceReady

from ..state import StudioState
from ..style import HINT_CSS
from . import ReloadWhenShown

MAX_NEURON_COLUMNS = 96  # 1536 neurons in one row of pixels do not read; bins of 16 do


def bin_columns(a: np.ndarray, max_cols: int) -> tuple[np.ndarray, int]:
    """Mean over runs of `size` neighbouring columns so a row has at most `max_cols` cells; returns (binned, size)."""
    n = a.shape[1]
    size = max(1, int(np.ceil(n / max_cols)))
    if size == 1:
        return a, 1
    pad = (-n) % size
    if pad:  # repeat the edge so the last bin is a mean of real values
        a = np.concatenate([a, np.repeat(a[:, -1:], pad, axis=1)], axis=1)
    return a.reshape(a.shape[0], -1, size).mean(axis=2), size


def per_layer_scaled(a: np.ndarray) -> np.ndarray:
    peak = np.abs(a).max(axis=1, keepdims=True)
    return a / np.where(peak > 0, peak, 1.0)


def log_scaled(a: np.ndarray, floor: float = 1e-4) -> np.ndarray:
    """log10 of |a|, floored at `floor` of the largest value so zero scores stay drawable."""
    a = np.abs(a)
    peak = a.max() if a.size else 1.0
    return np.log10(np.maximum(a, (peak or 1.0) * floor))


class Heatmap:
    """One PlotItem with an ImageItem (rows = layers, top to bottom) and a ColorBarItem beside it."""

    def __init__(self, layout: pg.GraphicsLayoutWidget, row: int, title: str, x_label: str):
        self.plot = layout.addPlot(row=row, col=0, title=title)
        self.plot.setLabel("left", "layer")
        self.plot.setLabel("bottom", x_label)
        self.plot.invertY(True)  # layer 0 on top, as in a model summary
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.image = pg.ImageItem(axisOrder="row-major")
        self.plot.addItem(self.image)
        self.bar = pg.ColorBarItem(values=(0, 1), colorMap=pg.colormap.get("viridis"), interactive=False, width=16)
        self.bar.setImageItem(self.image, insert_in=self.plot)
        self.bar.axis.enableAutoSIPrefix(False)
        self.raw: np.ndarray | None = None  # the values behind each cell, for hover
        self.shown: np.ndarray | None = None
        self.bin = 1
        self.cuts: list[pg.InfiniteLine] = []

    def set_cuts(self, positions: list[tuple[float, str]]) -> None:
        """Dashed lines where each width ends (in the rewired order a width-w sub-network keeps what is left of them)."""
        for line in self.cuts:
            self.plot.removeItem(line)
        self.cuts = []
        for x, text in positions:
            line = pg.InfiniteLine(
                pos=x,
                angle=90,
                movable=False,
                pen=pg.mkPen("w", width=1.5, style=Qt.PenStyle.DashLine),
                label=text,
                labelOpts={"position": 0.04, "color": "w", "anchors": [(1, 0), (1, 0)]},
            )
            self.plot.addItem(line, ignoreBounds=True)
            self.cuts.append(line)

    def set(self, raw: np.ndarray, shown: np.ndarray, bin_size: int, bar_label: str) -> None:
        self.raw, self.shown, self.bin = raw, shown, bin_size
        lo, hi = float(np.nanmin(shown)), float(np.nanmax(shown))
        if hi <= lo:
            hi = lo + 1e-12
        self.image.setImage(shown, autoLevels=False, levels=(lo, hi))
        self.image.setRect(0, 0, shown.shape[1], shown.shape[0])
        self.bar.setLevels((lo, hi))
        self.bar.axis.setLabel(bar_label)
        self.plot.setXRange(0, shown.shape[1], padding=0)
        self.plot.setYRange(0, shown.shape[0], padding=0)
        # integer ticks at cell centres (a cell spans [i, i+1))
        self.plot.getAxis("left").setTicks([[(i + 0.5, str(i)) for i in range(shown.shape[0])]])
        cols = shown.shape[1]
        step = max(1, int(np.ceil(cols / (24 if bin_size == 1 else 12))))
        self.plot.getAxis("bottom").setTicks([[(j + 0.5, str(j * bin_size)) for j in range(0, cols, step)]])

    def clear(self) -> None:
        self.raw = self.shown = None
        self.image.clear()

    def cell_at(self, scene_pos: QPointF) -> tuple[int, int] | None:
        if self.shown is None or not self.plot.sceneBoundingRect().contains(scene_pos):
            return None
        p = self.plot.vb.mapSceneToView(scene_pos)
        row, col = int(np.floor(p.y())), int(np.floor(p.x()))
        if 0 <= row < self.shown.shape[0] and 0 <= col < self.shown.shape[1]:
            return row, col
        return None


class ImportancePage(ReloadWhenShown, QWidget):
    def __init__(self, state: StudioState, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.data: dict[str, np.ndarray] = {}  # head, neuron, head_rewired, neuron_rewired
        self.live = False

        self.before = QRadioButton("Before rewiring (original order)")
        self.after = QRadioButton("After rewiring (most important first)")
        self.after.setChecked(True)
        group = QButtonGroup(self)
        group.addButton(self.before)
        group.addButton(self.after)
        self.scale = QCheckBox("Scale each layer to its maximum")
        self.scale.setChecked(True)
        self.scale.setToolTip("Raw scores differ a lot between layers; scaling shows the order inside each layer.")
        self.log = QCheckBox("Log colour scale")
        self.log.setChecked(True)
        self.log.setToolTip("A few neurons hold most of the importance; a log scale shows the order of the rest.")
        bar = QHBoxLayout()
        for w in (self.before, self.after, self.scale, self.log):
            bar.addWidget(w)
        bar.addStretch(1)

        self.note = QLabel()
        self.note.setStyleSheet(HINT_CSS)
        self.note.setWordWrap(True)
        self.view = pg.GraphicsLayoutWidget()
        self.heads = Heatmap(self.view, 0, "Attention heads (layers × heads)", "head")
        self.neurons = Heatmap(self.view, 1, "FFN neurons (layers × neurons)", "neuron")
        self.view.ci.layout.setRowStretchFactor(0, 2)
        self.view.ci.layout.setRowStretchFactor(1, 2)
        self.hover = QLabel("Hover over a cell to read its value.")
        self.hover.setObjectName("hoverValue")

        lay = QVBoxLayout(self)
        lay.addLayout(bar)
        lay.addWidget(self.note)
        lay.addWidget(self.view, 1)
        lay.addWidget(self.hover)

        for w in (self.before, self.after, self.scale, self.log):
            w.toggled.connect(self.redraw)
        self.view.scene().sigMouseMoved.connect(self._on_mouse_moved)
        state.runner.jobStarted.connect(lambda h: h.bridge.importanceReady.connect(self._on_live))
        state.projectChanged.connect(lambda _: self.reload())
        state.projectUpdated.connect(lambda _: self.reload_when_shown())
        self.reload()

    # ---- data ----------------------------------------------------------------------------------
    def reload(self) -> None:
        data = self.state.importance()
        if data is None:
            if not self.live:
                self.data = {}
        else:
            self.data, self.live = data, False
        self.redraw()

    def _on_live(self, e: ImportanceReady) -> None:
        # the scores arrive before the rewired copy is saved: show them at once, original order
        self.data = {
            "head": np.asarray(e.head_importance, dtype=float),
            "neuron": np.asarray(e.neuron_importance, dtype=float),
        }
        self.live = True
        self.redraw()

    def has_data(self) -> bool:
        return self.heads.shown is not None and self.heads.shown.size > 0

    # ---- drawing -------------------------------------------------------------------------------
    def redraw(self) -> None:
        rewired = self.after.isChecked() and "head_rewired" in self.data
        self.after.setEnabled("head_rewired" in self.data or not self.data)
        suffix = "_rewired" if rewired else ""
        head, neuron = self.data.get("head" + suffix), self.data.get("neuron" + suffix)
        if head is None or neuron is None:
            for m in (self.heads, self.neurons):
                m.clear()
                m.set_cuts([])
            self.note.setText("No importance scores yet: they are computed by the rewire stage (Train page).")
            return
        scaled, log = self.scale.isChecked(), self.log.isChecked()
        label = ("log10 " if log else "") + ("importance / layer max" if scaled else "importance")
        h = per_layer_scaled(head) if scaled else head
        n = per_layer_scaled(neuron) if scaled else neuron
        n_binned, size = bin_columns(n, MAX_NEURON_COLUMNS)  # bin first: a bin's colour is its mean importance
        if log:
            h, n_binned = log_scaled(h), log_scaled(n_binned)
        self.heads.set(head, h, 1, label)
        self.neurons.set(neuron, n_binned, size, label)
        widths = sorted(w for w in self._widths() if w < 1) if rewired else []
        # the paper's counts: int(w * heads), int(w * neurons)
        self.heads.set_cuts([(int(w * head.shape[1]), f"w{w:g}") for w in widths])
        self.neurons.set_cuts([(int(w * neuron.shape[1]) / size, f"w{w:g}") for w in widths])
        self.heads.plot.setTitle(f"Attention heads ({head.shape[0]} layers × {head.shape[1]} heads)")
        self.neurons.plot.setTitle(
            f"FFN neurons ({neuron.shape[0]} layers × {neuron.shape[1]} neurons"
            + (f", mean of each {size} neighbours)" if size > 1 else ")")
        )
        self.neurons.plot.setLabel("bottom", f"neuron (each cell: {size} neighbours)" if size > 1 else "neuron")
        order = "in the rewired order: column 0 is kept by every width" if rewired else "in the model's original order"
        where = "live from the running rewire stage" if self.live else "from importance.safetensors"
        self.note.setText(
            f"|dL/d mask| summed over the held-out batches, {order}; {where}. "
            f"A width-w sub-network keeps the first w of each row."
        )

    def _widths(self) -> tuple:
        p = self.state.project
        return p.config.train.width_mults if p is not None else ()

    # ---- hover ---------------------------------------------------------------------------------
    def describe(self, which: str, row: int, col: int) -> str:
        m = self.heads if which == "head" else self.neurons
        if m.raw is None:
            return ""
        if which == "head":
            v = m.raw[row, col]
            rel = m.raw[row].max()
            return f"layer {row}, head {col}: importance {v:.4g} ({v / rel if rel else 0:.2f} of the layer's max)"
        lo = col * m.bin
        hi = min(m.raw.shape[1], lo + m.bin)
        vals = m.raw[row, lo:hi]
        span = f"neurons {lo}–{hi - 1}" if hi - lo > 1 else f"neuron {lo}"
        return f"layer {row}, {span}: mean importance {vals.mean():.4g} (max {vals.max():.4g})"

    def _on_mouse_moved(self, pos: QPointF) -> None:
        for which, m in (("head", self.heads), ("neuron", self.neurons)):
            cell = m.cell_at(pos)
            if cell is not None:
                text = self.describe(which, *cell)
                self.hover.setText(text)
                self.view.setToolTip(text)
                return
        self.view.setToolTip("")


if __name__ == "__main__":
    from ..preview import run_preview

    run_preview(ImportancePage)
