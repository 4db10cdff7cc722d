"""Which column is which: the one rule that guesses a file's text and label columns, and checks given ones."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..config import DataConfig
from ..errors import ConfigError, DataError
from .readers import peek_rows, short

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
    if not cfg.train:
        raise ConfigError("data: kind 'files' needs a train file (--train)")
    columns, rows = peek_rows(Path(cfg.train))
    guess = guess_columns(columns, rows, cfg.text_columns, cfg.label_column)
    if guess.label is None:
        raise DataError(
            f"{cfg.train}: cannot tell which column holds the labels (columns: {short(', '.join(columns), 200)}; none is named "
            "label, labels, target or class): name the label column (data.label_column, --label-column)"
        )
    if not guess.text:
        raise DataError(
            f"{cfg.train}: cannot tell which column holds the text (columns: {short(', '.join(columns), 200)}): "
            "name one or two text columns (data.text_columns, --text-columns)"
        )
    return guess
