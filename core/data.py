"""Task data: read GLUE / CSV / TSV / JSONL / demo sets into tables, tokenise them, batch them, score predictions."""
from __future__ import annotations

import csv
from importlib import resources
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from .config import DataConfig
from .errors import ConfigError, DataError, InternalError, UserError
from .metrics import METRICS, compute_metric  # noqa: F401  (moving to the data package; importers follow)


_DELIMITERS = {".csv": ",", ".tsv": "\t", ".txt": "\t"}
# A text longer than this is cut here: the model reads at most max_seq_length (<= 4096) tokens of it anyway, and
# tokenizing a 20 MB cell whole took gigabytes. The csv module's own limit (128 KiB) is raised past it.
MAX_TEXT_CHARS = 100_000
csv.field_size_limit(64 * 1024 * 1024)


def _short(text, n: int = 60) -> str:
    """A value quoted in an error message, cut to `n` characters (a 20 MB header must not make a 20 MB line)."""
    text = str(text)
    return text if len(text) <= n else text[:n] + f"... ({len(text):,} characters)"
_JSON_LINES = (".jsonl", ".json")

# GLUE-sized files can hold one sentence far beyond csv's 128 KiB default field limit.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


# --------------------------------------------------------------------------- tables


@dataclass
class TextTable:
    text_a: list[str]
    text_b: list[str] | None
    labels: list
    source: str

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, indices) -> "TextTable":
        idx = [int(i) for i in indices]
        return TextTable(
            text_a=[self.text_a[i] for i in idx],
            text_b=None if self.text_b is None else [self.text_b[i] for i in idx],
            labels=[self.labels[i] for i in idx],
            source=self.source,
        )


@dataclass(frozen=True)
class TaskData:
    name: str
    train: TextTable
    dev: TextTable
    metric: str
    label_names: tuple[str, ...] | None
    is_regression: bool
    columns: "ColumnGuess | None" = None  # files only: which column is which, and what was guessed

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.label_names or ())


# --------------------------------------------------------------------------- GLUE


@dataclass(frozen=True)
class GlueTask:
    """Where one GLUE task's text and label live, locally (raw GLUE TSVs) and on the hub."""

    folder: str  # folder name in the standard GLUE download
    columns: tuple  # text columns of the local TSV: header names, or column numbers when header=False
    label: str | int  # label column of the local TSV: a header name or a column number (-1 = last field)
    label_names: tuple[str, ...] | None  # index order of HF `glue`; None = regression
    metric: str
    hf_columns: tuple[str, ...]
    header: bool = True
    dev_file: str = "dev.tsv"
    hf_dev_split: str = "validation"
    # QQP's train.tsv has a handful of broken rows; the reference loaders skip them too.
    skip_short_rows: bool = False


GLUE_TASKS: dict[str, GlueTask] = {
    "sst2": GlueTask("SST-2", ("sentence",), "label", ("0", "1"), "accuracy", ("sentence",)),
    # CoLA ships without a header: source, label, original judgement, sentence.
    "cola": GlueTask("CoLA", (3,), 1, ("0", "1"), "matthews", ("sentence",), header=False),
    "mrpc": GlueTask("MRPC", ("#1 String", "#2 String"), "Quality", ("0", "1"), "f1", ("sentence1", "sentence2")),
    "rte": GlueTask(
        "RTE", ("sentence1", "sentence2"), "label", ("entailment", "not_entailment"), "accuracy", ("sentence1", "sentence2")
    ),
    "qnli": GlueTask(
        "QNLI", ("question", "sentence"), "label", ("entailment", "not_entailment"), "accuracy", ("question", "sentence")
    ),
    "qqp": GlueTask(
        "QQP", ("question1", "question2"), "is_duplicate", ("0", "1"), "f1", ("question1", "question2"), skip_short_rows=True
    ),
    # MNLI's label is gold_label, the last field; taking the last field (as the reference
    # processors do) stays right whether or not the annotator columns label1..label5 are there.
    "mnli": GlueTask(
        "MNLI",
        ("sentence1", "sentence2"),
        -1,
        ("entailment", "neutral", "contradiction"),
        "accuracy",
        ("premise", "hypothesis"),
        dev_file="dev_matched.tsv",
        hf_dev_split="validation_matched",
    ),
    "stsb": GlueTask("STS-B", ("sentence1", "sentence2"), -1, None, "pearson_spearman", ("sentence1", "sentence2")),
}


