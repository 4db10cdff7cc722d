"""Importance scores and rewiring: the reorder keeps the function and puts the important heads first."""

from __future__ import annotations

import torch

from dynastudio.core.dynamic import SubnetSpec, forward_subnet
from dynastudio.core.importance import Importance, compute_importance, rewire
from helpers import tiny_model


def _batches(vocab, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        ids = torch.randint(5, vocab, (4, 10), generator=g)
        yield {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "labels": torch.randint(0, 2, (4,), generator=g),
        }


def test_importance_shapes_and_nonzero():
    model = tiny_model("bert")
    imp = compute_importance(model, _batches(model.config.vocab_size), is_regression=False)
    assert imp.head.shape == (4, 4) and imp.neuron.shape == (4, 64) and imp.batches == 3
    assert (imp.head > 0).all() and (imp.neuron > 0).any()
    assert all(p.grad is None for p in model.parameters())


def test_rewiring_preserves_logits_and_sorts():
    for kind in ("bert", "roberta"):
        model = tiny_model(kind, seed=5)
        imp = compute_importance(model, _batches(model.config.vocab_size), is_regression=False)
        ids = torch.randint(5, model.config.vocab_size, (3, 11))
        mask = torch.ones_like(ids)
        mask[0, 7:] = 0
        with torch.no_grad():
            before = forward_subnet(model, ids, mask).logits
            before_ref = model(input_ids=ids, attention_mask=mask).logits
        new = rewire(model, imp)
        with torch.no_grad():
            after = forward_subnet(model, ids, mask).logits
            after_ref = model(input_ids=ids, attention_mask=mask).logits
        assert torch.allclose(before, after, atol=1e-5)
        assert torch.allclose(before_ref, after_ref, atol=1e-5)
        # re-scored after rewiring, the scores come out in descending order per layer
        assert torch.all(new.head[:, :-1] >= new.head[:, 1:])
        rescored = compute_importance(model, _batches(model.config.vocab_size), is_regression=False)
        assert torch.allclose(rescored.head, new.head, rtol=1e-4, atol=1e-6)
        assert torch.allclose(rescored.neuron, new.neuron, rtol=1e-3, atol=1e-6)


def test_rewiring_moves_the_chosen_head_to_the_front():
    model = tiny_model("bert", seed=2)
    imp = Importance(torch.tensor([[0.1, 0.2, 0.9, 0.3]] * 4), torch.rand(4, 64))
    q_head2 = model.bert.encoder.layer[0].attention.self.query.weight[16:24].clone()
    rewire(model, imp)
    assert torch.equal(model.bert.encoder.layer[0].attention.self.query.weight[0:8], q_head2)
    # the width-0.25 sub-network (1 head) now uses that head
    ids = torch.randint(5, model.config.vocab_size, (2, 6))
    with torch.no_grad():
        out = forward_subnet(model, ids, torch.ones_like(ids), spec=SubnetSpec(0.25, 1.0)).logits
    assert torch.isfinite(out).all()
