"""Small dialogs shared by pages: opening a folder in the file manager, or saying where it is when none answers."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget

# the folder dialogs shown (kept alive while open; tests read them)
folder_dialogs: list[QDialog] = []


def open_folder(parent: QWidget | None, path: Path | str) -> QDialog | None:
    """Open `path` in the desktop's file manager. Where none is registered (a bare window manager, a remote X
    session) Qt only writes a line to stderr: show the path in a dialog with a button that copies it instead."""
    path = Path(path)
    if QDesktopServices.openUrl(QUrl.fromLocalFile(str(path))):
        return None
    box = QDialog(parent)
    box.setObjectName("folderDialog")
    box.setWindowTitle("Open folder")
    text = QLabel("No file manager answered. The folder is:")
    where = QLineEdit(str(path))
    where.setObjectName("folderPath")
    where.setReadOnly(True)
    where.setMinimumWidth(min(720, where.fontMetrics().horizontalAdvance(str(path)) + 24))
    copy = QPushButton("Copy path")
    copy.setObjectName("copyPath")
    copy.clicked.connect(lambda: (QGuiApplication.clipboard().setText(str(path)), copy.setText("Copied")))
    close = QPushButton("Close")
    close.clicked.connect(box.accept)
    close.setDefault(True)
    buttons = QHBoxLayout()
    buttons.addStretch(1)
    buttons.addWidget(copy)
    buttons.addWidget(close)
    lay = QVBoxLayout(box)
    lay.addWidget(text)
    lay.addWidget(where)
    lay.addLayout(buttons)
    folder_dialogs.append(box)
    box.finished.connect(lambda _=0, b=box: folder_dialogs.remove(b) if b in folder_dialogs else None)
    box.open()
    return box