def _glue_name(task: str | None) -> str:
    if not task:
        raise ConfigError(f"data.task: name a GLUE task: {', '.join(GLUE_TASKS)}")
    key = task.strip().lower().replace("-", "").replace("_", "")
    if key not in GLUE_TASKS:
        raise DataError(f"unknown GLUE task '{task}': choose one of {', '.join(GLUE_TASKS)}")
    return key


def _glue_folder(data_dir: str, name: str) -> Path:
    spec = GLUE_TASKS[name]
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"{data_dir}: folder not found: point data_dir at the GLUE folder (the one holding {spec.folder}/)")
    wanted = {spec.folder.lower(), name}
    for child in sorted(root.iterdir()):
        if child.is_dir() and child.name.lower() in wanted:
            return child
    if (root / "train.tsv").is_file():
        return root  # data_dir is the task folder itself
    raise DataError(
        f"{data_dir}: no {spec.folder}/ folder with train.tsv and {spec.dev_file}: "
        f"point data_dir at the GLUE folder or at the {spec.folder} folder itself"
    )


def _load_glue_local(name: str, data_dir: str) -> tuple[TextTable, TextTable]:
    spec = GLUE_TASKS[name]
    folder = _glue_folder(data_dir, name)
    tables = []
    for file_name in ("train.tsv", spec.dev_file):
        path = folder / file_name
        _check_file(path)
        rows = _read_delimited(
            path, "\t", csv.QUOTE_NONE, spec.header, spec.columns, spec.label, strict_width=False,
            skip_short=spec.skip_short_rows,
        )
        table, _, _ = _finish_table(rows, str(path), _line, spec.label_names, spec.label_names is None, _label_what(spec.label))
        tables.append(table)
    return tables[0], tables[1]


def _load_glue_hub(name: str) -> tuple[TextTable, TextTable]:
    spec = GLUE_TASKS[name]
    repo = os.environ.get("DYNASTUDIO_GLUE_REPO", "nyu-mll/glue")
    fix = "pass data_dir (--data-dir) with a local copy of the GLUE files"
    try:
        import datasets
        from datasets.exceptions import DatasetNotFoundError
    except ImportError:
        raise DataError(f"GLUE task '{name}': the 'datasets' package is not installed: pip install datasets, or {fix}") from None
    try:
        loaded = datasets.load_dataset(repo, name)
    except DatasetNotFoundError:
        raise DataError(f"{repo}: dataset not found on the Hugging Face hub: check DYNASTUDIO_GLUE_REPO or {fix}") from None
    except Exception as exc:  # noqa: BLE001 - anything the hub throws is an environment problem the user fixes
        if _is_connection_error(exc):
            raise DataError(f"GLUE task '{name}': could not reach the Hugging Face hub for {repo}: {fix}") from None
        raise DataError(f"{repo}: could not load GLUE task '{name}' ({type(exc).__name__}: {_first_line(exc)}): {fix}") from None
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
        texts = [[_as_text(v) for v in ds[c]] for c in spec.hf_columns]
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
            raw.append(_label_text(value))
        rows = _Rows(texts[0], texts[1] if len(texts) > 1 else None, raw, list(range(1, len(raw) + 1)))
        table, _, _ = _finish_table(rows, source, _row, spec.label_names, spec.label_names is None, "column 'label'")
        tables.append(table)
    return tables[0], tables[1]


def _is_connection_error(exc: BaseException) -> bool:
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


# --------------------------------------------------------------------------- entry points


def demo_resource(name: str):
    """A file of the synthetic demo set, shipped as package data (`dynastudio/core/demo/`)."""
    return resources.files("dynastudio.core").joinpath("demo", name)


