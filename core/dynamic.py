"""Run a BERT-family classifier at any width/depth by slicing its weights at run time (no masking)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import DEFAULT_DEPTH_RULE
from .quantaware import int8_linear, int8_tables

# the layer math lives in the self-contained slim module (it ships inside HF-style exports)
from .slim import LayerHyper, LayerWeights, dropout, layer_forward
from .support import check_supported


@dataclass(frozen=True)
class SubnetSpec:
    """One sub-network: the paper's width multiplier (heads/neurons) and depth multiplier (layers)."""

    width_mult: float = 1.0
    depth_mult: float = 1.0

    @property
    def label(self) -> str:
        return f"w{self.width_mult:g}_d{self.depth_mult:g}"

    @property
    def is_full(self) -> bool:
        return self.width_mult == 1.0 and self.depth_mult == 1.0


@dataclass(frozen=True)
class ArchSpec:
    """A sub-network of any shape, beyond the grid's uniform cells: the layers it keeps (original indices, bottom
    first) and, per kept layer, its number of attention heads and FFN neurons (the leading ones, which rewiring made
    the most important). What the search explores; a grid cell is the case where every layer has the same counts."""

    layers: tuple[int, ...]
    heads: tuple[int, ...]
    neurons: tuple[int, ...]

    def __post_init__(self) -> None:
        if not len(self.layers) == len(self.heads) == len(self.neurons):
            raise ValueError(
                f"ArchSpec: {len(self.layers)} layers, {len(self.heads)} heads, {len(self.neurons)} neurons"
            )

    @property
    def label(self) -> str:
        """Short and stable: the same shape always gets the same label (a digest of its counts)."""
        digest = hashlib.blake2b(json.dumps(self.to_json()).encode(), digest_size=3).hexdigest()
        return f"s{len(self.layers)}L-{digest}"

    @property
    def is_full(self) -> bool:
        return False

    def to_json(self) -> dict:
        return {"layers": list(self.layers), "heads": list(self.heads), "neurons": list(self.neurons)}

    @staticmethod
    def from_json(d: dict) -> ArchSpec:
        return ArchSpec(*(tuple(int(x) for x in d[k]) for k in ("layers", "heads", "neurons")))

    def describe(self) -> str:
        """One line for people: the kept layers, and the heads and neurons of each."""
        from .store.shapes import describe_shape

        return describe_shape(self.to_json())


AnySpec = SubnetSpec | ArchSpec


def spec_to_json(spec: AnySpec):
    """A spec as JSON: [width, depth] for a grid cell, the counts' dict for an ArchSpec."""
    return spec.to_json() if isinstance(spec, ArchSpec) else [spec.width_mult, spec.depth_mult]


def spec_from_json(v) -> AnySpec:
    return ArchSpec.from_json(v) if isinstance(v, dict) else SubnetSpec(float(v[0]), float(v[1]))


def layer_plan(config, spec: AnySpec, rule: str) -> tuple[list[int], list[int], list[int]]:
    """(kept layer indices, heads per kept layer, FFN neurons per kept layer) of any spec on a model's config."""
    if isinstance(spec, ArchSpec):
        return list(spec.layers), list(spec.heads), list(spec.neurons)
    kept = kept_layers(config.num_hidden_layers, spec.depth_mult, rule)
    n_heads = n_heads_kept(config.num_attention_heads, spec.width_mult)
    n_neurons = n_neurons_kept(config.intermediate_size, spec.width_mult)
    return kept, [n_heads] * len(kept), [n_neurons] * len(kept)


def check_arch(spec: ArchSpec, config) -> None:
    """A ConfigError naming the first count that does not fit the model (a searched file edited by hand)."""
    from .errors import ConfigError

    L, H, N = config.num_hidden_layers, config.num_attention_heads, config.intermediate_size
    if list(spec.layers) != sorted(set(spec.layers)) or any(not 0 <= i < L for i in spec.layers):
        raise ConfigError(f"layers {list(spec.layers)}: give distinct layer indices from 0 to {L - 1}, bottom first")
    for i, (h, n) in enumerate(zip(spec.heads, spec.neurons)):
        if not 1 <= h <= H or not 1 <= n <= N:
            raise ConfigError(f"layer {spec.layers[i]}: {h} heads and {n} neurons: keep 1-{H} heads and 1-{N} neurons")


def n_heads_kept(num_heads: int, width_mult: float) -> int:
    # int() as in the paper's code (12 heads at 0.75 -> 9); the epsilon guards 0.7499999.
    return max(1, int(num_heads * width_mult + 1e-6))


def n_neurons_kept(intermediate_size: int, width_mult: float) -> int:
    return max(1, int(intermediate_size * width_mult + 1e-6))


