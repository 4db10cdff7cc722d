"""Reading CSV / TSV / JSONL files into TextTables: one-line errors naming file and line, labels, peeks, summaries."""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError, DataError, UserError
from .tables import TextTable

Quoting = Literal[0, 1, 2, 3]  # a csv.QUOTE_* constant
_DELIMITERS = {".csv": ",", ".tsv": "\t", ".txt": "\t"}
_JSON_LINES = (".jsonl", ".json")
_SAMPLE_ROWS = 200  # rows peek_rows reads: enough for the column guess to judge values by
# A text longer than this is cut here: the model reads at most max_seq_length (<= 4096) tokens of it anyway, and
# tokenizing a 20 MB cell whole took gigabytes. GLUE-sized files can hold one sentence far beyond the csv module's
# own field limit (128 KiB), so that limit is raised past it.
MAX_TEXT_CHARS = 100_000
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def short(text, n: int = 60) -> str:
    """A value quoted in an error message, on one line and cut to `n` characters (a 20 MB header must not make a
    20 MB line)."""
    text = str(text)
    cut = text if len(text) <= n else text[:n] + f"... ({len(text):,} characters)"
    return cut.replace("\r", "\\r").replace("\n", "\\n")


# --------------------------------------------------------------------------- reading files


@dataclass
class RawRows:
    """Rows as read, labels still text: what every reader (files, GLUE, the hub) hands to finish_table."""

    text_a: list[str]
    text_b: list[str] | None
    raw_labels: list[str]
    lines: list[int]  # where each row came from, for messages


def at_line(n: int) -> str:  # where a row of a file is, for messages
    return f"line {n}"


def at_row(n: int) -> str:  # where a row of a hub split is (it has no lines)
    return f"row {n}"


def label_what(label) -> str:
    if isinstance(label, int):
        return "the last field" if label < 0 else f"field {label + 1}"
    return f"column '{label}'"


def read_table(
    path, text_columns, label_column, label_names=None, *, regression: bool | None = None
) -> tuple[TextTable, tuple[str, ...] | None, bool]:
    """Read one CSV/TSV/JSONL file.

    label_names=None infers the label set from this file (use for train); passing train's
    names makes any other label an error (use for dev). regression=None infers it too.
    """
    path = Path(path)
    if isinstance(text_columns, str):
        text_columns = (text_columns,)
    text_columns = tuple(text_columns)
    if not 1 <= len(text_columns) <= 2:
        raise ConfigError(f"text columns: got {len(text_columns)}: give one column, or two for sentence pairs")
    suffix = _suffix(path)
    check_file(path)
    if suffix in _JSON_LINES:
        rows = _read_jsonl(path, text_columns, label_column)
    else:
        rows = read_delimited(path, _DELIMITERS[suffix], _quoting(suffix), True, text_columns, label_column)
    return finish_table(rows, str(path), at_line, label_names, regression, f"column '{label_column}'")


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in _DELIMITERS and suffix not in _JSON_LINES:
        shown = suffix or "no extension"
        raise DataError(f"{path}: unsupported file type ({shown}): save it as .csv, .tsv or .jsonl")
    return suffix


def _quoting(suffix: str) -> Quoting:
    # TSV files in the wild (GLUE among them) carry bare quotes inside text, so only CSV honours quoting.
    return csv.QUOTE_MINIMAL if suffix == ".csv" else csv.QUOTE_NONE


def check_file(path: Path) -> None:
    if path.is_symlink() and not path.exists():
        raise DataError(f"{path}: a symbolic link that leads nowhere (broken, or a loop): give the data file itself")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a data file: give the path of a .csv, .tsv or .jsonl file")
    if not path.is_file():
        raise DataError(f"{path}: file not found: check the path")


def _decoded_lines(path: Path) -> Iterator[str]:
    # Decoding line by line (instead of letting open() do it) is what lets a bad byte be reported with its line.
    with open(path, "rb") as fh:
        head = fh.read(2)
    if head in (b"\xff\xfe", b"\xfe\xff"):  # UTF-16 with its byte-order mark: what spreadsheets save as "Unicode text"
        yield from _utf16_lines(path)
        return
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path}: line {n} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}): "
                    "save the file as UTF-8"
                ) from None
            if n == 1 and text.startswith("\ufeff"):
                text = text[1:]  # Excel and the MRPC files start with a byte-order mark
            yield text


