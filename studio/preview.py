"""Open one page on its own (Orange-style `if __name__ == "__main__"` previews): python -m dynastudio.studio.pages.train [PROJECT]."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QWidget

from .errors import install_excepthook, show_error
from .state import StudioState


def run_preview(make_page: Callable[[StudioState], QWidget], argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    state = StudioState()
    page = make_page(state)
    page.resize(1100, 750)
    page.setWindowTitle(f"DynaBERT Studio — {type(page).__name__} preview")
    install_excepthook(lambda: page)
    page.show()
    folder = argv[0] if argv else ("demo" if (Path("demo") / "project.json").is_file() else None)
    if folder:
        try:
            state.open_project(folder)
        except Exception as exc:
            show_error(page, exc)
    app.aboutToQuit.connect(state.runner.shutdown)
    quit_ms = os.environ.get("DYNASTUDIO_PREVIEW_QUIT_MS")
    if quit_ms:  # the test suite smoke-runs every preview this way
        QTimer.singleShot(int(quit_ms), app.quit)
    return app.exec()
