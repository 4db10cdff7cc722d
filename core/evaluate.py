"""Scoring sub-networks on dev, and the evaluate stage that writes the results grid (results.json)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .data import Encoded, compute_metric, iterate_batches
from .dynamic import SubnetSpec, forward_subnet, subnet_grid, subnet_size
from .events import EvalEnded, StageProgress, StageStarted
from .prepare import RunInputs



@torch.inference_mode()
def predict(model: nn.Module, enc: Encoded, spec: SubnetSpec, depth_rule: str, batch_size: int, pad_id: int, device) -> np.ndarray:
    model.eval()
    out = []
    for batch in iterate_batches(enc, batch_size, shuffle=False, pad_id=pad_id):
        b = {k: v.to(device) for k, v in batch.items()}
        out.append(forward_subnet(model, b["input_ids"], b["attention_mask"], b.get("token_type_ids"), spec=spec, depth_rule=depth_rule).logits.float().cpu())
    return torch.cat(out).numpy()


def evaluate_specs(inputs: RunInputs, model: nn.Module, specs, depth_rule: str | None = None, on_spec=None) -> dict[str, dict]:
    """The task metric on dev for each sub-network: label -> metrics dict (with "score")."""
    rule = depth_rule or inputs.cfg.train.depth_rule
    labels = np.asarray(inputs.dev.labels)
    out = {}
    for i, spec in enumerate(specs):
        logits = predict(model, inputs.dev, spec, rule, inputs.cfg.train.eval_batch_size, inputs.pad_id, inputs.device)
        out[spec.label] = compute_metric(inputs.task.metric, logits, labels)
        if on_spec is not None:
            on_spec(i + 1)
    return out


def grid_rows(inputs: RunInputs, model: nn.Module, specs, scores: dict[str, dict]) -> list[dict]:
    rule = inputs.cfg.train.depth_rule
    seq = inputs.cfg.train.max_seq_length  # FLOPs at the project's own sequence length, as latency is measured
    full = subnet_size(model.config, SubnetSpec(), rule, seq)
    rows = []
    for spec in specs:
        size = subnet_size(model.config, spec, rule, seq)
        m = scores[spec.label]
        rows.append({
            "label": spec.label,
            "width_mult": spec.width_mult,
            "depth_mult": spec.depth_mult,
            "metric": inputs.task.metric,
            "value": m["score"],
            "metrics": m,
            **size,
            "flops_rel": size["flops"] / full["flops"],
        })
    return rows


def chance_score(inputs: RunInputs) -> float:
    """What always predicting the majority train class (or the mean train label) scores on dev."""
    labels = np.asarray(inputs.dev.labels)
    train = np.asarray(inputs.train.labels)
    if inputs.task.is_regression:
        logits = np.full((len(labels), 1), float(train.mean()) if len(train) else 0.0)
        # a constant has no correlation: the chance level of pearson/spearman is 0
        return 0.0 if inputs.task.metric == "pearson_spearman" else compute_metric(inputs.task.metric, logits, labels)["score"]
    k = max(inputs.task.num_labels, 1)
    majority = int(np.bincount(train.astype(np.int64), minlength=k).argmax()) if len(train) else 0
    logits = np.zeros((len(labels), k))
    logits[:, majority] = 1.0
    return compute_metric(inputs.task.metric, logits, labels)["score"]


def evaluate_grid(inputs: RunInputs, model: nn.Module, model_name: str, teacher: dict, events, stop) -> dict:
    """Score every grid sub-network on dev; returns what results.json holds."""
    t = inputs.cfg.train
    specs = subnet_grid(t.width_mults, t.depth_mults)
    events(StageStarted("evaluate", len(specs)))
    scores = {}
    for i, spec in enumerate(specs):
        stop.check()
        scores.update(evaluate_specs(inputs, model, [spec]))
        events(StageProgress("evaluate", i + 1, len(specs)))
    rows = grid_rows(inputs, model, specs, scores)
    chance = chance_score(inputs)
    events(EvalEnded("evaluate", 0, inputs.task.metric, {r["label"]: r["value"] for r in rows}, chance))
    return {
        "task": inputs.task.name,
        "metric": inputs.task.metric,
        "model": model_name,
        "depth_rule": t.depth_rule,
        "dev_examples": len(inputs.dev),
        "teacher": teacher,
        "chance": chance,
        "flops_seq_len": t.max_seq_length,
        "rows": rows,
    }
