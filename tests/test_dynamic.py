"""Slicing: the dynamic forward equals HF's, equals masking, and the depth rules keep the documented layers."""

from __future__ import annotations

import copy

import pytest
import torch

from dynastudio.core.dynamic import (
    SubnetSpec,
    forward_subnet,
    kept_layers,
    layer_targets,
    n_heads_kept,
    n_neurons_kept,
    subnet_grid,
    subnet_size,
)
from helpers import tiny_model


def _inputs(vocab: int, pad: int = 0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    ids[1, 8:] = pad
    return ids, mask


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_full_forward_matches_transformers(kind):
    model = tiny_model(kind)
    ids, mask = _inputs(model.config.vocab_size, model.config.pad_token_id or 0)
    ref = model(input_ids=ids, attention_mask=mask).logits
    out = forward_subnet(model, ids, mask).logits
    assert torch.allclose(ref, out, atol=1e-5), (ref - out).abs().max()


def _masked_reference(model, ids, mask, spec: SubnetSpec, rule: str):
    """The same sub-network computed the slow way: full-size layers with dropped heads/neurons zeroed."""
    m = copy.deepcopy(model)
    cfg = m.config
    hd = cfg.hidden_size // cfg.num_attention_heads
    keep_dims = n_heads_kept(cfg.num_attention_heads, spec.width_mult) * hd
    keep_neurons = n_neurons_kept(cfg.intermediate_size, spec.width_mult)
    dim_mask = (torch.arange(cfg.hidden_size) < keep_dims).float()
    neuron_mask = (torch.arange(cfg.intermediate_size) < keep_neurons).float()
    hooks = []
    for layer in m.bert.encoder.layer:
        hooks.append(layer.attention.output.dense.register_forward_pre_hook(lambda mod, a: (a[0] * dim_mask,)))
        hooks.append(layer.output.dense.register_forward_pre_hook(lambda mod, a: (a[0] * neuron_mask,)))
    keep = kept_layers(cfg.num_hidden_layers, spec.depth_mult, rule)
    m.bert.encoder.layer = torch.nn.ModuleList([m.bert.encoder.layer[i] for i in keep])
    m.config.num_hidden_layers = len(keep)
    with torch.no_grad():
        out = m(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    return out.logits, out.hidden_states[-1]


@pytest.mark.parametrize("rule", ["paper", "keep-last"])
@pytest.mark.parametrize(
    "spec", [SubnetSpec(0.75, 1.0), SubnetSpec(0.5, 0.75), SubnetSpec(0.25, 0.5), SubnetSpec(1.0, 0.5)]
)
def test_sliced_equals_masked(spec, rule):
    model = tiny_model("bert", seed=3)
    ids, mask = _inputs(model.config.vocab_size, seed=1)
    with torch.no_grad():
        out = forward_subnet(model, ids, mask, spec=spec, depth_rule=rule, need_hidden=True)
    masked_logits, masked_hidden = _masked_reference(model, ids, mask, spec, rule)
    assert torch.allclose(out.logits, masked_logits, atol=1e-6)
    real = mask.bool()  # padded positions carry no meaning in either computation
    assert torch.allclose(out.hidden_states[-1][real], masked_hidden[real], atol=1e-5)
    # and a smaller width really does change the function (the check above is not vacuous)
    if spec.width_mult < 1:
        with torch.no_grad():
            full = forward_subnet(
                model, ids, mask, spec=SubnetSpec(1.0, spec.depth_mult), depth_rule=rule, need_hidden=True
            )
            small = forward_subnet(model, ids, mask, spec=spec, depth_rule=rule, need_hidden=True)
        assert (full.hidden_states[-1] - small.hidden_states[-1]).abs().max() > 1e-2


def test_sliced_weights_are_physically_smaller():
    """The sub-network's matmuls see sliced tensors: record the weight shapes F.linear receives."""
    model = tiny_model("bert")
    ids, mask = _inputs(model.config.vocab_size)
    seen = []
    real_linear = torch.nn.functional.linear

    def spy(x, w, b=None):
        seen.append(tuple(w.shape))
        return real_linear(x, w, b)

    torch.nn.functional.linear = spy
    try:
        with torch.no_grad():
            forward_subnet(model, ids, mask, spec=SubnetSpec(0.5, 1.0))
    finally:
        torch.nn.functional.linear = real_linear
    assert (16, 32) in seen and (32, 16) in seen  # Q/K/V rows and attention-output columns at 2 of 4 heads
    assert (32, 32) in seen  # FFN: 32 of 64 neurons
    assert (64, 32) not in seen and (32, 64) not in seen


@pytest.mark.parametrize(
    "L,d,rule,expected",
    [
        (6, 0.5, "paper", [0, 2, 4]),
        (6, 0.75, "paper", [0, 1, 2, 4]),
        (12, 0.5, "paper", [0, 2, 4, 6, 8, 10]),
        (12, 0.75, "paper", [0, 1, 2, 4, 5, 6, 8, 9, 10]),
        (6, 0.5, "keep-last", [1, 3, 5]),
        (6, 0.75, "keep-last", [1, 3, 4, 5]),
        (12, 0.5, "keep-last", [1, 3, 5, 7, 9, 11]),
        (4, 1.0, "paper", [0, 1, 2, 3]),
        (4, 1.0, "keep-last", [0, 1, 2, 3]),
    ],
)
def test_depth_rules(L, d, rule, expected):
    assert kept_layers(L, d, rule) == expected


def test_layer_targets():
    # paper: a kept layer stands for itself and the dropped layers after it
    assert layer_targets(6, 0.5, "paper") == [1, 3, 5]
    assert layer_targets(6, 0.75, "paper") == [0, 1, 3, 5]
    # keep-last: a kept layer stands for the dropped layers before it
    assert layer_targets(6, 0.75, "keep-last") == [1, 3, 4, 5]
    assert layer_targets(4, 1.0, "paper") == [0, 1, 2, 3]


def test_width_counts_follow_the_paper():
    assert [n_heads_kept(12, w) for w in (1.0, 0.75, 0.5, 0.25)] == [12, 9, 6, 3]
    assert [n_neurons_kept(1536, w) for w in (1.0, 0.75, 0.5, 0.25)] == [1536, 1152, 768, 384]


def test_subnet_size_scales():
    cfg = tiny_model("bert").config
    full = subnet_size(cfg, SubnetSpec(), "keep-last")
    half = subnet_size(cfg, SubnetSpec(0.5, 1.0), "keep-last")
    shallow = subnet_size(cfg, SubnetSpec(1.0, 0.5), "keep-last")
    assert half["flops"] < full["flops"] and shallow["layers"] == 2
    # counted parameters equal the real parameter count of the full model
    model = tiny_model("bert")
    assert full["total_params"] == sum(p.numel() for p in model.parameters())
    assert len(subnet_grid((1.0, 0.5), (1.0, 0.5))) == 4
