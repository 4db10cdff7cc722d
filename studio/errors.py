"""Every failure becomes a dialog: a one-line message, and the traceback behind a Details button when it is our bug."""

from __future__ import annotations

import errno
import sys
import traceback
from dataclasses import dataclass

from PySide6.QtWidgets import QMessageBox, QWidget

from dynastudio.core.errors import UserError

# the dialogs currently shown (kept so they are not garbage collected, and so tests can read them)
open_dialogs: list[QMessageBox] = []


@dataclass(frozen=True)
class ErrorInfo:
    """What a dialog needs, built on the thread where the exception happened (tracebacks do not cross threads well)."""

    message: str
    detail: str = ""
    user: bool = False  # a mistake the user can fix: no traceback shown

    @staticmethod
    def from_exception(exc: BaseException, what: str = "") -> ErrorInfo:
        prefix = f"{what}: " if what else ""
        if isinstance(exc, UserError):
            return ErrorInfo(prefix + str(exc), "", True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            where = f" while writing {exc.filename}" if exc.filename else ""
            return ErrorInfo(
                f"{prefix}the disk is full{where}: free some space, then try again (the project stays resumable)",
                _trace(exc),
                True,
            )
        if isinstance(exc, PermissionError):
            return ErrorInfo(
                f"{prefix}permission denied: {exc.filename or exc}: pick a folder you can write to", _trace(exc), True
            )
        if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):
            return ErrorInfo(f"{prefix}{exc.strerror or 'not found'}: {exc.filename or exc}", _trace(exc), True)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        return ErrorInfo(
            f"{prefix}an unexpected error happened ({text[:200]}). The details show where; please report it.",
            _trace(exc),
            False,
        )


def _trace(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def show_error(parent: QWidget | None, error: BaseException | ErrorInfo, title: str = "DynaBERT Studio") -> QMessageBox:
    """Show an error without blocking the caller (window-modal, `open()` not `exec()`), and return the box."""
    info = error if isinstance(error, ErrorInfo) else ErrorInfo.from_exception(error)
    box = QMessageBox(
        QMessageBox.Icon.Warning if info.user else QMessageBox.Icon.Critical,
        title,
        info.message,
        QMessageBox.StandardButton.Ok,
        parent,
    )
    box.setObjectName("errorDialog")
    if info.detail:
        box.setDetailedText(info.detail)  # Qt adds the "Show Details..." button
    open_dialogs.append(box)
    box.finished.connect(lambda _=0, b=box: open_dialogs.remove(b) if b in open_dialogs else None)
    box.open()
    return box


def install_excepthook(parent_getter) -> None:
    """Exceptions escaping a slot become a dialog instead of killing the app (PySide calls sys.excepthook)."""
    previous = sys.excepthook

    def hook(kind, exc, tb):
        if issubclass(kind, KeyboardInterrupt):
            previous(kind, exc, tb)
            return
        traceback.print_exception(kind, exc, tb)
        try:
            show_error(parent_getter(), exc.with_traceback(tb))
        except Exception:  # never let the hook itself raise
            previous(kind, exc, tb)

    sys.excepthook = hook
