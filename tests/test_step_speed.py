"""The training step's shared work: one embeddings pass per step for all sub-networks, a cheaper dropout draw on
the CPU, and the fused optimizer.

Each test here failed before the change it guards: every sub-network's pass ran the embeddings and their backward
(a dense zero-filled gradient of the whole word-embedding table per pass), dropout drew its mask with torch's element-at-a-time Bernoulli, and AdamW ran its per-tensor loop.
"""

from __future__ import annotations

import pytest
import torch

from dynastudio.core.distill import StepContext, distill_step, make_optimizer, task_step
from dynastudio.core.dynamic import SubnetSpec, embed, encoder_of, forward_subnet, subnet_grid
from dynastudio.core.slim import dropout
from helpers import tiny_config, tiny_model

SPECS = subnet_grid((1.0, 0.5, 0.25), (1.0, 0.5))


def _batch(seed: int = 0, rows: int = 6, width: int = 9) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, tiny_config().vocab_size, (rows, width), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0  # one padded row
    ids[0, 6:] = 0
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": torch.zeros_like(ids),
        "labels": torch.randint(0, 2, (rows,), generator=g),
        "padded": True,
        "n_tokens": int(mask.sum()),
    }


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _distill_grads(monkeypatch, share: bool, **dropout) -> dict[str, torch.Tensor]:
    teacher = tiny_model(seed=1, **dropout)
    student = tiny_model(seed=2, **dropout).train()
    if not share:
        monkeypatch.setattr(StepContext, "share_embedding", lambda self, batch, passes, int8=False: None)
    distill_step(student, teacher, _batch(), SPECS, l1=1.0, l2=0.5, depth_rule="paper", is_regression=False)
    monkeypatch.undo()
    return _grads(student)


def test_shared_embeddings_give_the_same_gradients_as_one_pass_each(monkeypatch):
    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    shared = _distill_grads(monkeypatch, True, **no_dropout)
    each = _distill_grads(monkeypatch, False, **no_dropout)
    assert shared.keys() == each.keys()
    assert "bert.embeddings.word_embeddings.weight" in shared
    for name in shared:
        torch.testing.assert_close(shared[name], each[name], rtol=1e-5, atol=1e-6, msg=name)


def test_task_step_shares_them_too(monkeypatch):
    model = tiny_model(seed=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).train()
    task_step(model, _batch(1), SPECS, depth_rule="paper", is_regression=False)
    shared = _grads(model)
    model.zero_grad(set_to_none=True)
    monkeypatch.setattr(StepContext, "share_embedding", lambda self, batch, passes, int8=False: None)
    task_step(model, _batch(1), SPECS, depth_rule="paper", is_regression=False)
    for name, g in _grads(model).items():
        torch.testing.assert_close(shared[name], g, rtol=1e-5, atol=1e-6, msg=name)


def test_the_word_embedding_gradient_is_computed_once_per_step():
    teacher, student = tiny_model(seed=1), tiny_model(seed=2).train()
    calls = []
    encoder_of(student).embeddings.word_embeddings.weight.register_hook(lambda g: calls.append(g.shape))
    distill_step(student, teacher, _batch(), SPECS, l1=1.0, l2=0.1, depth_rule="paper", is_regression=False)
    assert len(calls) == 1  # was one per sub-network: 6 here


def test_each_pass_draws_its_own_embedding_dropout():
    """Sharing the embeddings must not share their dropout: every sub-network pass sees a fresh mask, as it did
    when each pass ran the embeddings module in training mode."""
    model = tiny_model(seed=4, hidden_dropout_prob=0.5).train()
    b = _batch()
    e = embed(model, b["input_ids"], b["token_type_ids"])
    outs = [forward_subnet(model, b["input_ids"], b["attention_mask"], need_hidden=True, embedded=e) for _ in range(2)]
    first, second = outs[0].hidden_states[0], outs[1].hidden_states[0]
    assert not torch.equal(first, second)
    kept = (first != 0) & (second != 0)  # where both masks kept a value it is e scaled by 1 / (1 - p)
    torch.testing.assert_close(first[kept], (e * 2)[kept])
    # and in eval mode the shared pass is exactly the model's own forward
    model.eval()
    ref = forward_subnet(model, b["input_ids"], b["attention_mask"], spec=SubnetSpec(0.5, 0.5))
    got = forward_subnet(
        model,
        b["input_ids"],
        b["attention_mask"],
        spec=SubnetSpec(0.5, 0.5),
        embedded=embed(model, b["input_ids"], None),
    )
    torch.testing.assert_close(got.logits, ref.logits)


def test_embed_leaves_the_training_mode_as_it_was():
    model = tiny_model().train()
    b = _batch()
    embed(model, b["input_ids"], None)
    assert all(m.training for m in model.modules())


def test_adamw_is_fused_on_a_cpu():
    opt = make_optimizer(tiny_model(), 1e-3, 0.01)
    assert opt.defaults["fused"] is True
    assert all(group["fused"] for group in opt.param_groups)


def test_cheap_dropout_keeps_each_value_with_probability_1_minus_p():
    torch.manual_seed(0)
    x = torch.ones(1_000_003)  # not a multiple of four: the last 64-bit draw is cut
    y = dropout(x, 0.1, True)
    kept = y != 0
    # 1,000,003 Bernoulli(0.9) draws: the standard deviation of the kept share is 0.0003
    assert abs(kept.double().mean().item() - 0.9) < 0.0015
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.9))
    # each of the four 16-bit lanes of a 64-bit draw is uniform: a draw over [0, 2**63) would never drop in one lane
    lanes = (~kept[:1_000_000]).view(-1, 4).double().mean(0)
    assert ((lanes - 0.1).abs() < 0.004).all(), lanes


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cheap_dropout_is_seeded_and_its_gradient_is_the_mask(dtype):
    x = torch.randn(7, 5, 11, dtype=dtype, requires_grad=True)
    torch.manual_seed(3)
    y = dropout(x, 0.3, True)
    torch.manual_seed(3)
    assert torch.equal(dropout(x, 0.3, True), y)  # the same seed, the same mask (resume restores the generator)
    assert not torch.equal(dropout(x, 0.3, True), y)  # the next call draws a new one
    assert y.dtype == dtype
    y.sum().backward()
    scale = torch.tensor(1 / 0.7, dtype=dtype)
    torch.testing.assert_close(x.grad, torch.where(y != 0, scale, torch.zeros((), dtype=dtype)))


def test_cheap_dropout_leaves_eval_and_p_0_alone():
    x = torch.randn(4, 3)
    assert dropout(x, 0.1, False) is x
    assert dropout(x, 0.0, True) is x
    assert torch.equal(dropout(x, 1.0, True), torch.zeros_like(x))
