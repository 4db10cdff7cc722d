"""Batches: the seeded order of an epoch's rows, length grouping, sharding across processes, padded tensors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .encoding import Encoded


def num_batches(n_rows: int, batch_size: int) -> int:
    return (n_rows + batch_size - 1) // batch_size if n_rows > 0 else 0


MEGA_BATCHES = 50  # batches per length-sorted group, as transformers' group_by_length uses at most


def batch_order(
    lengths: np.ndarray, batch_size: int, *, shuffle: bool, seed: int = 0, epoch: int = 0, group_by_length: bool = False
) -> list[np.ndarray]:
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
        return [order[s : s + batch_size] for s in range(0, n, batch_size)]
    mega = batch_size * MEGA_BATCHES
    batches: list[np.ndarray] = []
    for s in range(0, n, mega):
        group = order[s : s + mega]
        group = group[np.argsort(-lengths[group], kind="stable")]
        batches.extend(group[i : i + batch_size] for i in range(0, len(group), batch_size))
    batches = [batches[i] for i in rng.permutation(len(batches))]
    if batches:
        longest = int(np.argmax([lengths[b].max() for b in batches]))
        batches[0], batches[longest] = batches[longest], batches[0]
    return batches


def row_lengths(enc: Encoded) -> np.ndarray:
    return np.fromiter((len(r) for r in enc.input_ids), dtype=np.int64, count=len(enc))


def padding_stats(enc: Encoded, batch_size: int, *, seed: int = 0, epoch: int = 0, group_by_length: bool) -> dict:
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
    """Padded batches of `enc` as tensors, with two plain values: `padded` (whether any row is padded) and
    `n_tokens` (this batch's real tokens). With world > 1, each global batch of `batch_size` rows is split
    across the processes, and the batch also holds `n_rows_global`/`n_tokens_global` (ints: the global
    batch's size), so a loss averaged over this process's share can be weighted into the global average."""
    import torch

    lengths = row_lengths(enc)
    label_dtype = torch.float32 if enc.is_regression else torch.long
    batches = batch_order(lengths, batch_size, shuffle=shuffle, seed=seed, epoch=epoch, group_by_length=group_by_length)
    type_rows = enc.token_type_ids
    for glob in batches[max(0, skip) :]:
        idx = shard(glob, rank, world)
        rows = [enc.input_ids[i] for i in idx]
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        types = np.zeros((len(rows), width), dtype=np.int64) if type_rows is not None else None
        for j, i in enumerate(idx):
            length = len(rows[j])
            ids[j, :length] = rows[j]
            mask[j, :length] = 1
            if types is not None and type_rows is not None:
                types[j, :length] = type_rows[i]
        batch: dict[str, Any] = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if types is not None:
            batch["token_type_ids"] = torch.from_numpy(types)
        batch["labels"] = torch.tensor([enc.labels[i] for i in idx], dtype=label_dtype)
        if pin_memory:
            batch = {k: v.pin_memory() for k, v in batch.items()}
        # decided here, on the CPU: asking the mask on a GPU would wait for the device at every forward pass
        n_tokens = int(sum(len(r) for r in rows))
        batch["padded"] = n_tokens != len(rows) * width
        batch["n_tokens"] = n_tokens
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
