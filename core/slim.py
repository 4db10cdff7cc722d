"""A standalone sliced BERT/RoBERTa classifier (any heads/neurons per layer) and the layer math it shares with core.dynamic.

This file is self-contained on purpose: it imports only torch, transformers and the standard
library, because the very same file is copied into every Hugging Face style export as
`modeling_dynabert.py`, where `AutoModelForSequenceClassification.from_pretrained(folder,
trust_remote_code=True)` loads it without DynaBERT Studio installed.
HF's own BERT cannot hold fewer heads than hidden_size / head_dim, hence a class of our own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import SequenceClassifierOutput

MODEL_TYPE = "dynabert-slim"


# ---- the layer math (also what core.dynamic runs on sliced views of a full model) ----------------
@dataclass
class LayerWeights:
    """The tensors of one encoder layer (views into a model's parameters)."""

    q_w: torch.Tensor
    q_b: torch.Tensor
    k_w: torch.Tensor
    k_b: torch.Tensor
    v_w: torch.Tensor
    v_b: torch.Tensor
    ao_w: torch.Tensor  # attention output dense: (hidden, heads*head_dim)
    ao_b: torch.Tensor
    ln1_w: torch.Tensor
    ln1_b: torch.Tensor
    fi_w: torch.Tensor  # intermediate dense: (neurons, hidden)
    fi_b: torch.Tensor
    fo_w: torch.Tensor  # FFN output dense: (hidden, neurons)
    fo_b: torch.Tensor
    ln2_w: torch.Tensor
    ln2_b: torch.Tensor

    def sliced(self, n_heads: int, head_dim: int, n_neurons: int) -> LayerWeights:
        kd = n_heads * head_dim
        return LayerWeights(
            self.q_w[:kd],
            self.q_b[:kd],
            self.k_w[:kd],
            self.k_b[:kd],
            self.v_w[:kd],
            self.v_b[:kd],
            self.ao_w[:, :kd],
            self.ao_b,
            self.ln1_w,
            self.ln1_b,
            self.fi_w[:n_neurons],
            self.fi_b[:n_neurons],
            self.fo_w[:, :n_neurons],
            self.fo_b,
            self.ln2_w,
            self.ln2_b,
        )


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """F.dropout with a cheaper random draw on the CPU; the same distribution (to 1 part in 131,072 of p).

    torch's CPU dropout draws its Bernoulli mask one element at a time (about 6 ns each), which was 14 % of a
    depth-stage step. Here one 64-bit draw from torch's generator gives four 16-bit numbers, each kept when it
    is at or above round(p * 65536) of the 65,536 values: a quarter of the draws, from the same seeded generator
    (resumable, reproducible). Kept values are scaled by 1 / (1 - p), as F.dropout does. Other devices, whose
    dropout is already fast and fused, keep F.dropout.
    """
    if not training or p <= 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0 or not x.is_floating_point():
        return F.dropout(x, p, training)
    n = x.numel()
    draws = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
    r = draws.view(torch.int16)[:n].view(x.shape)
    keep = r >= (round(p * 65536) - 32768)
    return x * keep.to(x.dtype).mul_(1.0 / (1.0 - p))


@dataclass(frozen=True)
class LayerHyper:
    head_dim: int
    act: str
    eps: float
    p_attn: float
    p_hidden: float


def layer_forward(
    h: torch.Tensor,
    attn_mask: torch.Tensor | None,
    w: LayerWeights,
    n_heads: int,
    hp: LayerHyper,
    training: bool,
    head_mask: torch.Tensor | None = None,
    linear=F.linear,
    linear_after_act=None,
) -> torch.Tensor:
    """One post-LN transformer layer over (possibly sliced) weights; cost scales with n_heads and neurons.
    `linear`: how the six projections are computed (F.linear; quantization-aware training passes INT8 emulation);
    `linear_after_act`: how the FFN output's is, which reads the activation function's output (default: `linear`)."""
    bsz, seq, _ = h.shape
    hd = hp.head_dim

    def heads(x: torch.Tensor) -> torch.Tensor:
        return x.view(bsz, seq, n_heads, hd).transpose(1, 2)

    q = heads(linear(h, w.q_w, w.q_b))
    k = heads(linear(h, w.k_w, w.k_b))
    v = heads(linear(h, w.v_w, w.v_b))
    ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=hp.p_attn if training else 0.0)
    if head_mask is not None:
        ctx = ctx * head_mask.view(1, n_heads, 1, 1)
    ctx = ctx.transpose(1, 2).reshape(bsz, seq, n_heads * hd)
    a = dropout(linear(ctx, w.ao_w, w.ao_b), hp.p_hidden, training)
    h1 = F.layer_norm(a + h, (h.shape[-1],), w.ln1_w, w.ln1_b, hp.eps)
    inter = ACT2FN[hp.act](linear(h1, w.fi_w, w.fi_b))
    o = dropout((linear_after_act or linear)(inter, w.fo_w, w.fo_b), hp.p_hidden, training)
    return F.layer_norm(o + h1, (h.shape[-1],), w.ln2_w, w.ln2_b, hp.eps)