def load_task_data(cfg: DataConfig) -> TaskData:
    if cfg.kind == "demo":
        with resources.as_file(demo_resource("train.tsv")) as train_path, resources.as_file(demo_resource("dev.tsv")) as dev_path:
            train, names, _ = read_table(train_path, ("sentence",), "label")
            dev, _, _ = read_table(dev_path, ("sentence",), "label", names)
        return TaskData("demo", train, dev, "accuracy", names, False)

    if cfg.kind == "glue":
        name = _glue_name(cfg.task)
        spec = GLUE_TASKS[name]
        train, dev = _load_glue_local(name, cfg.data_dir) if cfg.data_dir else _load_glue_hub(name)
        return TaskData(name, train, dev, spec.metric, spec.label_names, spec.label_names is None)

    if cfg.kind == "files":
        if not cfg.train or not cfg.dev:
            raise ConfigError("data: kind 'files' needs both a train file and a dev file (--train and --dev)")
        columns = resolve_columns(cfg)
        train, names, regression = read_table(cfg.train, columns.text, columns.label)
        dev, _, _ = read_table(cfg.dev, columns.text, columns.label, names, regression=regression)
        metric = "pearson_spearman" if regression else "accuracy"
        return TaskData(Path(cfg.train).stem, train, dev, metric, names, regression, columns)

    raise ConfigError(f"data.kind: unknown kind '{cfg.kind}': choose demo, glue or files")


# --------------------------------------------------------------------------- which column is which
#
# One rule, used by the loader, by `dynastudio new` and by the studio's New-project form: a column
# has at most one role; the label is found by name, else it is the one column left over that does
# not read as text; the text is a known pair or single by name, else the text-like columns that
# remain (two make a sentence pair). What was guessed is said back to the user.

_LABEL_NAMES = ("label", "labels", "target", "class", "category", "score", "gold_label", "y")
_ID_NAMES = ("id", "idx", "index", "guid", "uid", "row", "row_id", "example_id", "pair_id")
_PAIR_NAMES = (
    ("sentence1", "sentence2"),
    ("premise", "hypothesis"),
    ("question1", "question2"),
    ("question", "passage"),
    ("question", "context"),
    ("question", "sentence"),
    ("query", "passage"),
    ("query", "document"),
    ("text_a", "text_b"),
    ("text1", "text2"),
)
_SINGLE_NAMES = ("sentence", "text", "review", "content", "document", "comment", "tweet", "utterance")
_SAMPLE_ROWS = 200


@dataclass(frozen=True)
class ColumnGuess:
    """Which columns hold the text (one, or two for a pair) and the label; `guessed` names the roles
    the rule filled in (the rest were given). `text` is () and `label` None where it could not tell."""

    text: tuple[str, ...]
    label: str | None
    guessed: tuple[str, ...] = ()

    def describe(self) -> str:
        parts = []
        if self.text:
            parts.append("text = " + " + ".join(self.text) + (" (a sentence pair)" if len(self.text) == 2 else ""))
        if self.label:
            parts.append(f"label = {self.label}")
        return ", ".join(parts)


def check_roles(text_columns: Sequence[str], label_column: str | None, where: str = "data") -> None:
    """A column plays one role: raise ConfigError when the text columns repeat or include the label."""
    text_columns = [c for c in text_columns if c]
    folded = [c.lower() for c in text_columns]
    if len(set(folded)) < len(folded):
        raise ConfigError(
            f"{where}: text column '{text_columns[1]}' is picked twice: pick two different columns, or one for single sentences"
        )
    if label_column and label_column.lower() in folded:
        raise ConfigError(
            f"{where}: column '{label_column}' is picked as both text and label: a column plays one role; "
            "pick another label column (data.label_column, --label-column)"
        )


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _reads_as_text(values: Sequence[str]) -> bool:
    """Mostly non-numeric values, some with a space in them: sentences, not ids, scores or class names."""
    values = [v.strip() for v in values if v and v.strip()]
    if not values:
        return False
    words = [v for v in values if not _is_number(v)]
    return 2 * len(words) > len(values) and any(" " in v for v in words)


