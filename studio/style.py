"""Shared look: one colour per width, one line style per depth, number formats, so every page reads the same."""

from __future__ import annotations

import re

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt

# light plots read better in screenshots and next to native widgets
pg.setConfigOptions(antialias=True, background="w", foreground="#333")

# widths from widest to narrowest; four hues far apart (and colour-blind safe) so 1.0 and 0.75 never look alike
_WIDTH_COLOURS = ["#1f4e99", "#AA3377", "#228833", "#E69F00", "#66CCEE", "#EE6677", "#999999", "#000000"]
_DEPTH_SYMBOLS = ["o", "t", "s", "d", "star"]
_DEPTH_STYLES = [Qt.PenStyle.SolidLine, Qt.PenStyle.DashLine, Qt.PenStyle.DotLine, Qt.PenStyle.DashDotLine]
_LABEL = re.compile(r"^w([0-9.]+)_d([0-9.]+)$")
_SEARCHED = re.compile(r"^s[0-9]+L-[0-9a-f]+$")  # core.dynamic.ArchSpec.label: a shape `dynastudio search` found
SEARCHED_COLOUR, SEARCHED_SYMBOL = "#000000", "star"


def is_searched(label: str) -> bool:
    return bool(_SEARCHED.match(label))


def parse_label(label: str) -> tuple[float, float] | None:
    """'w0.75_d1' -> (0.75, 1.0); None for labels of another shape (e.g. 'full')."""
    m = _LABEL.match(label)
    return (float(m.group(1)), float(m.group(2))) if m else None


def label_sort_key(label: str):
    wd = parse_label(label)
    return (0, -wd[1], -wd[0]) if wd else (1, label)


def subnet_colour(label: str, widths=(1.0, 0.75, 0.5, 0.25)) -> str:
    if is_searched(label):
        return SEARCHED_COLOUR
    wd = parse_label(label)
    if wd is None:
        return _WIDTH_COLOURS[0]
    ordered = sorted(set(widths) | {wd[0]}, reverse=True)
    return _WIDTH_COLOURS[ordered.index(wd[0]) % len(_WIDTH_COLOURS)]


def subnet_pen(label: str, depths=(1.0, 0.75, 0.5), width: float = 1.6):
    wd = parse_label(label)
    style = Qt.PenStyle.SolidLine
    if wd is not None:
        ordered = sorted(set(depths) | {wd[1]}, reverse=True)
        style = _DEPTH_STYLES[ordered.index(wd[1]) % len(_DEPTH_STYLES)]
    return pg.mkPen(subnet_colour(label), width=width, style=style)


def subnet_symbol(label: str, depths=(1.0, 0.75, 0.5)) -> str:
    """Scatter symbol per depth: circle = full depth, triangle, square... (colour already says the width); a star
    for a searched shape."""
    if is_searched(label):
        return SEARCHED_SYMBOL
    wd = parse_label(label)
    if wd is None:
        return "o"
    ordered = sorted(set(depths) | {wd[1]}, reverse=True)
    return _DEPTH_SYMBOLS[ordered.index(wd[1]) % len(_DEPTH_SYMBOLS)]


def encoding_legend_html(widths, depths) -> str:
    """One line saying what colour and shape mean, for charts with one mark per sub-network."""
    shapes = {"o": "●", "t": "▼", "s": "■", "d": "◆", "star": "★"}
    ws = " ".join(
        f"<span style='color:{subnet_colour(f'w{w:g}_d1', widths)}'>■ {w:g}</span>"
        for w in sorted(widths, reverse=True)
    )
    ds = " ".join(f"{shapes[subnet_symbol(f'w1_d{d:g}', depths)]} {d:g}" for d in sorted(depths, reverse=True))
    return f"colour = width: {ws} &nbsp;&nbsp; shape = depth: {ds}"


SEARCHED_LEGEND = f"<span style='color:{SEARCHED_COLOUR}'>★</span> a shape `dynastudio search` found"


def fmt_params(n) -> str:
    return f"{n / 1e6:.1f} M" if isinstance(n, (int, float)) else "-"


