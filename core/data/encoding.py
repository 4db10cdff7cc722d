"""Tokenizing: a TextTable's rows to token ids once per project (Encoded), compact enough for millions of rows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InternalError
from .tables import TextTable


@dataclass
class Encoded:
    """A table's rows as token ids, unpadded, with their labels: what training, evaluation and export batch from."""

    input_ids: list  # one int array (or list of ints) per row
    token_type_ids: list | None
    labels: list
    is_regression: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)

    def select(self, rows) -> Encoded:
        """These rows at the given indices, in that order."""
        types = self.token_type_ids
        return Encoded(
            [self.input_ids[i] for i in rows],
            None if types is None else [types[i] for i in rows],
            [self.labels[i] for i in rows],
            self.is_regression,
        )

    def sample(self, n: int, seed: int) -> Encoded:
        """`n` rows drawn at random (seeded), kept in their order; all of them when there are no more."""
        import numpy as np

        return self.select(np.sort(np.random.default_rng(seed).permutation(len(self))[:n]))

    def joined(self, other: Encoded) -> Encoded:
        """These rows followed by `other`'s (the same task, so the same label kind)."""
        if (self.token_type_ids is None) != (other.token_type_ids is None) or self.is_regression != other.is_regression:
            raise InternalError("joined rows of two different encodings (token types or label kinds differ)")
        types = None
        if self.token_type_ids is not None and other.token_type_ids is not None:
            types = list(self.token_type_ids) + list(other.token_type_ids)
        return Encoded(
            list(self.input_ids) + list(other.input_ids),
            types,
            list(self.labels) + list(other.labels),
            self.is_regression,
        )


def encode(table: TextTable, tokenizer, max_seq_length: int, chunk: int = 4096, progress=None) -> Encoded:
    """Every row's token ids (a pair joined as the tokenizer does, the longer side cut first to max_seq_length);
    `progress(n)` is called after each chunk of n rows."""
    input_ids: list = []
    type_ids: list | None = []
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
