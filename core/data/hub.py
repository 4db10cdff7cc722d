"""GLUE from the Hugging Face hub through `datasets`, for online users (offline ones give a local GLUE folder)."""

from __future__ import annotations

import os

from ..errors import DataError
from .glue import GLUE_TASKS
from .readers import RawRows, as_text, at_row, finish_table, label_text
from .tables import TextTable


def load_glue_hub(name: str) -> tuple[TextTable, TextTable]:
    """Train and dev of a task through `datasets` from the hub (nyu-mll/glue, or the repo in DYNASTUDIO_GLUE_REPO)."""
    spec = GLUE_TASKS[name]
    repo = os.environ.get("DYNASTUDIO_GLUE_REPO", "nyu-mll/glue")
    fix = "pass data_dir (--data-dir) with a local copy of the GLUE files"
    try:
        import datasets
        from datasets.exceptions import DatasetNotFoundError
    except ImportError:
        raise DataError(
            f"GLUE task '{name}': the 'datasets' package is not installed: pip install datasets, or {fix}"
        ) from None
    try:
        loaded = datasets.load_dataset(repo, name)
    except DatasetNotFoundError:
        raise DataError(
            f"{repo}: dataset not found on the Hugging Face hub: check DYNASTUDIO_GLUE_REPO or {fix}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - anything the hub throws is an environment problem the user fixes
        if _is_connection_error(exc):
            raise DataError(f"GLUE task '{name}': could not reach the Hugging Face hub for {repo}: {fix}") from None
        raise DataError(
            f"{repo}: could not load GLUE task '{name}' ({type(exc).__name__}: {_first_line(exc)}): {fix}"
        ) from None
    tables = []
    for split in ("train", spec.hf_dev_split):
        source = f"glue:{name}/{split}"
        if split not in loaded:
            raise DataError(f"{repo}: task '{name}' has no split '{split}' (splits: {', '.join(loaded)}): {fix}")
        ds = loaded[split]
        wanted = (*spec.hf_columns, "label")
        missing = [c for c in wanted if c not in ds.column_names]
        if missing:
            raise DataError(
                f"{source}: no column '{missing[0]}' (columns: {', '.join(ds.column_names)}): "
                f"the dataset at {repo} does not have the GLUE layout; {fix}"
            )
        texts = [[as_text(v) for v in ds[c]] for c in spec.hf_columns]
        raw = []
        for i, value in enumerate(ds["label"]):
            # HF stores class labels as indices into the fixed GLUE label list.
            if spec.label_names is not None and isinstance(value, int) and not isinstance(value, bool):
                if not 0 <= value < len(spec.label_names):
                    raise DataError(
                        f"{source}: row {i + 1} has label {value}, expected 0..{len(spec.label_names) - 1}: "
                        f"this split has no usable labels; use a labelled split or {fix}"
                    )
                value = spec.label_names[value]
            raw.append(label_text(value))
        rows = RawRows(texts[0], texts[1] if len(texts) > 1 else None, raw, list(range(1, len(raw) + 1)))
        table, _, _ = finish_table(rows, source, at_row, spec.label_names, spec.label_names is None, "column 'label'")
        tables.append(table)
    return tables[0], tables[1]


def _is_connection_error(exc: BaseException | None) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return True
        name = type(exc).__name__
        if "Connect" in name or "Timeout" in name or "Offline" in name:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no details"
