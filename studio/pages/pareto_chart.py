"""The Explore page's chart: dev metric vs latency or FLOPs per sub-network, the Pareto front, a budget line, rings
for the best point under the budget and the selected one, and the chance level."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QWidget

from dynastudio.core.store import Point, pareto_front

from ..style import chance_in_view, fit_view, plain_axes

FADED = (200, 200, 200, 160)  # a point over the budget


def point_brush(colour, precision: str):
    """fp32 points are filled with their colour, INT8 ones hollow, fp16 ones faint."""
    if precision == "int8":
        return pg.mkBrush(255, 255, 255, 230)
    c = QColor(colour)
    if precision == "fp16":
        c.setAlpha(110)
    return pg.mkBrush(c)


class ParetoChart(pg.PlotWidget):
    """A fixed chart (no mouse zoom); `tip(x, y, data)` gives a point's tooltip, its data being the point's key."""

    def __init__(self, tip: Callable[[float, float, object], str], parent: QWidget | None = None):
        super().__init__(parent)
        self.showGrid(x=True, y=True, alpha=0.25)
        self.setMouseEnabled(x=False, y=False)
        self.hideButtons()
        self.front_line = pg.PlotDataItem(
            pen=pg.mkPen("#888", width=1.5, style=Qt.PenStyle.DashLine), name="Pareto front"
        )
        self.scatter = pg.ScatterPlotItem(
            size=13,
            pen=pg.mkPen("w", width=1),
            hoverable=True,
            hoverPen=pg.mkPen("k", width=2),
            hoverSize=16,
            tip=tip,
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
        self.addLegend(offset=(-40, -10), labelTextSize="9pt")
        plain_axes(self.getPlotItem())
        # the score of always predicting the majority class (or the mean): a cell on this line learned nothing
        self.chance_line = pg.InfiniteLine(
            angle=0,
            movable=False,
            pen=pg.mkPen("#777", width=1.2, style=Qt.PenStyle.DashLine),
            label="",
            labelOpts={"position": 0.02, "color": "#555", "anchors": [(0, 1), (0, 1)]},
        )
        self.chance_line.setVisible(False)
        self.addItem(self.chance_line, ignoreBounds=True)
        for item in (self.front_line, self.scatter, self.best_ring, self.selected_ring):
            self.addItem(item)
        self.addItem(self.budget_line, ignoreBounds=True)

    def set_chance(self, chance: float | None, name: str, has_points: bool) -> None:
        """The chance line at `chance`, labelled with its `name`; hidden without a chance level or points."""
        self.chance_line.setVisible(chance is not None and has_points)
        if chance is not None:
            self.chance_line.setValue(chance)
            self.chance_line.label.setFormat(f"{name} {chance:.3f}")

    def draw(
        self,
        points: list[Point],
        xs: np.ndarray,
        ys: np.ndarray,
        keys: list[str],
        colours: list[str],
        symbols: list[str],
        chance: float | None,
        bounds: tuple,
    ) -> bool:
        """Place the points (`keys` are their data), the front through them, and fit the view around them and the
        chance level when it is near; True when there is a chance level to say under the chart, being out of view."""
        precisions = [p.precision for p in points]
        spots = [
            dict(
                pos=(x, y),
                data=key,
                brush=point_brush(c, p),
                symbol=s,
                pen=pg.mkPen(c if p != "fp32" else "w", width=2 if p != "fp32" else 1),
            )
            for x, y, key, c, p, s in zip(xs, ys, keys, colours, precisions, symbols)
        ]
        self.scatter.setData(spots=spots)
        if not len(xs):
            self.front_line.setData([], [])
            return False  # no points: no chart to be out of
        front = pareto_front(points)
        self.front_line.setData([p.x for p in front], [p.y for p in front])
        shown = chance_in_view(ys, chance)
        fit_view(self.getPlotItem(), xs, list(ys) + ([chance] if shown else []), x_start=None, bounds=bounds)
        return chance is not None and not shown
