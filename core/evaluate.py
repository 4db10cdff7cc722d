"""Scoring sub-networks on dev, and the evaluate stage that writes the results grid (results.json)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch
from torch import nn

from . import runtime
from .data.batching import iterate_batches, row_lengths, to_device
from .data.encoding import Encoded
from .dynamic import AnySpec, SubnetSpec, forward_subnet, subnet_grid, subnet_size
from .events import EvalEnded, StageProgress, StageStarted
from .metrics import compute_metric
from .prepare import RunInputs
from .store import atomic_write_text, is_main_process


@torch.inference_mode()
def predict(
    model: nn.Module,
    enc: Encoded,
    spec: AnySpec,
    depth_rule: str,
    batch_size: int,
    pad_id: int,
    device,
    precision: str = "fp32",
    int8: bool = False,
) -> np.ndarray:
    """Logits of every row of `enc`, in its order (float32, on the CPU). Scores are computed in fp32 (the default):
    what results.json, the teacher check and Explore show, beside the INT8/fp16 files' scores. `int8`: computed as
    the INT8 file computes them (quantaware.py), for the int8-aware stage's own curve.

    Rows run sorted by length, longest first (batches carry almost no padding; a row's logits do not depend on its
    batch-mates), so a batch too big for the device fails at once; a batch that runs out of memory is run again in
    halves. Under torchrun each process runs every world-th row and the logits are gathered.
    """
    model.eval()
    lengths = row_lengths(enc)
    order = np.argsort(-lengths, kind="stable")
    mine = order[runtime.rank() :: runtime.world()]
    part = Encoded(
        [enc.input_ids[i] for i in mine],
        None if enc.token_type_ids is None else [enc.token_type_ids[i] for i in mine],
        [enc.labels[i] for i in mine],
        enc.is_regression,
    )
    while True:
        try:
            local = _logits(model, part, spec, depth_rule, batch_size, pad_id, device, precision, int8)
            break
        except torch.OutOfMemoryError:
            if batch_size <= 1:
                raise  # not even one row fits: the job's error says what to lower
            batch_size = max(1, batch_size // 2)
            if torch.device(device).type == "cuda":
                torch.cuda.empty_cache()
    result = np.zeros((len(enc), local.shape[1]), dtype=np.float32)
    for rows, logits in runtime.all_gather_objects((mine, local)):
        result[rows] = logits
    return result


def _logits(model, part: Encoded, spec, depth_rule, batch_size, pad_id, device, precision, int8) -> np.ndarray:
    out = []
    for batch in iterate_batches(part, batch_size, shuffle=False, pad_id=pad_id):
        b = to_device(batch, device)
        with runtime.autocast(device, precision):
            logits = forward_subnet(
                model,
                b["input_ids"],
                b["attention_mask"],
                b.get("token_type_ids"),
                spec=spec,
                depth_rule=depth_rule,
                padded=b.get("padded"),
                int8=int8,
            ).logits
        out.append(logits.float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, model.config.num_labels), dtype=np.float32)


def eval_batch_size(cfg, device) -> int:
    """Rows per evaluation batch: the project's setting on a CPU; on a GPU at least 64k tokens' worth of rows,
    enough to keep it busy (inference stores no activations for a backward pass)."""
    t = cfg.train
    if torch.device(device).type == "cuda":
        return max(t.eval_batch_size, 65536 // t.max_seq_length)
    return t.eval_batch_size


def evaluate_specs(
    inputs: RunInputs, model: nn.Module, specs, depth_rule: str | None = None, on_spec=None, int8: bool = False
) -> dict[str, dict]:
    """The task metric on dev for each sub-network: label -> metrics dict (with "score"); `int8`: of the sub-network
    computed as its INT8 file computes it."""
    rule = depth_rule or inputs.cfg.train.depth_rule
    labels = np.asarray(inputs.dev.labels)
    rows = eval_batch_size(inputs.cfg, inputs.device)
    out = {}
    for i, spec in enumerate(specs):
        logits = predict(model, inputs.dev, spec, rule, rows, inputs.pad_id, inputs.device, int8=int8)  # fp32
        out[spec.label] = compute_metric(inputs.task.metric, logits, labels)
        if on_spec is not None:
            on_spec(i + 1)
    return out


# ---- the last scores, kept for the evaluate stage --------------------------------------------------
def scores_key(inputs: RunInputs, model: nn.Module, depth_rule: str) -> str:
    """What dev scores depend on: every weight's bytes, the encoded dev rows, the depth rule and the metric."""
    h = hashlib.blake2b(digest_size=20)
    h.update(json.dumps([depth_rule, inputs.task.metric, inputs.task.is_regression]).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    dev = inputs.dev
    for column in (dev.input_ids, dev.token_type_ids or [], [dev.labels]):
        for row in column:
            h.update(np.asarray(row).tobytes())
            h.update(b"|")
    return h.hexdigest()


def keep_scores(inputs: RunInputs, model: nn.Module, scores: dict[str, dict]) -> None:
    """Keep these dev scores of `model` (cache/dev_scores.json) so the evaluate stage need not compute them again:
    the last epoch's evaluation of the depth stage scores the very model the evaluate stage loads."""
    if not is_main_process():
        return
    rule = inputs.cfg.train.depth_rule
    record = {"key": scores_key(inputs, model, rule), "scores": scores}
    atomic_write_text(inputs.project.dev_scores_path, json.dumps(record))


def kept_scores(inputs: RunInputs, model: nn.Module, labels) -> dict[str, dict]:
    """The kept scores of those sub-networks `labels` for which they were computed on exactly this model, dev rows
    and depth rule; {} when there are none (any difference in a weight misses)."""
    path = inputs.project.dev_scores_path
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        scores = record["scores"]
        key = record["key"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if not isinstance(scores, dict) or key != scores_key(inputs, model, inputs.cfg.train.depth_rule):
        return {}
    return {label: scores[label] for label in labels if isinstance(scores.get(label), dict)}


def grid_rows(inputs: RunInputs, model: nn.Module, specs, scores: dict[str, dict]) -> list[dict]:
    rule = inputs.cfg.train.depth_rule
    seq = inputs.cfg.train.max_seq_length  # FLOPs at the project's own sequence length, as latency is measured
    full = subnet_size(model.config, SubnetSpec(), rule, seq)
    rows = []
    for spec in specs:
        size = subnet_size(model.config, spec, rule, seq)
        m = scores[spec.label]
        rows.append(
            {
                "label": spec.label,
                "width_mult": spec.width_mult,
                "depth_mult": spec.depth_mult,
                "metric": inputs.task.metric,
                "value": m["score"],
                "metrics": m,
                **size,
                "flops_rel": size["flops"] / full["flops"],
            }
        )
    return rows


def constant_logits(inputs: RunInputs, rows: int) -> np.ndarray:
    """Logits that always predict the majority train class (or the mean train label), for `rows` rows."""
    train = np.asarray(inputs.train.labels)
    if inputs.task.is_regression:
        return np.full((rows, 1), float(train.mean()) if len(train) else 0.0)
    k = max(inputs.task.num_labels, 1)
    majority = int(np.bincount(train.astype(np.int64), minlength=k).argmax()) if len(train) else 0
    logits = np.zeros((rows, k))
    logits[:, majority] = 1.0
    return logits


def _constant_score(metric: str, logits: np.ndarray, labels: np.ndarray) -> float:
    # a constant has no correlation: the chance level of pearson/spearman is 0
    return 0.0 if metric == "pearson_spearman" else compute_metric(metric, logits, labels)["score"]


def chance_score(inputs: RunInputs) -> float:
    """What always predicting the majority train class (or the mean train label) scores on dev."""
    labels = np.asarray(inputs.dev.labels)
    return _constant_score(inputs.task.metric, constant_logits(inputs, len(labels)), labels)


TEACHER_MIN_MARGIN = 0.01  # one point of the metric (accuracy, F1, Matthews, correlation are all on a 0-1 scale)
TEACHER_RESAMPLES = 1000


def paired_lower_bound(n: int, difference) -> float:
    """The one-sided 95 % lower bound of a difference between two predictions on the same n rows, by a paired
    bootstrap: `difference(idx)` on TEACHER_RESAMPLES resamples of the row indices (seeded, so the same on every
    call). With a single row, the difference itself."""
    if n <= 1:
        return float(difference(np.arange(n)))
    rng = np.random.default_rng(0)
    return float(np.percentile([difference(rng.integers(0, n, n)) for _ in range(TEACHER_RESAMPLES)], 5))


def teacher_check(inputs: RunInputs, logits: np.ndarray, lr: float | None = None) -> dict:
    """Is the fine-tuned teacher clearly better than the constant prediction on dev? Clearly: at least
    TEACHER_MIN_MARGIN ahead, and ahead at the one-sided 95 % lower bound of a paired bootstrap over the dev rows
    (a teacher that learned nothing lands within noise of the constant, whatever its exact score)."""
    metric = inputs.task.metric
    labels = np.asarray(inputs.dev.labels)
    const = constant_logits(inputs, len(labels))
    score = compute_metric(metric, logits, labels)["score"]
    base = _constant_score(metric, const, labels)
    low = paired_lower_bound(
        len(labels),
        lambda idx: (
            compute_metric(metric, logits[idx], labels[idx])["score"] - _constant_score(metric, const[idx], labels[idx])
        ),
    )
    clearly = bool(score - base >= TEACHER_MIN_MARGIN and low > 0)
    advice = "" if clearly else _teacher_advice(inputs, score, base, low, lr)
    return {
        "score": float(score),
        "constant": float(base),
        "margin_low": low,
        "clearly_better": clearly,
        "advice": advice,
    }


# a teacher learning rate that fine-tuned the built-in MiniLM where the paper's 2e-5 left it at the majority class
# (a pair task of 3,700 rows: 1e-4 and 5 epochs; issue 26). Above it, a lower rate is the likelier fix.
ADVISED_TEACHER_LR = 1e-4
ADVISED_TEACHER_EPOCHS = 5.0


def suggested_teacher_settings(lr: float, epochs: float) -> tuple[float, float]:
    """(teacher_lr, teacher_epochs) for the teacher check's advice: concrete values to try next."""
    new_lr = ADVISED_TEACHER_LR if lr < ADVISED_TEACHER_LR else lr / 3
    return new_lr, max(ADVISED_TEACHER_EPOCHS, epochs + 2)


def _teacher_advice(inputs: RunInputs, score: float, base: float, low: float, lr: float | None = None) -> str:
    """`lr`: the rate the teacher trained with (train.teacher_lr, or the trial's choice when that is null)."""
    t, root = inputs.cfg.train, inputs.project.root
    used = lr if lr is not None else t.teacher_lr if t.teacher_lr is not None else ADVISED_TEACHER_LR
    what = "the mean label" if inputs.task.is_regression else "the majority class"
    lr, epochs = suggested_teacher_settings(used, t.teacher_epochs)
    fixes = [
        f"more training rows (it trained on {len(inputs.train):,})",
        f"more teacher epochs (teacher_epochs {epochs:g} instead of {t.teacher_epochs:g})",
        f"a {'higher' if lr > used else 'lower'} teacher learning rate (teacher_lr {lr:g} instead of {used:g})",
    ]
    lengths = row_lengths(inputs.train)
    cut = float(np.mean(lengths >= t.max_seq_length)) if len(lengths) else 0.0
    if cut >= 0.05:
        fixes.append(
            f"a longer max_seq_length ({100 * cut:.0f} % of the training rows are cut at {t.max_seq_length} tokens)"
        )
    return (
        f"the teacher scores {score:.4f} {inputs.task.metric} on dev, not clearly better than always predicting {what} "
        f"({base:.4f}; 95 % lower bound of the difference {low:+.4f}), so distilling it cannot give useful "
        f"sub-networks. Likely fixes: {', '.join(fixes[:-1])} or {fixes[-1]}. To train it again at another rate: "
        f'`dynastudio run {root} --teacher-lr {lr:g}`; for the other settings edit "train" in '
        f"{root / 'project.json'}, delete {root / 'models' / 'teacher'} and run again (the teacher and every stage "
        "after it are redone)"
    )


def evaluate_grid(inputs: RunInputs, model: nn.Module, model_name: str, teacher: dict, events, stop) -> dict:
    """Score every grid sub-network on dev; returns what results.json holds."""
    t = inputs.cfg.train
    specs = subnet_grid(t.width_mults, t.depth_mults)
    events(StageStarted("evaluate", len(specs)))
    scores = kept_scores(inputs, model, [s.label for s in specs])  # the depth stage's last evaluation, if current
    for i, spec in enumerate(specs):
        runtime.check_stop(stop)
        if spec.label not in scores:
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
        "precision": "fp32",  # the scores' precision, whatever the training's
        "rows": rows,
    }