# ---- the standalone model -----------------------------------------------------------------------
class DynaBertSlimConfig(PretrainedConfig):
    """The shape of one extracted sub-network.

    heads_per_layer / ffn_per_layer: kept attention heads and FFN neurons of each kept layer (lists,
    so a layer-wise shape could be stored; after extraction every layer has the same counts).
    head_kind: "bert" (pooler + classifier on [CLS]) or "roberta" (dense-tanh-out_proj head).
    position_kind: "absolute" (0..T-1) or "roberta" (counted over non-pad tokens from pad_token_id+1).
    source: where it came from (base model type, width_mult, depth_mult, kept layer indices, rule).
    """

    model_type = MODEL_TYPE

    vocab_size: int = 30522
    hidden_size: int = 768
    head_dim: int = 64
    heads_per_layer: list | None = None
    ffn_per_layer: list | None = None
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    pad_token_id: int | None = 0
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    classifier_dropout: float | None = None
    initializer_range: float = 0.02
    head_kind: str = "bert"
    position_kind: str = "absolute"
    source: dict | None = None

    @property
    def num_hidden_layers(self) -> int:
        return len(self.heads_per_layer or [])


class SlimLayer(nn.Module):
    """One encoder layer holding exactly `n_heads` heads and `n_neurons` FFN neurons."""

    def __init__(self, hidden: int, n_heads: int, head_dim: int, n_neurons: int, eps: float):
        super().__init__()
        kd = n_heads * head_dim
        self.n_heads = n_heads
        self.query = nn.Linear(hidden, kd)
        self.key = nn.Linear(hidden, kd)
        self.value = nn.Linear(hidden, kd)
        self.attention_output = nn.Linear(kd, hidden)
        self.attention_norm = nn.LayerNorm(hidden, eps=eps)
        self.intermediate = nn.Linear(hidden, n_neurons)
        self.output = nn.Linear(n_neurons, hidden)
        self.output_norm = nn.LayerNorm(hidden, eps=eps)

    def weights(self) -> LayerWeights:
        return LayerWeights(
            self.query.weight,
            self.query.bias,
            self.key.weight,
            self.key.bias,
            self.value.weight,
            self.value.bias,
            self.attention_output.weight,
            self.attention_output.bias,
            self.attention_norm.weight,
            self.attention_norm.bias,
            self.intermediate.weight,
            self.intermediate.bias,
            self.output.weight,
            self.output.bias,
            self.output_norm.weight,
            self.output_norm.bias,
        )


class SlimEmbeddings(nn.Module):
    def __init__(self, c: DynaBertSlimConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)
        self.position_kind = c.position_kind
        self.pad_token_id = c.pad_token_id if c.pad_token_id is not None else 0

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        if self.position_kind == "roberta":
            # fairseq's make_positions, as RoBERTa does: pads keep pad_token_id, tokens count from pad+1
            not_pad = input_ids.ne(self.pad_token_id).int()
            position_ids = (torch.cumsum(not_pad, dim=1).type_as(not_pad) * not_pad).long() + self.pad_token_id
        else:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        h = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        h = h + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(h))