def kept_layers(num_layers: int, depth_mult: float, rule: str) -> list[int]:
    """Indices of the layers a sub-network at `depth_mult` keeps.

    paper:     layer floor(i / d) for i in range(round(d * L)), as DynaBERT's released code does
               (at L=6, d=0.5 -> 0, 2, 4: the last layer is dropped).
    keep-last: the same spacing counted from the top, so the last layer is always kept
               (at L=6, d=0.5 -> 1, 3, 5).
    """
    if depth_mult >= 1.0:
        return list(range(num_layers))
    depth = max(1, round(depth_mult * num_layers))
    from_bottom = [min(num_layers - 1, math.floor(i / depth_mult)) for i in range(depth)]
    if rule == "paper":
        return from_bottom
    if rule == "keep-last":
        return sorted(num_layers - 1 - j for j in from_bottom)
    raise ValueError(f"unknown depth rule {rule!r}")


def layer_targets(num_layers: int, depth_mult: float, rule: str) -> list[int]:
    """For each kept layer, the teacher layer whose output it stands for.

    The dropped layers are grouped with a kept neighbour: under `paper` a kept layer replaces itself
    and the dropped layers that follow it, so it is matched to the teacher's output at the end of
    that run; under `keep-last` it replaces the dropped layers before it, so it is matched to itself.
    """
    return kept_targets(kept_layers(num_layers, depth_mult, rule), num_layers, rule)


def kept_targets(kept: Sequence[int], num_layers: int, rule: str) -> list[int]:
    """`layer_targets` for any set of kept layers (a searched shape's as well as a depth multiplier's)."""
    if rule == "paper":
        return [kept[j + 1] - 1 if j + 1 < len(kept) else num_layers - 1 for j in range(len(kept))]
    return list(kept)


def spec_targets(spec: AnySpec, num_layers: int, rule: str) -> list[int]:
    """The teacher layer each kept layer of `spec` is matched to in distillation."""
    if isinstance(spec, ArchSpec):
        return kept_targets(spec.layers, num_layers, rule)
    return layer_targets(num_layers, spec.depth_mult, rule)


def sdpa_mask(attention_mask: torch.Tensor | None, padded: bool | None = None) -> torch.Tensor | None:
    """Boolean (B,1,1,T) mask for SDPA; None when nothing is padded (lets SDPA take its fastest path).

    `padded`: whether any row is padded, as the batching decided it on the CPU (the batch's "padded" flag); None
    asks the mask, which on a GPU waits for the device (a host sync per forward pass)."""
    if attention_mask is None or padded is False:
        return None
    if padded is None and bool(attention_mask.all()):
        return None
    return attention_mask.bool()[:, None, None, :]


@dataclass
class SubnetOutput:
    logits: torch.Tensor
    hidden_states: list[torch.Tensor]  # embedding output, then each kept layer's output
    kept: list[int]  # original indices of the kept layers


def encoder_of(model: nn.Module) -> nn.Module:
    return getattr(model, model.base_model_prefix)


def layer_weights(model: nn.Module, i: int) -> LayerWeights:
    layer = encoder_of(model).encoder.layer[i]
    sa, ao, fi, fo = layer.attention.self, layer.attention.output, layer.intermediate.dense, layer.output
    return LayerWeights(
        sa.query.weight,
        sa.query.bias,
        sa.key.weight,
        sa.key.bias,
        sa.value.weight,
        sa.value.bias,
        ao.dense.weight,
        ao.dense.bias,
        ao.LayerNorm.weight,
        ao.LayerNorm.bias,
        fi.weight,
        fi.bias,
        fo.dense.weight,
        fo.dense.bias,
        fo.LayerNorm.weight,
        fo.LayerNorm.bias,
    )


def layer_hyper(config) -> LayerHyper:
    return LayerHyper(
        head_dim=config.hidden_size // config.num_attention_heads,
        act=config.hidden_act,
        eps=config.layer_norm_eps,
        p_attn=config.attention_probs_dropout_prob,
        p_hidden=config.hidden_dropout_prob,
    )


def classify(model: nn.Module, kind: str, h: torch.Tensor) -> torch.Tensor:
    """Apply the model's own classification head to the last hidden state."""
    if kind == "roberta":
        return model.classifier(h)
    return model.classifier(model.dropout(encoder_of(model).pooler(h)))


