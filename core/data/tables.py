"""Rows of text and labels in memory (TextTable), and the held-out splits and subsets taken from them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError


@dataclass
class TextTable:
    text_a: list[str]
    text_b: list[str] | None
    labels: list
    source: str

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, indices) -> TextTable:
        idx = [int(i) for i in indices]
        return TextTable(
            text_a=[self.text_a[i] for i in idx],
            text_b=None if self.text_b is None else [self.text_b[i] for i in idx],
            labels=[self.labels[i] for i in idx],
            source=self.source,
        )


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
