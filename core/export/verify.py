"""Checking an export against PyTorch on the same inputs: the probe, the extraction and format checks (a typed
mismatch error, as optimum's exporters raise), the dev-set agreement, and the trimmed vocabulary on unseen text."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.batching import iterate_batches
from ..data.encoding import Encoded, encode
from ..data.task import TaskData
from ..dynamic import AnySpec, forward_subnet
from ..errors import InternalError, UserError
from ..events import StopToken
from ..metrics import agreement, compute_metric
from ..project import Project
from ..slim import SlimModel
from .formats import model_size, word_table_bytes
from .runners import Runner, feed, runner, torch_runner
from .runtimes import check_coreml_spec
from .targets import MODEL_FILES
from .vocab import VocabPlan, VocabTrim, save_trimmed_tokenizer, trim_model

FP32_FORMATS = ("onnx", "ort", "torchscript", "hf", "executorch", "openvino")  # within FP32_TOLERANCE of PyTorch
# formats whose predictions are checked on the dev set (reduced precision; OpenVINO's default CPU precision is
# bf16 on CPUs that have it, so its deployed predictions are checked besides its strict fp32 run)
AGREEMENT_FORMATS = ("onnx-int8", "onnx-fp16", "ort-int8", "openvino", "openvino-int8")
FP32_TOLERANCE = 1e-4  # an fp32 export further than this from PyTorch is broken, not "slightly off"
EXTRACTION_TOLERANCE = 1e-4


class ExportMismatchError(InternalError):
    """An extracted or exported model that does not compute what PyTorch computes: a bug of ours, never the
    user's mistake. Carries the format being exported, the largest difference found, the tolerance it broke
    and the (batch, sequence) shape of the inputs it was found on (None each where a check has none: a
    Core ML package's spec is read back, not run)."""

    def __init__(
        self,
        message: str,
        fmt: str | None = None,
        max_abs_diff: float | None = None,
        tolerance: float | None = None,
        shape: tuple[int, ...] | None = None,
    ):
        super().__init__(message)
        self.format = fmt
        self.max_abs_diff = max_abs_diff
        self.tolerance = tolerance
        self.shape = shape


# ---- the task's rows, read once per export ------------------------------------------------------
@dataclass
class TaskRows:
    """What an export checks with: the dev set encoded as in training (None: unavailable, so the checks run on
    synthetic inputs), and the task's texts when the vocabulary is trimmed to them."""

    dev: Encoded | None
    source: str  # "dev set", or why the inputs are synthetic
    metric: str | None
    texts: TaskData | None = None


def read_task_rows(project: Project, tokenizer, texts: bool) -> TaskRows:
    """The dev rows from the project's encoded cache; with `texts` (vocabulary trimming), the task's files
    instead, read once, and the dev rows encoded from them exactly as the cache encodes them."""
    try:
        if texts:
            from ..data.task import load_task_data

            task = load_task_data(project.config.data)
            dev = encode(task.dev, tokenizer, project.config.train.max_seq_length)
            dev.is_regression = task.is_regression
            return TaskRows(dev, "dev set", task.metric, task)
        from ..prepare import prepare_inputs

        inputs = prepare_inputs(project)
        return TaskRows(inputs.dev, "dev set", inputs.task.metric)
    except UserError as exc:
        return TaskRows(None, f"synthetic (dev set unavailable: {str(exc)[:160]})", None)


# ---- the probe: the same inputs for PyTorch and the exported file -------------------------------
@dataclass
class Probe:
    feeds: list[dict]  # two different (batch, sequence) shapes
    source: str
    dev: Encoded | None
    metric: str | None
    pad_id: int


def make_probe(rows: TaskRows, slim: SlimModel, tokenizer, input_names: list[str]) -> Probe:
    """Dev rows at two (batch, sequence) shapes, or synthetic ids when there are none."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (slim.config.pad_token_id or 0)
    dev = rows.dev
    if dev is None or len(dev) == 0:
        why = rows.source if dev is None else "synthetic (empty dev set)"
        return Probe(_synthetic_probe(slim, tokenizer, input_names), why, None, None, pad_id)
    first = feed(next(iterate_batches(dev, min(16, len(dev)), shuffle=False, pad_id=pad_id)), input_names)
    second = _pad_more({k: v[:3] for k, v in first.items()}, 5, pad_id)
    return Probe([first, second], rows.source, dev, rows.metric, pad_id)


def _pad_more(f: dict, extra: int, pad_id: int) -> dict:
    """The same rows with `extra` padded positions: a second (batch, sequence) shape to check the dynamic axes."""
    out = {}
    for k, v in f.items():
        fill = pad_id if k == "input_ids" else 0
        out[k] = np.concatenate([v, np.full((v.shape[0], extra), fill, dtype=v.dtype)], axis=1)
    return out


def _synthetic_probe(slim: SlimModel, tokenizer, input_names: list[str]) -> list[dict]:
    g = np.random.default_rng(0)
    vocab = slim.config.vocab_size
    special = {i for i in (getattr(tokenizer, "all_special_ids", None) or []) if i is not None}
    pool = np.array([i for i in range(vocab) if i not in special] or list(range(vocab)))
    cls = getattr(tokenizer, "cls_token_id", None)
    feeds = []
    for batch, seq in ((4, 24), (3, 11)):
        ids = g.choice(pool, size=(batch, seq)).astype(np.int64)
        if cls is not None:
            ids[:, 0] = cls
        mask = np.ones_like(ids)
        mask[0, seq // 2 :] = 0
        ids[0, seq // 2 :] = slim.config.pad_token_id or 0
        f = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        feeds.append({k: f[k] for k in input_names})
    return feeds


def _largest_difference(run: Runner, ref: Runner, probe: Probe) -> tuple[float, tuple[int, ...]]:
    """The largest absolute difference of two runners' logits over the probe, and the input shape it was on."""
    diff, shape = 0.0, tuple(probe.feeds[0]["input_ids"].shape)
    for f in probe.feeds:
        d = float(np.abs(run(f) - ref(f)).max())
        if d > diff:
            diff, shape = d, tuple(f["input_ids"].shape)
    return diff, shape


# ---- the checks ---------------------------------------------------------------------------------
def check_extraction(
    model, slim: SlimModel, spec: AnySpec, depth_rule: str, probe: Probe, input_names: list[str], fmt: str
) -> float:
    """The extracted model must compute what the dynamic one computes at `spec` before anything is written."""

    def dynamic(f: dict) -> np.ndarray:
        tt = f.get("token_type_ids")
        with torch.no_grad():
            return forward_subnet(
                model,
                torch.from_numpy(f["input_ids"]),
                torch.from_numpy(f["attention_mask"]),
                None if tt is None else torch.from_numpy(tt),
                spec=spec,
                depth_rule=depth_rule,
            ).logits.numpy()

    diff, shape = _largest_difference(torch_runner(slim, input_names), dynamic, probe)
    if diff > EXTRACTION_TOLERANCE:
        raise ExportMismatchError(
            f"the extracted {spec.label} differs from the dynamic model by {diff:.2e}: this is a bug, please report it",
            fmt,
            diff,
            EXTRACTION_TOLERANCE,
            shape,
        )
    return diff


def remapping(run: Runner, trim: VocabTrim, tokenizer) -> Runner:
    """A runner for a trimmed model fed with the original tokenizer's ids (the verification's inputs)."""
    unk = int(trim.old_to_new[tokenizer.unk_token_id]) if tokenizer.unk_token_id is not None else 0
    return lambda f: run({**f, "input_ids": trim.remap_ids(f["input_ids"], unk)})


@dataclass
class FormatCheck:
    """The exported file read back with its runtime and compared with PyTorch on the probe."""

    max_abs_diff: float | None  # None: no runtime here (Core ML)
    tolerance: float | None  # the fp32 formats' bound; None for reduced precision (their dev agreement decides)
    shapes: list[list[int]]
    spec_check: dict | None  # Core ML: the saved package's spec, read back
    deployed: Runner | None  # the file as a user runs it (OpenVINO: its default precision), for the dev agreement


def check_format(
    fmt: str,
    folder: Path,
    slim: SlimModel,
    input_names: list[str],
    probe: Probe,
    label: str,
    trim: VocabTrim | None = None,
    tokenizer=None,
) -> FormatCheck:
    """The exported file against PyTorch (the untrimmed fp32 model) on the probe's inputs; a trimmed model is
    fed the probe's ids remapped. An fp32 format further than FP32_TOLERANCE is a bug: ExportMismatchError."""
    ref = torch_runner(slim, input_names)
    run = runner(fmt, folder, strict=True)
    if trim is not None and run is not None:
        run = remapping(run, trim, tokenizer)
    shapes = [list(f["input_ids"].shape) for f in probe.feeds]
    tolerance = FP32_TOLERANCE if fmt in FP32_FORMATS else None
    if run is None:  # Core ML: no runtime here; the saved package's spec is read back and checked
        spec_check = check_coreml_spec(folder / MODEL_FILES[fmt], input_names, slim.config.num_labels)
        if spec_check["problems"]:
            raise ExportMismatchError(
                f"{fmt} export of {label}: {'; '.join(spec_check['problems'])}: this is a bug, please report it",
                fmt,
                None,
                tolerance,
                None,
            )
        return FormatCheck(None, tolerance, shapes, spec_check, None)
    diff, shape = _largest_difference(run, ref, probe)
    if tolerance is not None and diff > tolerance:
        raise ExportMismatchError(
            f"{fmt} export of {label} differs from PyTorch by {diff:.2e} (> {tolerance:g}) on inputs of shape "
            f"{list(shape)}: nothing was written; this is a bug, please report it with the model and the versions "
            "of torch/onnxruntime",
            fmt,
            diff,
            tolerance,
            shape,
        )
    if fmt in ("openvino", "openvino-int8"):  # the deployed predictions: OpenVINO's default precision on this CPU
        run = runner(fmt, folder)
        if trim is not None and run is not None:
            run = remapping(run, trim, tokenizer)
    return FormatCheck(diff, tolerance, shapes, None, run)


def dev_agreement(
    run: Runner,
    ref: Runner,
    probe: Probe,
    input_names: list[str],
    max_rows: int | None,
    stop: StopToken,
    one_row: bool = False,
) -> dict:
    """Prediction agreement and task metric of the exported model vs PyTorch on the (first max_rows of the) dev set.

    `one_row`: the exported file runs the rows one at a time, unpadded, as a device serving a classifier runs it.
    An INT8 file's activations are quantized with one range per tensor, computed on the fly from the batch it is
    given, so its output for a row depends on the other rows of a batch and on their padding; one row at a time
    it does not. The reference is computed in batches either way (PyTorch fp32 does not depend on them)."""
    dev = probe.dev
    if dev is None:
        raise InternalError("dev_agreement without dev rows: the caller checks probe.dev first")
    enc = dev
    if max_rows is not None and len(dev) > max_rows:
        enc = Encoded(
            dev.input_ids[:max_rows],
            None if dev.token_type_ids is None else dev.token_type_ids[:max_rows],
            dev.labels[:max_rows],
            dev.is_regression,
        )
    outs, refs = [], []
    for batch in iterate_batches(enc, 32, shuffle=False, pad_id=probe.pad_id):
        stop.check()
        f = feed(batch, input_names)
        refs.append(ref(f))
        if not one_row:
            outs.append(run(f))
    if one_row:
        for batch in iterate_batches(enc, 1, shuffle=False, pad_id=probe.pad_id):
            stop.check()
            outs.append(run(feed(batch, input_names)))
    a, b = np.concatenate(outs), np.concatenate(refs)
    share, kind = agreement(a, b, regression=enc.is_regression)
    out = {
        "examples": int(a.shape[0]),
        "agreement": share,
        "agreement_kind": kind,
        "max_abs_diff": float(np.abs(a - b).max()),
        "rows_capped_at": max_rows if enc is not dev else None,
        "rows_per_call": 1 if one_row else 32,
        "metric": probe.metric,
    }
    if probe.metric:
        labels = np.asarray(enc.labels)
        out["exported_score"] = compute_metric(probe.metric, a, labels)["score"]
        out["pytorch_score"] = compute_metric(probe.metric, b, labels)["score"]
    return out


def agreement_failure(fmt: str, dev: dict, min_agreement: float) -> str | None:
    """Why a reduced-precision export fails its dev check (one line), or None when it passes."""
    if dev["agreement"] >= min_agreement:
        return None
    return (
        f"{fmt} agrees with PyTorch on {100 * dev['agreement']:.2f}% of {dev['examples']} dev examples "
        f"({dev['agreement_kind']}), below the required {100 * min_agreement:g}%: "
        f"use the fp32 ONNX export for this sub-network, or a larger sub-network"
    )


# ---- the trimmed vocabulary ---------------------------------------------------------------------
def vocab_report(
    plan: VocabPlan,
    fmt: str,
    slim: SlimModel,
    tokenizer,
    input_names: list[str],
    probe: Probe,
    texts: TaskData,
    max_len: int,
    folder: Path,
    stop: StopToken,
) -> dict:
    """Sizes before/after and how the trimmed vocabulary does on text it has not seen.

    The size before is the written (trimmed) model's plus what the dropped word-embedding rows take in this
    format (`formats.word_table_bytes`): nothing else in the file depends on the vocabulary, so the model is
    not written a second time untrimmed only to be measured.

    Held out: a second trim built from the train texts alone, so every dev row is new text; the dev set,
    tokenized by that trimmed tokenizer (unseen words become [UNK] or smaller pieces), goes through the
    trimmed PyTorch model and is compared with the untrimmed model on the original tokens (the probe's rows).
    """
    original = probe.dev
    if original is None:
        raise InternalError("vocab_report without dev rows: vocabulary trimming needs the task's texts")
    hidden = int(slim.embeddings.word_embeddings.weight.shape[1])
    trim = plan.trim
    size_after = model_size(folder, fmt)
    size_before = (
        size_after
        + word_table_bytes(fmt, trim.old_vocab_size, hidden)
        - word_table_bytes(fmt, len(trim.kept), hidden, rare_from=trim.frequent)
    )
    with tempfile.TemporaryDirectory(dir=folder.parent) as scratch:
        tok_h = save_trimmed_tokenizer(tokenizer, plan.heldout, Path(scratch) / "heldout-tokenizer")
    heldout = encode(texts.dev, tok_h, max_len)
    o2n = plan.heldout.old_to_new
    changed = sum(1 for a, b in zip(original.input_ids, heldout.input_ids) if [int(o2n[i]) for i in a] != list(b))
    ref, trimmed = torch_runner(slim, input_names), torch_runner(trim_model(slim, plan.heldout), input_names)
    pad_o = tokenizer.pad_token_id or 0
    pad_h = tok_h.pad_token_id or 0
    scores_a, scores_b = [], []
    for bo, bh in zip(
        iterate_batches(original, 32, shuffle=False, pad_id=pad_o),
        iterate_batches(heldout, 32, shuffle=False, pad_id=pad_h),
    ):
        stop.check()
        scores_a.append(ref(feed(bo, input_names)))
        scores_b.append(trimmed(feed(bh, input_names)))
    a, b = np.concatenate(scores_a), np.concatenate(scores_b)
    share, kind = agreement(b, a, regression=original.is_regression)
    return {
        "kept_tokens": int(len(trim.kept)),
        "original_tokens": int(trim.old_vocab_size),
        "word_list_entries": plan.words,
        "from": "the task's train and dev texts, the special tokens" + (", the word list" if plan.words else ""),
        "size_before_mb": size_before / 1e6,
        "size_after_mb": size_after / 1e6,
        "heldout": {
            "rows": int(len(a)),
            "kept_tokens": int(len(plan.heldout.kept)),
            "rows_with_unseen_tokens": int(changed),
            "agreement": share,
            "agreement_kind": kind,
            "how": "vocabulary from the train texts only; dev rows tokenized by it, trimmed vs untrimmed model "
            "in PyTorch fp32",
        },
    }
