"""The Explore page's results table: one row per evaluated sub-network, sorted by the numbers behind its text."""

from __future__ import annotations

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
    """The grid's rows; the latency column follows the chart's x axis, and the whole table fits beside the chart."""

    COLUMNS = ("sub-network", "metric", "params", "size", "FLOPs", "latency")
    LATENCY_COLUMN = 5

    def __init__(self, parent: QWidget | None = None):
        super().__init__(0, len(self.COLUMNS), parent)
        self.setHorizontalHeaderLabels(self.COLUMNS)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.verticalHeader().setVisible(False)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.horizontalHeader().setStretchLastSection(True)
        self.setSortingEnabled(True)

    def fill(self, rows: list[GridRow], metric_name: str) -> None:
        """One row per sub-network; the latency column is left to `fill_latency`."""
        self.blockSignals(True)
        self.setSortingEnabled(False)
        self.setRowCount(len(rows))
        self.horizontalHeaderItem(1).setText(metric_name)
        for i, r in enumerate(rows):
            size, params, flops = fp32_size(r), r.total_params or 0, r.flops_rel or 0
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
                item.setData(LABEL_ROLE, r.label)
                if j == 0:
                    item.setForeground(QBrush(QColor(subnet_colour(r.label))))
                self.setItem(i, j, item)
        self.setSortingEnabled(True)
        self.blockSignals(False)

    def fill_latency(self, rows: list[GridRow], precision: str | None) -> None:
        """The latency column shows `precision`'s figures (None: no latency measured)."""
        self.setSortingEnabled(False)
        self.horizontalHeaderItem(self.LATENCY_COLUMN).setText(
            f"latency {precision} (ms)" if precision else "latency (ms)"
        )
        by_label = {r.label: r for r in rows}
        for i in range(self.rowCount()):
            label = self.item(i, 0).data(LABEL_ROLE)
            v = by_label[label].latency_ms(precision) if precision else None
            item = _SortItem(f"{v:.2f}" if v is not None else "—", v if v is not None else 1e18)
            item.setData(LABEL_ROLE, label)
            self.setItem(i, self.LATENCY_COLUMN, item)
        self.setSortingEnabled(True)
        self.resizeColumnsToContents()
        # the whole table fits beside the chart: no hidden latency column behind a scroll bar
        h = self.horizontalHeader()
        need = sum(max(self.sizeHintForColumn(j), h.sectionSizeHint(j)) for j in range(self.columnCount()))
        self.setMinimumWidth(min(560, need + self.frameWidth() * 2 + 20))

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