def _utf16_lines(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-16", newline="") as fh:
        n = 0  # lines read so far: the one that fails to decode is n + 1
        try:
            for text in fh:
                n += 1
                yield text
        except UnicodeDecodeError:
            raise DataError(f"{path}: line {n + 1} is not valid UTF-16: save the file as UTF-8") from None


def _csv_records(path: Path, delimiter: str, quoting: Quoting) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(_decoded_lines(path), delimiter=delimiter, quoting=quoting)
    start = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataError(
                f"{path}: line {reader.line_num} cannot be parsed ({exc}): fix the quoting on that line"
            ) from None
        if fields and any(f.strip() for f in fields):
            yield start, fields
        start = reader.line_num + 1


def _resolve_column(path: Path, header: list[str], column, role: str) -> int:
    if isinstance(column, int):
        return column
    names = [h.strip() for h in header]
    if column in names:
        return names.index(column)
    folded = [n.lower() for n in names]
    if folded.count(str(column).lower()) == 1:
        return folded.index(str(column).lower())
    raise DataError(
        f"{path}: line 1 (header) has no {role} column '{short(column)}' (columns: {short(', '.join(names), 200)}): "
        f"name an existing column or fix the header"
    )


def read_delimited(
    path: Path,
    delimiter: str,
    quoting: Quoting,
    header: bool,
    text_columns: Sequence,
    label_column,
    *,
    strict_width: bool = True,
    skip_short: bool = False,
) -> RawRows:
    records = _csv_records(path, delimiter, quoting)
    names: list[str] | None = None
    if header:
        first = next(records, None)
        if first is None:
            raise DataError(
                f"{path}: the file is empty: add a header row (e.g. sentence{delimiter}label) and data rows"
            )
        names = [h.strip() for h in first[1]]
        twice = sorted({n for n in names if n and names.count(n) > 1})
        if twice:
            raise DataError(
                f"{path}: line 1 (header) names more than one column '{short(twice[0])}': give each column its own name"
            )
        text_idx = [_resolve_column(path, first[1], c, "text") for c in text_columns]
        label_idx = _resolve_column(path, first[1], label_column, "label")
    else:
        text_idx = list(text_columns)
        label_idx = label_column
    needed = max([*text_idx, label_idx]) + 1
    if label_idx < 0:
        needed = max(text_idx) + 2
    if names is not None and strict_width:
        needed = len(names)
    shown = ""
    if names:
        more = f", ... ({len(names)} columns)" if len(names) > 6 else ""
        shown = f" ({', '.join(short(n, 40) for n in names[:6])}{more})"
    out = RawRows([], [] if len(text_idx) > 1 else None, [], [])
    for line_no, fields in records:
        if len(fields) < needed:
            if skip_short:
                continue
            plural = "" if len(fields) == 1 else "s"
            raise DataError(
                f"{path}: line {line_no} has {len(fields)} field{plural}, expected {needed}{shown}: fix or remove that row"
            )
        if strict_width and names is not None and len(fields) > len(names):
            hint = "quote text that contains commas" if delimiter == "," else "remove tabs inside the text"
            raise DataError(
                f"{path}: line {line_no} has {len(fields)} fields but the header has {len(names)}{shown}: {hint}"
            )
        out.text_a.append(fields[text_idx[0]][:MAX_TEXT_CHARS])
        if out.text_b is not None:
            out.text_b.append(fields[text_idx[1]][:MAX_TEXT_CHARS])
        out.raw_labels.append(fields[label_idx].strip())
        out.lines.append(line_no)
    if header and not out.lines:
        raise DataError(f"{path}: has a header but no data rows: add rows below line 1")
    if not out.lines:
        raise DataError(f"{path}: the file is empty: add data rows")
    return out


def _read_jsonl(path: Path, text_columns: Sequence[str], label_column: str) -> RawRows:
    out = RawRows([], [] if len(text_columns) > 1 else None, [], [])
    for line_no, obj in _jsonl_records(path):
        if not out.lines:
            keys = list(obj)
            for role, col in [*(("text", c) for c in text_columns), ("label", label_column)]:
                if col not in obj:
                    raise DataError(
                        f"{path}: line {line_no} has no {role} key '{col}' (keys: {short(', '.join(keys), 200)}): "
                        "name an existing key or fix the file"
                    )
        for col in text_columns:
            if col not in obj:
                raise DataError(
                    f"{path}: line {line_no} has no key '{col}': add it (\"\" if empty) or remove that line"
                )
        out.text_a.append(as_text(obj[text_columns[0]])[:MAX_TEXT_CHARS])
        if out.text_b is not None:
            out.text_b.append(as_text(obj[text_columns[1]])[:MAX_TEXT_CHARS])
        out.raw_labels.append(label_text(obj.get(label_column)))
        out.lines.append(line_no)
    if not out.lines:
        raise DataError(f"{path}: the file is empty: add one JSON object per line")
    return out


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict]]:
    for n, line in enumerate(_decoded_lines(path), start=1):
        text = line.strip()
        if not text:
            continue
        try:
            obj = json.loads(text)
        except RecursionError:
            raise DataError(f"{path}: line {n} is nested too deeply to be a row: fix or remove that line") from None
        except json.JSONDecodeError as exc:
            if text.startswith("["):
                raise DataError(
                    f"{path}: line {n} starts a JSON array: this reader wants JSON Lines, one {{...}} object per line"
                ) from None
            raise DataError(
                f"{path}: line {n} is not valid JSON ({exc.msg}, column {exc.colno}): fix or remove that line"
            ) from None
        if not isinstance(obj, dict):
            kind = "an array" if isinstance(obj, list) else "a string" if isinstance(obj, str) else "a bare value"
            raise DataError(
                f'{path}: line {n} is {kind}, not a JSON object: write one {{"text": ..., "label": ...}} object per line'
            )
        yield n, obj


