"""Head and FFN-neuron importance scores, and rewiring: reorder weights so the most important come first."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import runtime
from .dynamic import encoder_of, forward_subnet, layer_hyper


@dataclass
class Importance:
    head: torch.Tensor  # (layers, heads)
    neuron: torch.Tensor  # (layers, intermediate_size)
    batches: int = 0


def task_loss(logits: torch.Tensor, labels: torch.Tensor, is_regression: bool) -> torch.Tensor:
    if is_regression:
        return F.mse_loss(logits.view(-1), labels.float().view(-1))
    return F.cross_entropy(logits, labels)


def compute_importance(
    model: nn.Module,
    batches: Iterable[dict],
    is_regression: bool,
    on_batch: Callable[[int], None] | None = None,
) -> Importance:
    """Accumulate |dL/d head_mask| per head and |sum w * dL/dw| per FFN neuron over `batches`.

    The neuron score adds the Taylor term of the neuron's input row (with its bias) and of its
    output column, each taken in absolute value per batch. Gradients are zeroed before every batch, so
    each batch's term is its own; the paper's released code never zeroes them, so its later batches
    re-count the earlier ones' gradients (an audit found this; our scores are the sum the paper describes).
    The model is scored in eval mode (no dropout) so the scores are repeatable.
    """
    cfg = model.config
    L, nh = cfg.num_hidden_layers, cfg.num_attention_heads
    was_training = model.training
    model.eval()
    head_mask = torch.ones(L, nh, requires_grad=True, device=next(model.parameters()).device)
    head = torch.zeros(L, nh, dtype=torch.float64)
    neuron = torch.zeros(L, cfg.intermediate_size, dtype=torch.float64)
    layers = encoder_of(model).encoder.layer
    n = 0
    try:
        for batch in batches:
            model.zero_grad(set_to_none=True)
            out = forward_subnet(
                model, batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), head_mask=head_mask
            )
            task_loss(out.logits, batch["labels"], is_regression).backward()
            head += head_mask.grad.detach().abs().double().cpu()
            head_mask.grad = None
            with torch.no_grad():
                for i, layer in enumerate(layers):
                    fi, fo = layer.intermediate.dense, layer.output.dense
                    row = (fi.weight * fi.weight.grad).sum(1) + fi.bias * fi.bias.grad
                    col = (fo.weight * fo.weight.grad).sum(0)
                    neuron[i] += (row.abs() + col.abs()).double().cpu()
            n += 1
            if on_batch is not None:
                on_batch(n)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    if runtime.initialized():
        # under torchrun each process scored its own batches: the sums (and counts) add up exactly, so every
        # process rewires in the same order
        count = torch.tensor([float(n)], dtype=torch.float64)
        for t in (head, neuron, count):
            runtime.all_reduce_sum(t)
        n = int(count.item())
    return Importance(head.float(), neuron.float(), n)


def _permute_rows(linear: nn.Linear, index: torch.Tensor) -> None:
    linear.weight.data = linear.weight.data.index_select(0, index).contiguous()
    linear.bias.data = linear.bias.data.index_select(0, index).contiguous()


def _permute_cols(linear: nn.Linear, index: torch.Tensor) -> None:
    linear.weight.data = linear.weight.data.index_select(1, index).contiguous()


@torch.no_grad()
def rewire(model: nn.Module, imp: Importance) -> Importance:
    """Reorder every layer's heads and FFN neurons by descending importance, in place.

    Q/K/V output rows move head by head, the attention-output input columns follow them; the
    intermediate rows and the FFN-output columns move neuron by neuron. The function computed by
    the model is unchanged (attention and the FFN are sums over heads and neurons).
    Returns the importance re-indexed to the new order (so it reads descending).
    """
    hd = layer_hyper(model.config).head_dim
    head_out = torch.empty_like(imp.head)
    neuron_out = torch.empty_like(imp.neuron)
    for i, layer in enumerate(encoder_of(model).encoder.layer):
        head_order = torch.argsort(imp.head[i], descending=True, stable=True)
        dims = (head_order[:, None] * hd + torch.arange(hd)[None, :]).reshape(-1)
        dev = layer.attention.self.query.weight.device
        dims = dims.to(dev)
        sa = layer.attention.self
        for lin in (sa.query, sa.key, sa.value):
            _permute_rows(lin, dims)
        _permute_cols(layer.attention.output.dense, dims)
        neuron_order = torch.argsort(imp.neuron[i], descending=True, stable=True)
        _permute_rows(layer.intermediate.dense, neuron_order.to(dev))
        _permute_cols(layer.output.dense, neuron_order.to(dev))
        head_out[i] = imp.head[i][head_order]
        neuron_out[i] = imp.neuron[i][neuron_order]
    return Importance(head_out, neuron_out, imp.batches)