def guess_columns(
    columns: Sequence[str],
    rows: Sequence[dict] | None = None,
    text_columns: Sequence[str] = (),
    label_column: str | None = None,
) -> ColumnGuess:
    """Fill in the roles not given. `rows` (a sample, column -> value) lets values decide what reads
    as text; without it every column may. Never gives one column two roles."""
    columns = [c for c in columns if c]
    text_columns = tuple(c for c in text_columns if c)
    check_roles(text_columns, label_column)
    lower = {c.lower(): c for c in reversed(columns)}  # first spelling wins
    guessed = []

    def values(c: str) -> list[str]:
        return [str(r.get(c) if r.get(c) is not None else "") for r in rows or ()]

    def text_like(c: str) -> bool:  # sentences: what an unnamed column must look like to be taken as text
        return rows is None or _reads_as_text(values(c))

    def wordy(c: str) -> bool:  # enough for a column named like text (sentence, text...): not mostly numbers
        vals = [v for v in values(c) if v.strip()]
        return rows is None or 2 * sum(not _is_number(v) for v in vals) > len(vals)

    taken = {c.lower() for c in text_columns}
    label = label_column
    if not label:
        label = next((lower[n] for n in _LABEL_NAMES if n in lower and n not in taken), None)
        if label:
            guessed.append("label")
    free = [c for c in columns if c.lower() not in taken and c != label and c.lower() not in _ID_NAMES]
    text = text_columns
    if not text:
        names = {c.lower(): c for c in free if wordy(c)}
        candidates = [c for c in free if text_like(c)]
        pair = next(((names[a], names[b]) for a, b in _PAIR_NAMES if a in names and b in names), None)
        single = next((names[n] for n in _SINGLE_NAMES if n in names), None)
        if pair:
            text = pair
        elif len(candidates) == 2:
            text = tuple(candidates)
        elif len(candidates) == 1:
            text = (candidates[0],)
        elif single:
            text = (single,)
        if text:
            guessed.append("text")
    if not label:
        # no column is named like a label: take the one column left that is neither text nor an id
        left = [c for c in free if c not in text]
        if len(left) == 1 and not text_like(left[0]):
            label = left[0]
            guessed.append("label")
    return ColumnGuess(tuple(text), label, tuple(r for r in ("text", "label") if r in guessed))


def resolve_columns(cfg: DataConfig) -> ColumnGuess:
    """The text and label columns of a `files` task: the configured ones, the rest guessed by the rule above."""
    if cfg.text_columns and not 1 <= len(cfg.text_columns) <= 2:
        raise ConfigError(
            f"data.text_columns: got {len(cfg.text_columns)} columns ({', '.join(cfg.text_columns)}): "
            "give one column, or two for sentence pairs"
        )
    if cfg.text_columns and cfg.label_column:
        check_roles(cfg.text_columns, cfg.label_column)
        return ColumnGuess(tuple(cfg.text_columns), cfg.label_column)
    columns, rows = peek_rows(Path(cfg.train))
    guess = guess_columns(columns, rows, cfg.text_columns, cfg.label_column)
    if guess.label is None:
        raise DataError(
            f"{cfg.train}: cannot tell which column holds the labels (columns: {_short(', '.join(columns), 200)}; none is named "
            "label, labels, target or class): name the label column (data.label_column, --label-column)"
        )
    if not guess.text:
        raise DataError(
            f"{cfg.train}: cannot tell which column holds the text (columns: {_short(', '.join(columns), 200)}): "
            "name one or two text columns (data.text_columns, --text-columns)"
        )
    return guess


def peek_rows(path: Path, n: int = _SAMPLE_ROWS) -> tuple[list[str], list[dict]]:
    """The header and the first `n` rows (column -> value) of a CSV/TSV/JSONL file, read the way the loader reads it."""
    path = Path(path)
    suffix = _suffix(path)
    _check_file(path)
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


# --------------------------------------------------------------------------- reading files


@dataclass
class _Rows:
    text_a: list[str]
    text_b: list[str] | None
    raw_labels: list[str]
    lines: list[int]  # where each row came from, for messages


def _line(n: int) -> str:
    return f"line {n}"


def _row(n: int) -> str:
    return f"row {n}"


def _label_what(label) -> str:
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
    _check_file(path)
    if suffix in _JSON_LINES:
        rows = _read_jsonl(path, text_columns, label_column)
    else:
        rows = _read_delimited(path, _DELIMITERS[suffix], _quoting(suffix), True, text_columns, label_column)
    return _finish_table(rows, str(path), _line, label_names, regression, f"column '{label_column}'")


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in _DELIMITERS and suffix not in _JSON_LINES:
        shown = suffix or "no extension"
        raise DataError(f"{path}: unsupported file type ({shown}): save it as .csv, .tsv or .jsonl")
    return suffix


def _quoting(suffix: str) -> int:
    # TSV files in the wild (GLUE among them) carry bare quotes inside text, so only CSV honours quoting.
    return csv.QUOTE_MINIMAL if suffix == ".csv" else csv.QUOTE_NONE


def _check_file(path: Path) -> None:
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
    with open(path, "r", encoding="utf-16", newline="") as fh:
        n = 0
        try:
            for n, text in enumerate(fh, start=1):
                yield text
        except UnicodeDecodeError:
            raise DataError(f"{path}: line {n + 1} is not valid UTF-16: save the file as UTF-8") from None


