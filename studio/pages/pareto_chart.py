"""The Explore page's chart: dev metric vs latency or FLOPs per sub-network, the Pareto front, a budget line, rings
for the best point under the budget and the selected one, the chance level; and the detail lines under it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QColor, QTextLayout
from PySide6.QtWidgets import QLabel, QSizePolicy, QWidget

from dynastudio.core.store import Point, pareto_front

from ..style import chance_in_view, chance_line, fit_view, place_chance_label, plain_axes

FADED = (200, 200, 200, 160)  # a point over the budget
FADED_OUTLINE = (175, 175, 175, 200)  # the outline of a hollow (INT8) or faint (fp16) point over the budget


def point_brush(colour, precision: str):
    """fp32 points are filled with their colour, INT8 ones hollow, fp16 ones faint."""
    if precision == "int8":
        return pg.mkBrush(255, 255, 255, 230)
    c = QColor(colour)
    if precision == "fp16":
        c.setAlpha(110)
    return pg.mkBrush(c)


def point_pen(colour, precision: str, faded: bool = False):
    """fp32 points have a white outline; the others are drawn by their outline, in their colour."""
    if precision == "fp32":
        return pg.mkPen("w", width=1)
    return pg.mkPen(*FADED_OUTLINE, width=2) if faded else pg.mkPen(colour, width=2)


class DetailLine(QLabel):
    """Text that never widens the window: at most `lines` lines at the width it is given, the rest elided (all of it
    in the tooltip). It asks the layout for `min_width` only, whatever the text, so a long text cannot raise the
    window's minimum width, which a plain QLabel's does for good."""

    def __init__(self, text: str = "", lines: int = 1, min_width: int = 0, parent: QWidget | None = None):
        super().__init__(parent)
        self._full = ""
        self._lines = max(1, lines)
        self._min_width = min_width
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        self.setText(text)

    def text(self) -> str:  # the whole text, not the part that fits
        return self._full

    def setText(self, text: str) -> None:  # noqa: N802 (Qt's name)
        self._full = str(text)
        self.updateGeometry()
        self._fit()

    def _height(self) -> int:
        m = self.contentsMargins()
        return self.fontMetrics().lineSpacing() * self._lines + m.top() + m.bottom() + 2

    def sizeHint(self) -> QSize:  # noqa: N802
        m = self.contentsMargins()
        # one line asks for its text's width (room permitting); several lines take the width they are given
        want = self.fontMetrics().horizontalAdvance(self._full) + 4 if self._lines == 1 else 0
        return QSize(max(want, self._min_width) + m.left() + m.right(), self._height())

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(self._min_width, self._height())

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._fit()

    def _fit(self) -> None:
        width, fm, text = max(1, self.contentsRect().width()), self.fontMetrics(), self._full
        shown: list[str] = []
        layout = QTextLayout(text, self.font())
        layout.beginLayout()
        while len(shown) < self._lines:
            line = layout.createLine()
            if not line.isValid():
                break
            line.setLineWidth(width)
            start = line.textStart()
            if len(shown) == self._lines - 1:  # the last line takes the rest, elided
                shown.append(fm.elidedText(text[start:], Qt.TextElideMode.ElideRight, width))
                break
            shown.append(text[start : start + line.textLength()].rstrip())
        layout.endLayout()
        fitted = "\n".join(shown)
        super().setText(fitted)
        self.setToolTip(text if fitted.replace("\n", " ") != text else "")


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
        self.legend = self.addLegend(offset=(-40, -10), labelTextSize="9pt")
        plain_axes(self.getPlotItem())
        # the score of always predicting the majority class (or the mean): a cell on this line learned nothing
        self.chance_line = chance_line()
        self.addItem(self.chance_line, ignoreBounds=True)
        for item in (self.front_line, self.scatter, self.best_ring, self.selected_ring):
            self.addItem(item)
        self.addItem(self.budget_line, ignoreBounds=True)
        self._chance: float | None = None
        self.getViewBox().sigResized.connect(self.place_chance_label)
        self.getViewBox().sigRangeChanged.connect(self.place_chance_label)

    def place_chance_label(self, *_) -> None:
        """The chance label clear of the points and the legend (it sat on the smallest sub-network's marker)."""
        xs, ys = self.scatter.getData()
        shapes = [([x], [y]) for x, y in zip(xs, ys)]
        place_chance_label(self.chance_line, self.getViewBox(), self._chance, shapes, avoid=[self.legend])

    def fade_past(self, budget: float, xs: np.ndarray, colours: list[str], precisions: list[str]) -> None:
        """The points past the budget fade, fill and outline, and keep no hover ring; the others keep their look.
        Updated in place (no new spots)."""
        inside = np.asarray(xs, dtype=float) <= budget + 1e-12
        looks = list(zip(inside, colours, precisions))
        self.scatter.setBrush([point_brush(c, p) if ok else pg.mkBrush(*FADED) for ok, c, p in looks])
        self.scatter.setPen([point_pen(c, p, faded=not ok) for ok, c, p in looks])
        self.drop_hover(inside)

    def drop_hover(self, keep) -> None:
        """Take the hover ring off the points where `keep` is False. pyqtgraph drops it only when the mouse moves
        off the point, which a drag of the budget line that ends outside the chart never tells it."""
        data = self.scatter.data
        keep = np.asarray(keep, dtype=bool)
        if len(data) != len(keep):
            return
        gone = data["hovered"] & ~keep
        if gone.any():
            data["sourceRect"][gone] = 0  # redraw those spots from the atlas in their plain style
            data["hovered"] = data["hovered"] & keep
            self.scatter.updateSpots()

    def set_chance(self, chance: float | None, name: str, has_points: bool) -> None:
        """The chance line at `chance`, labelled with its `name`; hidden without a chance level or points."""
        self.chance_line.setVisible(chance is not None and has_points)
        self._chance = chance
        if chance is not None:
            self.chance_line.setValue(chance)
            self.chance_line.label.setFormat(f"{name} {chance:.3f}")
        self.place_chance_label()

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
                pen=point_pen(c, p),
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
        self.place_chance_label()
        return chance is not None and not shown
