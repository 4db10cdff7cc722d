"""Small parts the new-project form is built from: the wheel guard, fixed-height labels, the column and count lines."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import (
    QAbstractScrollArea,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QLabel,
    QWidget,
)

from dynastudio.core.data.columns import ColumnGuess

from ..style import ERROR_CSS


class WheelGuard(QObject):
    """A combo box or spin box takes the wheel only once it has focus: over an unfocused one the wheel scrolls the
    form around it. Qt's own widgets take any wheel under the pointer, so scrolling a long form changed the column
    pickers on the way down (issue 23: the label turned into "(none)", then "sentence" was both text and label)."""

    def watch(self, widgets) -> None:
        for w in widgets:
            w.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # the default, WheelFocus, would let the wheel focus it first
            w.installEventFilter(self)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if event.type() != QEvent.Type.Wheel or not isinstance(obj, QWidget) or obj.hasFocus():
            return super().eventFilter(obj, event)
        area = enclosing_scroll_area(obj)
        if area is not None:
            # handed to the scroll area in so many words: Qt passes on only the wheel events that come from the
            # window system, and this way the form scrolls the same for a synthesized one
            viewport = area.viewport()
            assert isinstance(event, QWheelEvent)
            forwarded = QWheelEvent(
                viewport.mapFromGlobal(event.globalPosition()),
                event.globalPosition(),
                event.pixelDelta(),
                event.angleDelta(),
                event.buttons(),
                event.modifiers(),
                event.phase(),
                event.inverted(),
                event.source(),
            )
            QApplication.sendEvent(viewport, forwarded)
        event.accept()
        return True


def guard_wheel(owner: QWidget) -> WheelGuard:
    """Guard every combo box and spin box inside `owner` (see WheelGuard)."""
    guard = WheelGuard(owner)
    guard.watch(owner.findChildren(QComboBox) + owner.findChildren(QAbstractSpinBox))
    return guard


def enclosing_scroll_area(w: QWidget) -> QAbstractScrollArea | None:
    """The nearest scroll area whose viewport holds `w`, if any."""
    child, parent = w, w.parentWidget()
    while parent is not None:
        if isinstance(parent, QAbstractScrollArea) and child is parent.viewport():
            return parent
        child, parent = parent, parent.parentWidget()
    return None


def reserve_lines(label: QLabel, lines: int) -> None:
    """Keep room for `lines` lines even while empty, so text appearing does not push the buttons below it."""
    label.setMinimumHeight(lines * label.fontMetrics().lineSpacing() + 4)
    label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)


def error_label() -> QLabel:
    # always shown, empty when all is well: a message appearing must not move the buttons under the mouse
    label = QLabel()
    label.setStyleSheet(ERROR_CSS)
    label.setWordWrap(True)
    reserve_lines(label, 2)
    return label


def guess_text(guess: ColumnGuess, cols: list[str]) -> str:
    """What the column rule made of a file's header and first rows."""
    if not cols:
        return ""
    if not guess.guessed:
        return "Could not guess the columns from their names and values: pick them below."
    said = f"Guessed from the file: {guess.describe()}."
    if guess.label is None:
        said += " No column looks like the label: pick it."
    elif not guess.text:
        said += " No column reads as text: pick it."
    return said + " Change the pickers if this is wrong."


def picks_text(picked: ColumnGuess, guess: ColumnGuess | None, cols: list[str]) -> str:
    """The column line once the pickers may have moved: the guess while they hold it, else what the user picked."""
    if guess is not None and (picked.text, picked.label) == (guess.text, guess.label):
        return guess_text(guess, cols)
    said = f"Your pick: {picked.describe() or 'no columns yet'}."
    if guess is not None and guess.guessed and guess.describe():
        said += f" The file's guess was {guess.describe()}."
    return said


def counts_line(summary: dict, split: str) -> str:
    """One file's rows and its label counts (with shares, so train and dev can be compared at a glance)."""
    rows = summary["rows"]
    if summary["regression"]:
        return f"{rows} {split} rows; numeric labels (regression) from {summary['min']:g} to {summary['max']:g}"
    names = summary["names"]
    parts = [
        f"{names[k] if names and isinstance(k, int) and 0 <= k < len(names) else k}: {c} ({100 * c / max(rows, 1):.0f} %)"
        for k, c in sorted(summary["counts"].items())
    ]
    return f"{rows} {split} rows; label counts: " + " · ".join(parts)
