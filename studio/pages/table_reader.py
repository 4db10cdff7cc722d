"""The new-project form's data files read as the loader reads them: a small file at once, a large one in a short job."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal

from dynastudio.core.errors import DataError
from dynastudio.core.requests import TableSummaryRequest

from ..worker import ChildJob, start_side_job

PREVIEW_ROWS = 8
READ_APART_BYTES = (
    2_000_000  # a data file this big is read by a short job in its own process (about 30,000 rows of SST-2)
)


class StillReading(Exception):
    def __init__(self, path: Path):
        super().__init__(str(path))
        self.path = path


def file_sample(path: str) -> tuple[list[str], list[dict]]:
    """Header and first rows of a CSV/TSV/JSONL file (raises DataError with a one-line message)."""
    from dynastudio.core.data.readers import peek_rows  # the reader the loader itself uses, so the pickers match it

    return peek_rows(Path(path))


class TableReader(QObject):
    """table_summary of a file, remembered per file version so typing elsewhere does not re-read big files. A large
    file is read by a short job in its own process, so the window never waits on it (in a thread, parsing a million
    rows held the interpreter for up to 1.8 s at a time): StillReading until it is done, then `done`."""

    done = Signal()  # a large file's read ended (its summary or its error is remembered): check the form again
    failed = Signal(object)  # ErrorInfo of a read that failed for a reason that is not the user's

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._cache: dict = {}
        self.reading: ChildJob | None = None  # the short job reading a large file, if one is running
        self._reading_key = None

    def summary(self, path, cols, label, names, regression) -> dict:
        """The file's summary; raises StillReading while a job reads it, DataError for a file the loader refuses."""
        from dynastudio.core.data.readers import table_summary

        p = Path(path)
        try:
            stamp = p.stat().st_mtime_ns, p.stat().st_size
        except OSError:
            stamp = None
        label_names = tuple(names) if names else None
        key = (str(p), stamp, tuple(cols), label, label_names, regression)
        if key not in self._cache:
            if stamp is not None and stamp[1] >= READ_APART_BYTES:
                if self.reading is None or self._reading_key != key:
                    request = TableSummaryRequest(str(p), tuple(cols), label, label_names, regression, PREVIEW_ROWS)
                    self._start(key, request)
                raise StillReading(p)
            self._remember(key, table_summary(p, cols, label, names, regression=regression, preview_rows=PREVIEW_ROWS))
        got = self._cache[key]
        if "error" in got:
            raise DataError(got["error"])
        return got

    def _remember(self, key, summary: dict) -> None:
        self._cache = {k: v for k, v in list(self._cache.items())[-3:]}
        self._cache[key] = summary

    def _start(self, key, request: TableSummaryRequest) -> None:
        """Read a large file in a short job; it replaces a read still running, whose answer nobody needs now."""
        self.stop()
        handle = start_side_job("table-summary", Path(request.path).parent, request, parent=self)
        self.reading, self._reading_key = handle, key
        handle.finished.connect(lambda summary, h=handle: self._on_read(h, key, summary))
        handle.failed.connect(lambda info, h=handle: self._on_failed(h, key, info))
        handle.ended.connect(lambda _kind, h=handle: h.deleteLater())

    def stop(self) -> None:
        """End the read in flight, if any, and forget it (waits the moment a killed process takes to go)."""
        handle, self.reading, self._reading_key = self.reading, None, None
        if handle is not None and handle.is_running():
            handle.kill()
            handle.wait(5)

    def _on_read(self, handle: ChildJob, key, summary: dict) -> None:
        if handle is not self.reading:
            return  # a read replaced by a newer one
        self.reading, self._reading_key = None, None
        self._remember(key, summary)
        self.done.emit()

    def _on_failed(self, handle: ChildJob, key, info) -> None:
        if handle is not self.reading:
            return
        self.reading, self._reading_key = None, None
        self._remember(key, {"error": info.message})  # remembered: the form must not start the same failing read again
        self.done.emit()
        if not info.user:
            self.failed.emit(info)
