"""Extraction: copy one width/depth sub-network out of a trained model into a physically smaller standalone model."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .config import DEFAULT_DEPTH_RULE, DEPTH_RULES
from .dynamic import (
    AnySpec,
    ArchSpec,
    SubnetSpec,
    check_arch,
    check_supported,
    encoder_of,
    layer_hyper,
    layer_plan,
    layer_weights,
)
from .errors import ConfigError
from .project import Project
from .slim import DynaBertSlimConfig, SlimModel


def check_spec(spec: AnySpec) -> AnySpec:
    if isinstance(spec, ArchSpec):
        return spec  # checked against the model's config by slim_config_for
    for name, v in (("width", spec.width_mult), ("depth", spec.depth_mult)):
        if not isinstance(v, (int, float)) or not 0 < v <= 1:
            raise ConfigError(f"--{name} {v}: a multiplier must be in (0, 1], e.g. 0.5")
    return SubnetSpec(float(spec.width_mult), float(spec.depth_mult))


def slim_config_for(config, spec: AnySpec, depth_rule: str) -> DynaBertSlimConfig:
    """The shape of the sub-network `spec` (a grid cell or a searched shape) of an HF BERT/RoBERTa classifier config."""
    kind = check_supported(config)
    where: dict
    if isinstance(spec, ArchSpec):
        check_arch(spec, config)
        where = {"searched": spec.to_json(), "label": spec.label}
    else:
        where = {"width_mult": spec.width_mult, "depth_mult": spec.depth_mult}
    kept, heads, neurons = layer_plan(config, spec, depth_rule)
    return DynaBertSlimConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        head_dim=config.hidden_size // config.num_attention_heads,
        heads_per_layer=heads,
        ffn_per_layer=neurons,
        max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size,
        pad_token_id=config.pad_token_id,
        layer_norm_eps=config.layer_norm_eps,
        hidden_act=config.hidden_act,
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        classifier_dropout=getattr(config, "classifier_dropout", None),
        head_kind=kind,
        position_kind="roberta" if kind == "roberta" else "absolute",
        id2label=dict(config.id2label),
        label2id=dict(config.label2id) if config.label2id else None,
        problem_type=config.problem_type,
        return_dict=False,  # the studio's own calls want the logits tensor
        source={
            "model_type": config.model_type,
            **where,
            "depth_rule": depth_rule,
            "kept_layers": kept,
            "full_layers": config.num_hidden_layers,
            "full_heads": config.num_attention_heads,
            "full_intermediate_size": config.intermediate_size,
        },
    )


@torch.no_grad()
def extract_from_model(model: nn.Module, spec: AnySpec, depth_rule: str = DEFAULT_DEPTH_RULE) -> SlimModel:
    """The sub-network `spec` of a (rewired) HF sequence classifier as a standalone SlimModel.

    Kept heads and neurons are the leading ones (rewiring put the most important first), kept layers
    follow `depth_rule`; every tensor is copied, so the result shares no storage with `model`.
    """
    if depth_rule not in DEPTH_RULES:
        raise ConfigError(f"depth rule '{depth_rule}': choose one of {', '.join(DEPTH_RULES)}")
    spec = check_spec(spec)
    config = model.config
    slim_cfg = slim_config_for(config, spec, depth_rule)
    hp = layer_hyper(config)
    kept = slim_cfg.source["kept_layers"]

    emb = encoder_of(model).embeddings
    state = {
        "embeddings.word_embeddings.weight": emb.word_embeddings.weight,
        "embeddings.position_embeddings.weight": emb.position_embeddings.weight,
        "embeddings.token_type_embeddings.weight": emb.token_type_embeddings.weight,
        "embeddings.LayerNorm.weight": emb.LayerNorm.weight,
        "embeddings.LayerNorm.bias": emb.LayerNorm.bias,
    }
    for j, (i, n_heads, n_neurons) in enumerate(zip(kept, slim_cfg.heads_per_layer, slim_cfg.ffn_per_layer)):
        w = layer_weights(model, i).sliced(n_heads, hp.head_dim, n_neurons)
        p = f"layers.{j}."
        for name, (wt, bs) in {
            "query": (w.q_w, w.q_b),
            "key": (w.k_w, w.k_b),
            "value": (w.v_w, w.v_b),
            "attention_output": (w.ao_w, w.ao_b),
            "attention_norm": (w.ln1_w, w.ln1_b),
            "intermediate": (w.fi_w, w.fi_b),
            "output": (w.fo_w, w.fo_b),
            "output_norm": (w.ln2_w, w.ln2_b),
        }.items():
            state[p + name + ".weight"], state[p + name + ".bias"] = wt, bs
    if slim_cfg.head_kind == "roberta":
        for name in ("dense", "out_proj"):
            lin = getattr(model.classifier, name)
            state[f"classifier.{name}.weight"], state[f"classifier.{name}.bias"] = lin.weight, lin.bias
    else:
        pooler = encoder_of(model).pooler.dense
        state["pooler.weight"], state["pooler.bias"] = pooler.weight, pooler.bias
        state["classifier.weight"], state["classifier.bias"] = model.classifier.weight, model.classifier.bias

    slim = SlimModel(slim_cfg)
    slim.load_state_dict({k: v.detach().float().cpu().clone().contiguous() for k, v in state.items()}, strict=True)
    return slim.eval()


def extract(
    project: Project | str | Path, width_mult: float, depth_mult: float, model_name: str | None = None
) -> SlimModel:
    """The sub-network (width_mult, depth_mult) of a project's model as a standalone SlimModel.

    `model_name` defaults to the most trained model the project has (`final_model_name`); the
    depth rule is the project's. Raises ProjectError when the model is missing or corrupted.
    """
    from .store import final_model_name

    if not isinstance(project, Project):
        project = Project.open(Path(project))
    assert isinstance(project, Project)  # for mypy: open() returns the class it is called on
    spec = check_spec(SubnetSpec(width_mult, depth_mult))
    name = model_name or final_model_name(project)
    model = project.load_model(name)
    slim = extract_from_model(model, spec, project.config.train.depth_rule)
    slim.config.source = {**slim.config.source, "project": project.config.name or project.root.name, "model_name": name}
    return slim