def as_text(value) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def label_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


# --------------------------------------------------------------------------- labels


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _canonical(text: str) -> str:
    # "1", "1.0" and " 1" are the same class; anything non-numeric is matched as written.
    value = _number(text)
    if value is not None and value.is_integer():
        return str(int(value))
    return text


def finish_table(
    rows: RawRows,
    source: str,
    where: Callable[[int], str],
    label_names: tuple[str, ...] | None,
    regression: bool | None,
    what: str,
) -> tuple[TextTable, tuple[str, ...] | None, bool]:
    """Rows with their labels checked and parsed: the label set (given, or this file's) and whether it is regression."""
    for raw, n in zip(rows.raw_labels, rows.lines):
        if raw == "":
            raise DataError(f"{source}: {where(n)} has no label in {what}: fill it in or remove that row")

    if label_names is None:
        # all labels numbers, some NaN or inf: a regression file with broken rows, not a class named "nan"
        try:
            parsed = [float(r) for r in rows.raw_labels]
        except ValueError:
            parsed = []
        for value, raw, n in zip(parsed, rows.raw_labels, rows.lines):
            if not math.isfinite(value):
                raise DataError(
                    f"{source}: {where(n)} has label '{short(raw)}' in {what}, not a finite number: "
                    "fix the label or remove that row"
                )
    if label_names is not None:
        regression = False
    if regression is None:
        numbers = [v for v in map(_number, rows.raw_labels) if v is not None]
        regression = len(numbers) == len(rows.raw_labels) and not all(v.is_integer() for v in numbers)

    if regression:
        labels = []
        for raw, n in zip(rows.raw_labels, rows.lines):
            number = _number(raw)
            if number is None:
                raise DataError(
                    f"{source}: {where(n)} has label '{short(raw)}' in {what}, not a number: regression labels must be numbers"
                )
            labels.append(number)
        return TextTable(rows.text_a, rows.text_b, labels, source), None, True

    canon = [_canonical(r) for r in rows.raw_labels]
    if label_names is None:
        distinct = set(canon)
        if all(_number(c) is not None for c in distinct):
            label_names = tuple(sorted(distinct, key=float))
        else:
            label_names = tuple(sorted(distinct))
        if len(label_names) < 2:
            raise DataError(
                f"{source}: every row has label '{short(canon[0])}' in {what}: a classifier needs at least 2 different labels"
            )
    index = {name: i for i, name in enumerate(label_names)}
    labels = []
    for label, n in zip(canon, rows.lines):
        if label not in index:
            known = short(", ".join(label_names), 200)
            raise DataError(
                f"{source}: {where(n)} has label '{short(label)}', which the training data does not have (known: {known}): "
                "fix the label or remove that row"
            )
        labels.append(index[label])
    return TextTable(rows.text_a, rows.text_b, labels, source), tuple(label_names), False


# --------------------------------------------------------------------------- peeks and summaries


def peek_rows(path: Path, n: int = _SAMPLE_ROWS) -> tuple[list[str], list[dict]]:
    """The header and the first `n` rows (column -> value) of a CSV/TSV/JSONL file, read the way the loader reads it."""
    path = Path(path)
    suffix = _suffix(path)
    check_file(path)
    rows: list[dict] = []
    if suffix in _JSON_LINES:
        columns: list[str] | None = None
        for _, obj in _jsonl_records(path):
            if columns is None:
                columns = list(obj)
            rows.append({k: "" if v is None else str(v) for k, v in obj.items()})
            if len(rows) >= n:
                break
        if columns is None:
            raise DataError(f"{path}: the file is empty: add one JSON object per line")
        return columns, rows
    columns = None
    for _, fields in _csv_records(path, _DELIMITERS[suffix], _quoting(suffix)):
        if columns is None:
            columns = [f.strip() for f in fields]
            continue
        rows.append(dict(zip(columns, fields)))
        if len(rows) >= n:
            break
    if columns is None:
        raise DataError(f"{path}: the file is empty: add a header row and data rows")
    return columns, rows


def table_summary(
    path, text_columns, label_column, label_names=None, regression: bool | None = None, preview_rows: int = 20
) -> dict:
    """What a form shows of a data file, small enough to pass between processes: its row count, label set and
    counts, and the first rows; {"error": message} for a file read_table refuses."""
    try:
        table, names, is_regression = read_table(path, text_columns, label_column, label_names, regression=regression)
    except UserError as exc:
        return {"error": str(exc)}
    n = min(preview_rows, len(table))
    preview = [
        [table.text_a[i][:500]] + ([table.text_b[i][:500]] if table.text_b is not None else []) + [table.labels[i]]
        for i in range(n)
    ]
    out: dict[str, Any] = {"rows": len(table), "names": names, "regression": is_regression, "preview": preview}
    if is_regression:
        out["min"], out["max"] = float(min(table.labels)), float(max(table.labels))
    else:
        counts: dict = {}
        for v in table.labels:
            counts[v] = counts.get(v, 0) + 1
        out["counts"] = counts
    return out
