"""A user's unlabeled in-domain text (data.unlabeled): read and checked like the task's files, without labels.

The distilling stages learn the teacher's outputs on these rows beside the labelled ones (augmentation.py). Formats:
- .txt: one text per line (blank lines skipped); for a sentence-pair task, the two sides separated by one tab;
- .csv / .tsv with a header, .jsonl with one object per line: the text column(s) named as the task's (for
  example sentence, or sentence1 and sentence2), or, when those names are absent, a file with exactly as many
  columns (keys) as the task has texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import DataError
from .readers import (
    _DELIMITERS,
    _JSON_LINES,
    MAX_TEXT_CHARS,
    _csv_records,
    _decoded_lines,
    _jsonl_records,
    _quoting,
    _read_jsonl,
    check_file,
    read_delimited,
    short,
)
from .tables import TextTable

UNLABELED_SUFFIXES = (".txt", ".csv", ".tsv", ".jsonl", ".json")


def _columns(path: Path, names: list[str], wanted: Sequence[str], n: int, what: str) -> list[str]:
    """The `n` text columns to read: the task's names when the file has them, else all its columns when it has n."""
    folded = {c.lower(): c for c in names}
    if wanted and all(w.lower() in folded for w in wanted[:n]) and len(wanted) >= n:
        return [folded[w.lower()] for w in wanted[:n]]
    if len(names) == n:
        return list(names)
    want = " and ".join(wanted[:n]) if len(wanted) >= n else ("text" if n == 1 else "text_a and text_b")
    raise DataError(
        f"{path}: {what} has {len(names)} columns ({short(', '.join(names), 120)}) and none named {want}: "
        f"name the text column{'s' if n > 1 else ''} {want}, or keep only {n} column{'s' if n > 1 else ''}"
    )


def read_unlabeled(path, pair: bool, text_columns: Sequence[str] = ()) -> TextTable:
    """The file's texts (pairs for a pair task); a one-line DataError naming the file and line on a bad one."""
    path = Path(path)
    check_file(path)
    suffix = path.suffix.lower()
    if suffix not in UNLABELED_SUFFIXES:
        raise DataError(
            f"{path}: unsupported file type ({suffix or 'no extension'}): save the unlabeled text as .txt (one text "
            "per line), .csv, .tsv or .jsonl"
        )
    n = 2 if pair else 1
    if suffix == ".txt":
        a: list[str] = []
        b: list[str] | None = [] if pair else None
        for line_no, line in enumerate(_decoded_lines(path), start=1):
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            if pair:
                sides = text.split("\t")
                if len(sides) != 2:
                    raise DataError(
                        f"{path}: line {line_no} has {len(sides)} tab-separated part(s): this task takes sentence "
                        "pairs, so write each row as the two texts with one tab between them"
                    )
                a.append(sides[0][:MAX_TEXT_CHARS])
                b.append(sides[1][:MAX_TEXT_CHARS])  # type: ignore[union-attr]
            else:
                a.append(text[:MAX_TEXT_CHARS])
        if not a:
            raise DataError(f"{path}: the file has no text: write one text per line")
        return TextTable(a, b, [None] * len(a), str(path))
    if suffix in _JSON_LINES:
        first = next(_jsonl_records(path), None)
        if first is None:
            raise DataError(f"{path}: the file is empty: add one JSON object per line")
        cols = _columns(path, list(first[1]), text_columns, n, f"line {first[0]}")
        rows = _read_jsonl(path, cols, cols[0])
    else:
        header = next(_csv_records(path, _DELIMITERS[suffix], _quoting(suffix)), None)
        if header is None:
            raise DataError(f"{path}: the file is empty: add a header row naming the text column and data rows")
        cols = _columns(path, [h.strip() for h in header[1]], text_columns, n, "line 1 (header)")
        rows = read_delimited(path, _DELIMITERS[suffix], _quoting(suffix), True, cols, cols[0])
    return TextTable(rows.text_a, rows.text_b, [None] * len(rows.text_a), str(path))
