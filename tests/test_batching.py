"""Tests for core.data's tokenizing and batching: encode, dynamic padding, seeded batch order, resuming mid-epoch."""

from __future__ import annotations

import pytest
import torch

from dynastudio.core.data.batching import iterate_batches, num_batches
from dynastudio.core.data.encoding import Encoded, encode
from dynastudio.core.data.tables import TextTable

VOCAB = "[PAD] [UNK] [CLS] [SEP] [MASK] the a movie film is was good bad not very great . !".split()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import BertTokenizerFast

    vocab = tmp_path_factory.mktemp("tok") / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return BertTokenizerFast(vocab=str(vocab))


def test_encode_single_and_pairs(tokenizer):
    single = TextTable(["the movie is good .", "bad"], None, [1, 0], "t")
    enc = encode(single, tokenizer, max_seq_length=16)
    assert len(enc) == 2 and enc.labels == [1, 0] and not enc.is_regression
    ids = {w: i for i, w in enumerate(VOCAB)}
    assert list(enc.input_ids[1]) == [ids["[CLS]"], ids["bad"], ids["[SEP]"]]
    assert len(enc.input_ids[0]) == 7  # no padding

    pairs = TextTable(["the movie is very very good .", "a"], ["not good", "bad"], [0.5, 2.0], "t")
    enc = encode(pairs, tokenizer, max_seq_length=8)
    assert enc.is_regression
    assert len(enc.input_ids[0]) == 8  # truncated, longest side first
    assert list(enc.token_type_ids[0]).count(1) == 3  # "not good [SEP]" survives whole
    assert list(enc.token_type_ids[1]) == [0, 0, 0, 1, 1]


def fake_encoded(lengths, regression=False, with_types=True):
    ids = [[100 + i] * n for i, n in enumerate(lengths)]
    types = [[0] * (n // 2) + [1] * (n - n // 2) for n in lengths] if with_types else None
    labels = [float(i) / 2 for i in range(len(lengths))] if regression else [i % 3 for i in range(len(lengths))]
    return Encoded(ids, types, labels, regression)


def test_iterate_batches_dynamic_padding():
    enc = fake_encoded([3, 7, 2, 5, 4])
    batches = list(iterate_batches(enc, 2, shuffle=False, pad_id=9))
    assert [b["input_ids"].shape for b in batches] == [(2, 7), (2, 5), (1, 4)]
    first = batches[0]
    assert first["input_ids"][0].tolist() == [100] * 3 + [9] * 4
    assert first["attention_mask"][0].tolist() == [1] * 3 + [0] * 4
    assert first["token_type_ids"][1].tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert first["labels"].dtype == torch.long and first["input_ids"].dtype == torch.long
    assert num_batches(5, 2) == 3 and num_batches(4, 2) == 2 and num_batches(0, 8) == 0


def test_iterate_batches_without_token_types_and_float_labels():
    enc = fake_encoded([2, 3], regression=True, with_types=False)
    (batch,) = iterate_batches(enc, 4, shuffle=True)
    assert set(batch) == {"input_ids", "attention_mask", "labels", "padded", "n_tokens"}
    assert batch["labels"].dtype == torch.float32


def order_of(batches):
    return [int(x) - 100 for b in batches for x in b["input_ids"][:, 0]]


def test_iterate_batches_order_is_seeded_and_covers_every_row():
    enc = fake_encoded([1 + i % 5 for i in range(23)])
    a = order_of(iterate_batches(enc, 4, shuffle=True, seed=1, epoch=0))
    b = order_of(iterate_batches(enc, 4, shuffle=True, seed=1, epoch=0))
    c = order_of(iterate_batches(enc, 4, shuffle=True, seed=1, epoch=1))
    d = order_of(iterate_batches(enc, 4, shuffle=True, seed=2, epoch=0))
    assert a == b and sorted(a) == list(range(23))
    assert a != c and a != d and sorted(c) == list(range(23))
    assert order_of(iterate_batches(enc, 4, shuffle=False)) == list(range(23))


def test_iterate_batches_skip_resumes_mid_epoch():
    enc = fake_encoded([1 + i % 5 for i in range(23)])
    full = list(iterate_batches(enc, 4, shuffle=True, seed=7, epoch=3))
    resumed = list(iterate_batches(enc, 4, shuffle=True, seed=7, epoch=3, skip=2))
    assert len(full) == 6 and len(resumed) == 4
    for x, y in zip(full[2:], resumed):
        assert torch.equal(x["input_ids"], y["input_ids"]) and torch.equal(x["labels"], y["labels"])
    assert list(iterate_batches(enc, 4, shuffle=True, skip=6)) == []
