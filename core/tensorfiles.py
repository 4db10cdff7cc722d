"""Safetensors files, read and written atomically, with one-line errors for a missing or corrupted one.

Light at import (no torch): the studio reads arrays with it; torch is loaded by the functions that handle tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError

from .errors import ProjectError
from .store import atomic_target

if TYPE_CHECKING:
    import torch


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    # safetensors refuses shared or strided storage; give it plain contiguous copies
    plain = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_target(path) as tmp:
        save_file(plain, tmp, metadata=metadata)


def load_tensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return checked_load(path, what, load_file)


def load_arrays(path: Path, what: str) -> dict:
    """Like load_tensors, as numpy arrays: for readers that must not load torch (the studio)."""
    from safetensors.numpy import load_file

    return checked_load(path, what, load_file)


def checked_load(path: Path, what: str, load_file) -> dict:
    """A safetensors file read with `load_file` (safetensors.numpy's or .torch's), or a one-line ProjectError that
    says whether `what` is missing or corrupted."""
    path = Path(path)
    if not path.is_file():
        raise ProjectError(f"{path}: {what} is missing: run the stage that makes it again (dynastudio run)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ProjectError(
            f"{path}: {what} is corrupted ({str(exc).splitlines()[0][:80]}): delete it and run the stage again"
        ) from None


def tensor_file_step(path: Path) -> int | None:
    """The step a checkpoint's safetensors file records in its metadata (None when it records none)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            step = (f.metadata() or {}).get("step")
        return int(step) if step is not None else None
    except (SafetensorError, OSError, ValueError):
        return None