def _csv_records(path: Path, delimiter: str, quoting: int) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(_decoded_lines(path), delimiter=delimiter, quoting=quoting)
    start = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataError(f"{path}: line {reader.line_num} cannot be parsed ({exc}): fix the quoting on that line") from None
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
        f"{path}: line 1 (header) has no {role} column '{_short(column)}' (columns: {_short(', '.join(names), 200)}): "
        f"name an existing column or fix the header"
    )


def _read_delimited(
    path: Path,
    delimiter: str,
    quoting: int,
    header: bool,
    text_columns: Sequence,
    label_column,
    *,
    strict_width: bool = True,
    skip_short: bool = False,
) -> _Rows:
    records = _csv_records(path, delimiter, quoting)
    names: list[str] | None = None
    if header:
        first = next(records, None)
        if first is None:
            raise DataError(f"{path}: the file is empty: add a header row (e.g. sentence{delimiter}label) and data rows")
        names = [h.strip() for h in first[1]]
        twice = sorted({n for n in names if n and names.count(n) > 1})
        if twice:
            raise DataError(f"{path}: line 1 (header) names more than one column '{_short(twice[0])}': give each column "
                            "its own name")
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
    shown = f" ({', '.join(names)})" if names else ""
    out = _Rows([], [] if len(text_idx) > 1 else None, [], [])
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


def _read_jsonl(path: Path, text_columns: Sequence[str], label_column: str) -> _Rows:
    out = _Rows([], [] if len(text_columns) > 1 else None, [], [])
    for line_no, obj in _jsonl_records(path):
        if not out.lines:
            keys = list(obj)
            for role, col in [*(("text", c) for c in text_columns), ("label", label_column)]:
                if col not in obj:
                    raise DataError(
                        f"{path}: line {line_no} has no {role} key '{col}' (keys: {_short(', '.join(keys), 200)}): "
                        "name an existing key or fix the file"
                    )
        for col in text_columns:
            if col not in obj:
                raise DataError(f"{path}: line {line_no} has no key '{col}': add it (\"\" if empty) or remove that line")
        out.text_a.append(_as_text(obj[text_columns[0]])[:MAX_TEXT_CHARS])
        if out.text_b is not None:
            out.text_b.append(_as_text(obj[text_columns[1]])[:MAX_TEXT_CHARS])
        out.raw_labels.append(_label_text(obj.get(label_column)))
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
            raise DataError(f"{path}: line {n} is not valid JSON ({exc.msg}, column {exc.colno}): fix or remove that line") from None
        if not isinstance(obj, dict):
            kind = {list: "an array", str: "a string"}.get(type(obj), "a bare value")
            raise DataError(
                f"{path}: line {n} is {kind}, not a JSON object: write one {{\"text\": ..., \"label\": ...}} object per line"
            )
        yield n, obj


def _as_text(value) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _label_text(value) -> str:
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


def _finish_table(
    rows: _Rows,
    source: str,
    where: Callable[[int], str],
    label_names: tuple[str, ...] | None,
    regression: bool | None,
    what: str,
) -> tuple[TextTable, tuple[str, ...] | None, bool]:
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
                raise DataError(f"{source}: {where(n)} has label '{_short(raw)}' in {what}, not a finite number: "
                                "fix the label or remove that row")
    if label_names is not None:
        regression = False
    if regression is None:
        numbers = [_number(r) for r in rows.raw_labels]
        regression = all(v is not None for v in numbers) and not all(v.is_integer() for v in numbers)

    if regression:
        labels = []
        for raw, n in zip(rows.raw_labels, rows.lines):
            value = _number(raw)
            if value is None:
                raise DataError(f"{source}: {where(n)} has label '{_short(raw)}' in {what}, not a number: regression labels must be numbers")
            labels.append(value)
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
                f"{source}: every row has label '{_short(canon[0])}' in {what}: a classifier needs at least 2 different labels"
            )
    index = {name: i for i, name in enumerate(label_names)}
    labels = []
    for label, n in zip(canon, rows.lines):
        if label not in index:
            known = _short(", ".join(label_names), 200)
            raise DataError(
                f"{source}: {where(n)} has label '{_short(label)}', which the training data does not have (known: {known}): "
                "fix the label or remove that row"
            )
        labels.append(index[label])
    return TextTable(rows.text_a, rows.text_b, labels, source), tuple(label_names), False