class RobertaStyleHead(nn.Module):
    def __init__(self, hidden: int, num_labels: int, p: float):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(p)
        self.out_proj = nn.Linear(hidden, num_labels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.dropout(h[:, 0, :])
        x = self.dropout(torch.tanh(self.dense(x)))
        return self.out_proj(x)


class DynaBertSlimForSequenceClassification(PreTrainedModel):
    """A physically small encoder classifier: each layer holds only its kept heads and neurons.

    forward(input_ids, attention_mask, token_type_ids) returns the logits tensor when `return_dict`
    is False, else a SequenceClassifierOutput (with the loss when `labels` is given). When
    `return_dict` is not passed, `config.return_dict` decides: the studio's extraction sets it to
    False, the Hugging Face style export to True, so `pipeline("text-classification")` works there.
    """

    config_class = DynaBertSlimConfig
    base_model_prefix = "dynabert"
    _no_split_modules = ["SlimLayer"]

    def __init__(self, config: DynaBertSlimConfig):
        super().__init__(config)
        c = config
        if c.head_kind not in ("bert", "roberta"):
            raise ValueError(f"head_kind must be 'bert' or 'roberta', not {c.head_kind!r}")
        heads, ffn = list(c.heads_per_layer or []), list(c.ffn_per_layer or [])
        if len(heads) != len(ffn):
            raise ValueError("heads_per_layer and ffn_per_layer must have one entry per layer")
        self.hyper = LayerHyper(
            c.head_dim, c.hidden_act, c.layer_norm_eps, c.attention_probs_dropout_prob, c.hidden_dropout_prob
        )
        self.embeddings = SlimEmbeddings(c)
        self.layers = nn.ModuleList(
            SlimLayer(c.hidden_size, nh, c.head_dim, nn_, c.layer_norm_eps) for nh, nn_ in zip(heads, ffn)
        )
        p_cls = c.classifier_dropout if c.classifier_dropout is not None else c.hidden_dropout_prob
        self.classifier: nn.Module  # BERT's is one Linear over the pooled token; RoBERTa's a two-layer head
        if c.head_kind == "bert":
            self.pooler = nn.Linear(c.hidden_size, c.hidden_size)
            self.dropout = nn.Dropout(p_cls)
            self.classifier = nn.Linear(c.hidden_size, c.num_labels)
        else:
            self.classifier = RobertaStyleHead(c.hidden_size, c.num_labels, p_cls)
        self.post_init()

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Last hidden state (B, T, hidden)."""
        h = self.embeddings(input_ids, token_type_ids)
        # always a mask when one is given (no data-dependent shortcut): exported graphs stay valid for any input
        mask = attention_mask.bool()[:, None, None, :] if attention_mask is not None else None
        for layer in self.layers:
            h = layer_forward(h, mask, layer.weights(), layer.n_heads, self.hyper, self.training)
        return h

    def classify(self, h: torch.Tensor) -> torch.Tensor:
        if self.config.head_kind == "roberta":
            return self.classifier(h)
        pooled = torch.tanh(self.pooler(h[:, 0]))
        return self.classifier(self.dropout(pooled))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ):
        logits = self.classify(self.encode(input_ids, attention_mask, token_type_ids))
        if return_dict is None:
            return_dict = bool(getattr(self.config, "return_dict", True))
        if not return_dict:
            return logits
        loss = None
        if labels is not None:
            if self.config.num_labels == 1 or self.config.problem_type == "regression":
                loss = F.mse_loss(logits.view(-1).float(), labels.view(-1).float())
            else:
                loss = F.cross_entropy(logits.view(-1, self.config.num_labels), labels.view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits)


SlimModel = DynaBertSlimForSequenceClassification