def fmt_seconds(s: float) -> str:
    s = max(0, int(round(s)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


# the values a metric can take: its axis never shows more (dev accuracy above 1 means nothing)
METRIC_BOUNDS = {
    "accuracy": (0.0, 1.0),
    "f1": (0.0, 1.0),
    "matthews": (-1.0, 1.0),
    "pearson_spearman": (-1.0, 1.0),
    "pearson": (-1.0, 1.0),
    "spearman": (-1.0, 1.0),
}


def chance_line() -> pg.InfiniteLine:
    """The dashed horizontal line at the chance score, hidden until a score is set; labelled at its left end."""
    line = pg.InfiniteLine(
        angle=0,
        movable=False,
        pen=pg.mkPen("#777", width=1.2, style=Qt.PenStyle.DashLine),
        label="",
        labelOpts={"position": 0.02, "color": "#555", "anchors": [(0, 1), (0, 1)]},
    )
    line.setVisible(False)
    return line


# where along the chance line its label may sit, tried in this order: (fraction of the width, label anchor)
CHANCE_SPOTS = ((0.02, (0, 1)), (0.02, (0, 0)), (0.5, (0.5, 1)), (0.5, (0.5, 0)), (0.98, (1, 1)), (0.98, (1, 0)))


def crosses(xs, ys, xa: float, xb: float, ya: float, yb: float) -> bool:
    """Whether a curve (xs ascending; one point is a marker) passes through the box [xa, xb] x [ya, yb]: its
    points inside the x-range and its values at the box's sides, interpolated between points."""
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if xs.size == 0 or xb < xs[0] or xa > xs[-1]:
        return False
    vals = np.concatenate([ys[(xs >= xa) & (xs <= xb)], np.interp([max(xa, xs[0]), min(xb, xs[-1])], xs, ys)])
    vals = vals[vals == vals]
    return bool(vals.size) and vals.max() >= ya and vals.min() <= yb


def place_chance_label(line: pg.InfiniteLine, vb: pg.ViewBox, chance: float | None, shapes, avoid=()) -> None:
    """Put the chance line's label at the first spot along the line that no curve or marker in `shapes`
    ((xs, ys) pairs) crosses and no item in `avoid` (a legend) covers, in pixels (the label keeps its size
    whatever the zoom); where none is free, the least crowded one, on a light background so it stays readable."""
    label = line.label
    (x0, x1), (y0, y1) = vb.viewRange()
    w_px, h_px = vb.width(), vb.height()
    if chance is None or not line.isVisible() or w_px <= 0 or h_px <= 0:
        return
    text = label.textItem.boundingRect()
    per_x, per_y = (x1 - x0) / w_px, (y1 - y0) / h_px
    bw, bh = (text.width() + 8) * per_x, (text.height() + 4) * per_y  # a marker's radius around the text
    boxes = [vb.mapSceneToView(item.sceneBoundingRect()).boundingRect() for item in avoid if item.isVisible()]
    best: tuple[int, float, tuple[float, float]] | None = None
    for pos, (ax, ay) in CHANCE_SPOTS:
        left = x0 + pos * (x1 - x0) - ax * bw
        bottom = chance if ay == 1 else chance - bh
        hits = sum(crosses(xs, ys, left, left + bw, bottom, bottom + bh) for xs, ys in shapes)
        hits += sum(
            b.left() <= left + bw and left <= b.right() and b.top() <= bottom + bh and bottom <= b.bottom()
            for b in boxes
        )
        hits += 100 * (bottom < y0 or bottom + bh > y1)  # cut by the frame
        if best is None or hits < best[0]:
            best = (hits, pos, (ax, ay))
        if hits == 0:
            break
    assert best is not None
    hits, pos, anchor = best
    label.anchors = [anchor, anchor]  # pyqtgraph picks between the two by the line's place in view: both ours
    label.fill = pg.mkBrush(255, 255, 255, 220) if hits else pg.mkBrush(None)
    label.setPosition(pos)
    label.update()


def chance_name(metric: str) -> str:
    """What the chance line stands for: the majority class, or the mean label for a regression metric."""
    return "chance (mean label)" if metric in ("pearson_spearman", "pearson", "spearman") else "chance (majority class)"


def chance_in_view(ys, chance: float | None) -> bool:
    """Whether the chance line belongs in the framed range: when it lies within about one spread of the values
    below them. Far below, drawing it would squeeze the values into a strip; the caller says it in words."""
    ys = [float(y) for y in ys if y == y]
    if chance is None or not ys:
        return False
    spread = max(max(ys) - min(ys), 0.05)
    return chance >= min(ys) - spread


def plain_axes(plot: pg.PlotItem) -> None:
    """Ticks in the values' own units: no SI scaling ("loss (x0.001)" with ticks 300-800)."""
    for name in ("left", "bottom"):
        plot.getAxis(name).enableAutoSIPrefix(False)


def fit_view(
    plot: pg.PlotItem,
    xs,
    ys,
    *,
    x_end: float | None = None,
    x_start: float | None = 0.0,
    bounds: tuple[float | None, float | None] = (None, None),
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Frame the data: x from `x_start` (None: the data's own start) to `x_end` or the last point, y around the
    values with a margin, kept inside `bounds`. One point gets a small window around it rather than pyqtgraph's
    +-0.5 of its own position. Returns the (x, y) ranges set."""
    xs = [float(x) for x in xs if x == x]
    ys = [float(y) for y in ys if y == y]
    if not xs or not ys:
        return (0.0, 1.0), (0.0, 1.0)
    x_lo = min(xs) if x_start is None else min(x_start, min(xs))
    x_hi = max(max(xs), x_end or 0.0)
    if x_hi - x_lo <= 0:
        span = abs(x_hi) * 0.1 or 1.0
        x_lo, x_hi = x_lo - span, x_hi + span
    elif x_start is None:
        pad = 0.06 * (x_hi - x_lo)
        x_lo, x_hi = x_lo - pad, x_hi + pad
    y_lo, y_hi = min(ys), max(ys)
    pad = 0.12 * (y_hi - y_lo) if y_hi > y_lo else max(0.05 * abs(y_hi), 0.01)
    # a bound stops the margin, all but a sliver that keeps markers sitting on it (accuracy 1.0) whole
    sliver = 0.03 * (y_hi - y_lo + 2 * pad)
    y_lo, y_hi = y_lo - pad, y_hi + pad
    lo, hi = bounds
    if lo is not None:
        y_lo = max(lo - sliver, y_lo)
    if hi is not None:
        y_hi = min(hi + sliver, y_hi)
    plot.disableAutoRange()
    plot.setRange(xRange=(x_lo, x_hi), yRange=(y_lo, y_hi), padding=0)
    return (x_lo, x_hi), (y_lo, y_hi)


def fmt_bytes(n: int) -> str:
    """Decimal units (1 MB = 1,000,000 bytes), the same as every size the engine writes (size_onnx_fp32_mb)."""
    for unit in ("B", "kB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"


BANNER_CSS = "QLabel { background: #fff4d6; border: 1px solid #e0c36b; border-radius: 4px; padding: 8px; }"
ERROR_CSS = "color: #b00020;"
HINT_CSS = "color: #666;"