def forward_subnet(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    token_type_ids: torch.Tensor | None = None,
    *,
    spec: AnySpec = SubnetSpec(),
    depth_rule: str = DEFAULT_DEPTH_RULE,
    head_mask: torch.Tensor | None = None,
    need_hidden: bool = False,
    padded: bool | None = None,
    embedded: torch.Tensor | None = None,
    int8: bool = False,
) -> SubnetOutput:
    """Forward pass of the sub-network `spec` of an HF sequence classifier whose weights are rewired.

    Heads and FFN neurons are kept from the front (rewiring puts the most important there), so the
    sub-network is a prefix slice of every weight matrix: cost follows the width.
    `head_mask` (layers x heads, full width) multiplies each head's context; used for importance only.
    `padded`: the batch's flag (see `sdpa_mask`); None for a batch that has none.
    `embedded`: the embeddings' output before their dropout (see `embed`), computed once for all the sub-networks
    of a training step; this pass then draws its own dropout on it, as the embeddings module would.
    `int8`: every layer's projection computed as the INT8 export computes it (quantaware.int8_linear; the weights
    stay fp32 and learn through the rounding), for quantization-aware distillation; the head stays fp32, as there.
    """
    config = model.config
    kind = check_supported(config)
    hp = layer_hyper(config)
    kept, heads, neurons = layer_plan(config, spec, depth_rule)
    training = model.training

    if embedded is None:
        h = embeddings_output(encoder_of(model).embeddings, input_ids, token_type_ids, int8)
    else:
        h = dropout(embedded, hp.p_hidden, training)
    mask = sdpa_mask(attention_mask, padded)
    linear = int8_linear() if int8 else F.linear
    linear_after_act = int8_linear(lopsided=True) if int8 else None
    hidden = [h] if need_hidden else []
    for i, n_heads, n_neurons in zip(kept, heads, neurons):
        w = layer_weights(model, i)
        if n_heads != config.num_attention_heads or n_neurons != config.intermediate_size:
            w = w.sliced(n_heads, hp.head_dim, n_neurons)
        hm = head_mask[i, :n_heads] if head_mask is not None else None
        h = layer_forward(h, mask, w, n_heads, hp, training, hm, linear, linear_after_act)
        if need_hidden:
            hidden.append(h)
    return SubnetOutput(classify(model, kind, h), hidden, kept)  # the INT8 files keep the head in fp32 too


def embed(
    model: nn.Module, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None, int8: bool = False
) -> torch.Tensor:
    """The embeddings module's output without its final dropout (BERT's and RoBERTa's embeddings end in a dropout of
    hidden_dropout_prob, the only thing their training mode changes). `int8`: the large lookup tables as the INT8
    file stores them (quantaware.int8_tables)."""
    emb = encoder_of(model).embeddings
    training = emb.training
    emb.train(False)
    try:
        return embeddings_output(emb, input_ids, token_type_ids, int8)
    finally:
        emb.train(training)


def embeddings_output(emb: nn.Module, input_ids, token_type_ids, int8: bool, tables=None) -> torch.Tensor:
    """The embeddings module's forward (in its own training mode); `int8`: with its large tables INT8-rounded
    (`tables`: int8_tables(emb) computed once by a caller whose weights do not change, else here)."""
    if not int8:
        return emb(input_ids=input_ids, token_type_ids=token_type_ids)
    kwargs = {"input_ids": input_ids, "token_type_ids": token_type_ids}
    tables = int8_tables(emb) if tables is None else tables
    return torch.func.functional_call(emb, tables, args=(), kwargs=kwargs, strict=False)


def subnet_grid(width_mults: Sequence[float], depth_mults: Sequence[float]) -> list[SubnetSpec]:
    """All width x depth combinations, widest and deepest first."""
    return [
        SubnetSpec(w, d) for d in sorted(set(depth_mults), reverse=True) for w in sorted(set(width_mults), reverse=True)
    ]


def subnet_size(config, spec: AnySpec, depth_rule: str, seq_len: int = 128) -> dict:
    """Parameter counts (encoder and total) and per-example FLOPs at `seq_len` of a sub-network. "heads" and
    "neurons" are per layer (a searched sub-network's: their mean over its layers, rounded)."""
    H = config.hidden_size
    hd = H // config.num_attention_heads
    kept, heads, neurons = layer_plan(config, spec, depth_rule)
    emb = (config.vocab_size + config.max_position_embeddings + config.type_vocab_size) * H + 2 * H
    head = H * H + H + H * config.num_labels + config.num_labels
    S = seq_len
    layer_params, macs = 0, 0
    for nh, kn in zip(heads, neurons):
        kd = nh * hd
        layer_params += 3 * (kd * H + kd) + (kd * H + H) + 2 * H + (kn * H + kn) + (kn * H + H) + 2 * H
        # multiply-accumulates of the matmuls (projections, scores, context, FFN); x2 = FLOPs
        macs += 3 * S * H * kd + 2 * S * S * kd + S * kd * H + 2 * S * H * kn
    flops = 2 * (macs + H * H + H * config.num_labels)
    n = max(1, len(kept))
    return {
        "encoder_params": emb + layer_params,
        "total_params": emb + layer_params + head,
        "flops": flops,
        "layers": len(kept),
        "heads": round(sum(heads) / n),
        "neurons": round(sum(neurons) / n),
    }
