"""Atomic writes, and which process of a torchrun job writes the project (rank 0)."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import disk_full

_CORE = __name__.rsplit(".", 2)[0]  # dynastudio.core


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # mkstemp makes 0600 files; give the user's usual permissions


@contextlib.contextmanager
def atomic_target(path: Path) -> Iterator[str]:
    """Yield a temp path in the target's folder; on success give it normal permissions and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        full = disk_full(exc, str(path))
        if full is None:
            raise
        raise full from None
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except Exception as exc:
        full = disk_full(exc, str(path))
        if full is None:
            raise
        raise full from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_target(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def is_main_process() -> bool:
    # only a process that trains loads runtime (and torch): without it there is no process group
    runtime = sys.modules.get(f"{_CORE}.runtime")
    return runtime is None or runtime.is_main()


def main_process_writes(method):
    """Under torchrun only the main process (rank 0) writes the project; the others keep their in-memory
    state in step and wait at the barriers the stages set, then read what it wrote."""

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        return method(self, *args, **kwargs) if is_main_process() else None

    return guarded