# --------------------------------------------------------------------------- splits


def split_heldout(table: TextTable, n: int, seed: int) -> tuple[TextTable, TextTable]:
    n = max(0, int(n))
    if n >= len(table):
        raise DataError(
            f"{table.source}: cannot hold out {n} of its {len(table)} rows and still train: "
            "hold out fewer (importance_examples) or score importance on the dev set (importance_split=dev)"
        )
    order = np.random.default_rng(seed).permutation(len(table))
    # Each part keeps file order so a split is easy to inspect; which rows land where is random.
    return table.select(np.sort(order[n:])), table.select(np.sort(order[:n]))


def subset(table: TextTable, n: int, seed: int) -> TextTable:
    if n >= len(table):
        return table
    order = np.random.default_rng(seed).permutation(len(table))
    return table.select(np.sort(order[: max(0, int(n))]))


# --------------------------------------------------------------------------- tokenising and batching


@dataclass
class Encoded:
    input_ids: list  # one int array (or list of ints) per row
    token_type_ids: list | None
    labels: list
    is_regression: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)

    def joined(self, other: "Encoded") -> "Encoded":
        """These rows followed by `other`'s (the same task, so the same label kind)."""
        if (self.token_type_ids is None) != (other.token_type_ids is None) or self.is_regression != other.is_regression:
            raise InternalError("joined rows of two different encodings (token types or label kinds differ)")
        types = None if self.token_type_ids is None else list(self.token_type_ids) + list(other.token_type_ids)
        return Encoded(list(self.input_ids) + list(other.input_ids), types, list(self.labels) + list(other.labels),
                       self.is_regression)


def encode(table: TextTable, tokenizer, max_seq_length: int, chunk: int = 4096, progress=None) -> Encoded:
    input_ids: list = []
    type_ids: list[list[int]] | None = []
    # Chunks keep the tokenizer's peak memory flat on large sets (MNLI, QQP).
    for start in range(0, len(table), chunk):
        a = table.text_a[start : start + chunk]
        b = None if table.text_b is None else table.text_b[start : start + chunk]
        out = tokenizer(
            a, b, truncation="longest_first", max_length=max_seq_length, padding=False, return_attention_mask=False
        )
        # a compact array per row, as the cache reader gives them back: a list of Python ints took ~780 bytes
        # per 20-token row, and a million rows most of `new`'s memory
        input_ids.extend(np.asarray(x, dtype=np.int32) for x in out["input_ids"])
        if type_ids is not None and "token_type_ids" in out:
            type_ids.extend(np.asarray(x, dtype=np.int8) for x in out["token_type_ids"])
        else:
            type_ids = None
        if progress is not None:
            progress(len(a))
    if not len(table):
        type_ids = None
    regression = any(isinstance(v, float) for v in table.labels)
    return Encoded(input_ids, type_ids, list(table.labels), regression)


def num_batches(n_rows: int, batch_size: int) -> int:
    return (n_rows + batch_size - 1) // batch_size if n_rows > 0 else 0


MEGA_BATCHES = 50  # batches per length-sorted group, as transformers' group_by_length uses at most


def batch_order(lengths: np.ndarray, batch_size: int, *, shuffle: bool, seed: int = 0, epoch: int = 0,
                group_by_length: bool = False) -> list[np.ndarray]:
    """The row indices of every batch of one epoch, in order: a pure function of its arguments, so a resumed
    run (any number of processes) replays the same batches.

    group_by_length: the shuffled rows are cut into groups of MEGA_BATCHES batches, each group is sorted by
    length (rows of similar length share a batch, so little padding), and the batches are then shuffled,
    with the longest one first so that a too-large batch fails at the first step, not hours in.
    """
    n = len(lengths)
    if not shuffle:
        return [np.arange(s, min(n, s + batch_size)) for s in range(0, n, batch_size)]
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)
    if not group_by_length:
        return [order[s: s + batch_size] for s in range(0, n, batch_size)]
    mega = batch_size * MEGA_BATCHES
    batches: list[np.ndarray] = []
    for s in range(0, n, mega):
        group = order[s: s + mega]
        group = group[np.argsort(-lengths[group], kind="stable")]
        batches.extend(group[i: i + batch_size] for i in range(0, len(group), batch_size))
    batches = [batches[i] for i in rng.permutation(len(batches))]
    if batches:
        longest = int(np.argmax([lengths[b].max() for b in batches]))
        batches[0], batches[longest] = batches[longest], batches[0]
    return batches


