"""The Explore page's results table: one row per evaluated sub-network, sorted by the numbers behind its text."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem, QWidget

from dynastudio.core.store import GridRow

from ..style import fmt_params, subnet_colour

LABEL_ROLE = Qt.ItemDataRole.UserRole + 1  # every cell keeps its row's label: sorting moves the rows


def fp32_size(row: GridRow) -> float | None:
    f = row.figures("fp32")
    return f.size_mb if f is not None else None


class GridTable(QTableWidget):
    """The grid's rows with a latency column per measured precision, and the dev metric of every precision that has
    its own (INT8 files are scored on dev): the budget's answer "w0.25_d1 in int8" can be read off its row."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(0, 0, parent)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.verticalHeader().setVisible(False)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.horizontalHeader().setStretchLastSection(True)
        self.setSortingEnabled(True)
        self.latency_columns: dict[str, int] = {}  # precision -> its latency column
        self.metric_columns: dict[str, int] = {}  # precision -> its dev metric column
        self.need_width = 0  # what the columns need to show whole (the page gives it by moving its splitter)
        self._marked: QTableWidgetItem | None = None

    def fill(self, rows: list[GridRow], metric_name: str, precisions: list[str] | tuple[str, ...] = ()) -> None:
        """One row per sub-network; a latency column per precision in `precisions` (one saying "—" when none)."""
        own = [p for p in precisions if p != "fp32" and any(r.metric_at(p) is not None for r in rows)]
        # what the budget answers with first (the metric and latency of each precision), then what it costs;
        # two-line headers keep the columns narrow enough to sit beside the chart
        columns: list[tuple[str, str, Callable[[GridRow], tuple[str, object]]]] = [
            ("sub-network", "", lambda r: (r.label, (r.width_mult, r.depth_mult))),
            (
                f"{metric_name}\nfp32" if own else metric_name,
                f"dev {metric_name} (fp32)",
                lambda r: _number(r.value, "{:.4f}"),
            ),
            *[
                (
                    f"{metric_name}\n{p}",
                    f"dev {metric_name} of the {p} model file",
                    lambda r, p=p: _number(r.metric_at(p), "{:.4f}"),
                )
                for p in own
            ],
            *[
                (
                    f"latency\n{p} (ms)",
                    f"latency in {p}, ms per batch (median)",
                    lambda r, p=p: _number(r.latency_ms(p), "{:.2f}"),
                )
                for p in precisions
            ],
            ("params", "parameters", lambda r: (fmt_params(r.total_params), r.total_params or 0)),
            ("size", "the fp32 ONNX file (≈: 4 bytes per parameter, not measured)", _size_cell),
            ("FLOPs", "of the full model", lambda r: _number(r.flops_rel or 0, "{:.3f}")),
        ]
        if not precisions:
            columns.insert(2, ("latency\n(ms)", "not measured yet: Measure latency", lambda r: ("—", 1e18)))
        names = [c[0] for c in columns]
        self.latency_columns = {p: names.index(f"latency\n{p} (ms)") for p in precisions}
        self.metric_columns = {"fp32": 1, **{p: names.index(f"{metric_name}\n{p}") for p in own}}
        self._marked = None
        self.blockSignals(True)
        self.setSortingEnabled(False)
        self.clearContents()
        self.setColumnCount(len(columns))
        self.setRowCount(len(rows))
        for j, (name, tip, _) in enumerate(columns):
            header = QTableWidgetItem(name)
            header.setToolTip(tip)
            self.setHorizontalHeaderItem(j, header)
        for i, r in enumerate(rows):
            for j, (_, _, cell) in enumerate(columns):
                text, key = cell(r)
                item = _SortItem(text, key)
                item.setData(LABEL_ROLE, r.label)
                if j == 0:
                    item.setForeground(QBrush(QColor(subnet_colour(r.label))))
                self.setItem(i, j, item)
        self.setSortingEnabled(True)
        self.blockSignals(False)
        self.resizeColumnsToContents()
        # the columns up to the last latency one must show whole; params, size and FLOPs may scroll
        h, last = self.horizontalHeader(), max([1, *self.latency_columns.values()])
        self.need_width = (
            sum(max(self.sizeHintForColumn(j), h.sectionSizeHint(j)) for j in range(last + 1))
            + self.frameWidth() * 2
            + 20  # a vertical scroll bar
        )

    def mark_axis(self, precision: str | None) -> None:
        """The headers of the chart's x-axis precision in bold (None: every precision on the axis, none bold)."""
        for p, cols in ((p, (self.latency_columns.get(p), self.metric_columns.get(p))) for p in self.latency_columns):
            for j in cols:
                if j is not None and (item := self.horizontalHeaderItem(j)) is not None:
                    font = item.font()
                    font.setBold(p == precision)
                    item.setFont(font)

    def mark_best(self, label: str | None, precision: str | None) -> None:
        """The latency cell of the budget's answer in bold: its row, its precision."""
        if self._marked is not None:
            font = self._marked.font()
            font.setBold(False)
            self._marked.setFont(font)
            self._marked = None
        j = self.latency_columns.get(precision) if precision else None
        row = self.row_of(label) if label else -1
        if j is not None and row >= 0 and (item := self.item(row, j)) is not None:
            font = item.font()
            font.setBold(True)
            item.setFont(font)
            self._marked = item

    def row_of(self, label: str) -> int:
        for i in range(self.rowCount()):
            if self.item(i, 0).data(LABEL_ROLE) == label:
                return i
        return -1

    def selected_label(self) -> str | None:
        items = self.selectedItems()
        return items[0].data(LABEL_ROLE) if items else None

    def show_label(self, label: str | None) -> None:
        """Select `label`'s row (or clear the selection) without emitting: the selection came from elsewhere."""
        row = self.row_of(label) if label else -1
        self.blockSignals(True)
        if row >= 0:
            self.selectRow(row)
            self.scrollToItem(self.item(row, 0))
        else:
            self.clearSelection()
        self.blockSignals(False)


def _number(v, fmt: str) -> tuple[str, float]:
    """A number's cell: its text, and its sort key (a missing one sorts last)."""
    return (fmt.format(v), v) if v is not None else ("—", 1e18)


def _size_cell(r: GridRow) -> tuple[str, float]:
    size, params = fp32_size(r), r.total_params or 0
    return (f"{size:.1f} MB", size) if size is not None else (f"≈{params * 4 / 1e6:.0f} MB", params * 4 / 1e6)


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