def row_lengths(enc: "Encoded") -> np.ndarray:
    return np.fromiter((len(r) for r in enc.input_ids), dtype=np.int64, count=len(enc))


def padding_stats(enc: "Encoded", batch_size: int, *, seed: int = 0, epoch: int = 0, group_by_length: bool) -> dict:
    """Real and padded tokens of one training epoch (what a batch costs is its rows x its longest row)."""
    lengths = row_lengths(enc)
    batches = batch_order(lengths, batch_size, shuffle=True, seed=seed, epoch=epoch, group_by_length=group_by_length)
    padded = int(sum(len(b) * lengths[b].max() for b in batches))
    real = int(lengths.sum())
    return {"real_tokens": real, "padded_tokens": padded, "ratio": padded / max(real, 1), "batches": len(batches)}


def shard(idx: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This process's rows of a global batch: every world-th row, so each rank sees rows of every length.

    A batch with fewer rows than processes is topped up with its own rows (as torch's DistributedSampler
    pads an epoch), so every rank always has a row to run: only the last batch of an epoch can be that short.
    """
    if world == 1:
        return idx
    if len(idx) < world:
        idx = np.resize(idx, world)
    return idx[rank::world]


def iterate_batches(
    enc: Encoded,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    skip: int = 0,
    pad_id: int = 0,
    group_by_length: bool = False,
    rank: int = 0,
    world: int = 1,
    pin_memory: bool = False,
) -> Iterator[dict]:
    """Padded batches of `enc` as tensors. With world > 1, each global batch of `batch_size` rows is split
    across the processes, and the batch also holds `n_rows_global`/`n_tokens_global` (ints: the global
    batch's size), so a loss averaged over this process's share can be weighted into the global average."""
    import torch

    lengths = row_lengths(enc)
    label_dtype = torch.float32 if enc.is_regression else torch.long
    batches = batch_order(lengths, batch_size, shuffle=shuffle, seed=seed, epoch=epoch, group_by_length=group_by_length)
    for glob in batches[max(0, skip):]:
        idx = shard(glob, rank, world)
        rows = [enc.input_ids[i] for i in idx]
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        types = np.zeros((len(rows), width), dtype=np.int64) if enc.token_type_ids is not None else None
        for j, i in enumerate(idx):
            length = len(rows[j])
            ids[j, :length] = rows[j]
            mask[j, :length] = 1
            if types is not None:
                types[j, :length] = enc.token_type_ids[i]
        batch = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if types is not None:
            batch["token_type_ids"] = torch.from_numpy(types)
        batch["labels"] = torch.tensor([enc.labels[i] for i in idx], dtype=label_dtype)
        if pin_memory:
            batch = {k: v.pin_memory() for k, v in batch.items()}
        if world > 1:
            full = np.resize(glob, world) if len(glob) < world else glob
            batch["n_rows_global"] = int(len(full))
            batch["n_tokens_global"] = int(lengths[full].sum())
        yield batch


def to_device(batch: dict, device) -> dict:
    """Tensors to `device` (asynchronously from pinned memory on a GPU); plain values stay as they are."""
    import torch

    non_blocking = torch.device(device).type == "cuda"
    return {k: v.to(device, non_blocking=non_blocking) if hasattr(v, "to") else v for k, v in batch.items()}


def table_summary(path, text_columns, label_column, label_names=None, regression: bool | None = None,
                  preview_rows: int = 20) -> dict:
    """What a form shows of a data file, small enough to pass between processes: its row count, label set and
    counts, and the first rows; {"error": message} for a file read_table refuses."""
    try:
        table, names, is_regression = read_table(path, text_columns, label_column, label_names, regression=regression)
    except UserError as exc:
        return {"error": str(exc)}
    n = min(preview_rows, len(table))
    preview = [[table.text_a[i][:500]] + ([table.text_b[i][:500]] if table.text_b is not None else []) + [table.labels[i]]
               for i in range(n)]
    out = {"rows": len(table), "names": names, "regression": is_regression, "preview": preview}
    if is_regression:
        out["min"], out["max"] = float(min(table.labels)), float(max(table.labels))
    else:
        counts: dict = {}
        for v in table.labels:
            counts[v] = counts.get(v, 0) + 1
        out["counts"] = counts
    return out
