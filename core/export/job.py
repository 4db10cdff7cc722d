"""The export job: resolve the model, write the format into a temporary folder, verify it, report, move it in place."""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from ..config import INT8_EMULATION, STAGE_MODEL
from ..dynamic import AnySpec, ArchSpec, SubnetSpec
from ..errors import ConfigError, ProjectError, UserError, disk_full
from ..events import ExportDone, LogMessage, StageEnded, StageProgress, StageStarted, StopToken
from ..extract import check_spec, extract_from_model
from ..project import Project
from ..requests import INT8_METHODS, INT8_METHODS_BY_FORMAT, ExportReport, ExportRequest
from ..slim import SlimModel
from ..store import atomic_write_text, final_model_name
from ..store.shapes import shape_multipliers
from .formats import file_sizes, model_size, write_format
from .logits import input_names_for
from .onnx import onnx_folder_config
from .readme import readme
from .runners import torch_runner
from .targets import (
    CONFIG_FILE,
    INT8_FORMATS,
    MODEL_FILES,
    TRIM_BY_DEFAULT,
    VERIFICATION_FILE,
    require_extra,
    resolve_format,
)
from .verify import (
    AGREEMENT_FORMATS,
    FormatCheck,
    Probe,
    TaskRows,
    agreement_failure,
    check_extraction,
    check_format,
    dev_agreement,
    make_probe,
    read_task_rows,
    vocab_report,
)
from .vocab import VocabPlan, plan_vocab, read_word_list, save_trimmed_tokenizer, trim_model

SPEED_ROUNDS, SPEED_RUNS = 3, 10  # the INT8 file's timing against fp32 in an export
CALIBRATION_ROWS = 300  # train rows that calibrate openvino-int8 (NNCF's default sample size)
EXPORT_STEPS = 5  # extract, write, verify, dev agreement, move into place
ACTIVATIONS = {  # how each INT8 method quantizes a MatMul's input, for the report
    "per-token": "UINT8 with a range per token computed on the fly: symmetric, asymmetric after the FFN's "
    "activation (export/quantize.per_token_matmuls)",
    "dynamic": "UINT8, one range per tensor computed on the fly (onnxruntime dynamic quantization)",
}


def export_job(project: Project, request: ExportRequest, events, stop: StopToken) -> ExportReport:
    """Extract a sub-network of the project and export it to `request.out_dir`, verified against PyTorch.

    Formats (`request.target` names one, or a target preset that picks one; see targets.FORMATS): onnx,
    onnx-int8, onnx-fp16, ort, ort-int8 (ONNX Runtime Mobile), openvino, openvino-int8 (NNCF, calibrated on
    train rows), executorch, coreml, torchscript and hf (a Hugging Face folder). The folder gets the model, the tokenizer files, the model's shape and labels
    (config.json in the hf format, dynabert_config.json in the others), a README.md on how to run it, and
    verification.json: the largest difference to PyTorch on dev inputs at two (batch, sequence) shapes, and
    for the reduced-precision formats (and a trimmed vocabulary) the prediction agreement on the dev set.
    Everything is written to a temporary sibling folder that is renamed at the end, so a stop or an error
    leaves nothing behind.

    Outcomes: a user's mistake (the folder exists, a bad multiplier) raises a UserError; an extraction or
    fp32 export that differs from PyTorch is a bug and raises verify.ExportMismatchError (an InternalError);
    an INT8/fp16 export below `min_agreement` is written but returned (and saved) with passed=False.
    """
    t0 = time.perf_counter()
    fmt, target, spec, out_dir = _checked_request(project, request)
    events(StageStarted("export", EXPORT_STEPS))
    src = _resolve_model(project, request, fmt, target, spec, events, stop)
    events(StageProgress("export", 1, EXPORT_STEPS))
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the export is meant to be shared
        events(LogMessage(f"exporting {spec.label} as {fmt} to {out_dir}"))
        static = fmt == "openvino-int8" and request.int8_method == "static"
        calibration = _calibration_feeds(project, src) if static else None
        fp32 = _write_folder(fmt, src, tmp, stop, request.int8_method, calibration)
        speed = None
        if fp32 is not None:
            events(LogMessage(f"timing the {fmt} file against fp32 on this machine"))
            speed = _int8_speed(tmp / MODEL_FILES[fmt], fp32, src, project.config.train.max_seq_length, stop)
            shutil.rmtree(fp32.parent)  # the reference is not shipped
        events(StageProgress("export", 2, EXPORT_STEPS))
        verification = _verify(project, request, fmt, target, src, tmp, events, stop, t0)
        if speed is not None:
            verification["quantization"]["speed"] = speed
        atomic_write_text(tmp / VERIFICATION_FILE, json.dumps(verification, indent=2))
        atomic_write_text(tmp / "README.md", readme(verification, src.shipped, out_dir.name))
        stop.check()
        _swap_into_place(tmp, out_dir)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        full = disk_full(exc, str(out_dir)) if isinstance(exc, Exception) else None
        if full is not None:
            raise full from None
        raise
    events(StageProgress("export", EXPORT_STEPS, EXPORT_STEPS))
    return _report(out_dir, verification, events, t0)


# ---- the steps ----------------------------------------------------------------------------------
@dataclass
class _Source:
    """What is exported and what checks it."""

    name: str  # the project's model the sub-network was extracted from
    spec: AnySpec
    depth_rule: str
    slim: SlimModel  # the extracted model: PyTorch fp32, the reference of every check of the file
    shipped: SlimModel  # what the folder holds: `slim`, its vocabulary trimmed when asked
    tokenizer: Any
    input_names: list[str]
    rows: TaskRows  # the task's rows, read once for the whole export
    probe: Probe
    vocab: VocabPlan | None
    extraction_diff: float
    # INT8 from the int8-aware stage's weights: the file's predictions are compared with the fp32 cell of `fp32_name`
    # (`reference`), and with its own weights computed as the file computes them (`emulated`, quantaware.py)
    fp32_name: str | None = None
    reference: SlimModel | None = None
    emulated: Any = None


def searched_spec(project: Project, label: str) -> ArchSpec:
    """The shape of the searched point `label` (search.json), or a one-line error listing the known ones."""
    from ..search import load_runs

    found = {p["label"]: p["searched"] for run in load_runs(project) for p in run.get("points", []) if "searched" in p}
    if label not in found:
        known = ", ".join(sorted(found)[:8]) or "none yet: run `dynastudio search` first"
        raise ConfigError(f"--searched {label}: no searched point has that label in {project.root} (known: {known})")
    try:
        return ArchSpec.from_json(found[label])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{project.root / 'search.json'}: point {label} has no valid shape: search again") from None


def _checked_request(project: Project, request: ExportRequest) -> tuple[str, str | None, AnySpec, Path]:
    """(format, target preset, sub-network, output folder), every setting checked before anything is loaded."""
    fmt, target = resolve_format(request.target)
    require_extra(fmt)
    spec = (
        searched_spec(project, request.searched)
        if request.searched
        else check_spec(SubnetSpec(request.width_mult, request.depth_mult))
    )
    if not 0 < request.min_agreement <= 1:
        raise ConfigError(f"min_agreement {request.min_agreement}: must be in (0, 1], e.g. 0.99")
    methods = INT8_METHODS_BY_FORMAT.get(fmt, INT8_METHODS)  # a format that quantizes nothing ignores it
    if request.int8_method not in methods:
        raise ConfigError(
            f"int8_method {request.int8_method!r}"
            + (f" is not one of {fmt}'s" if request.int8_method in INT8_METHODS else "")
            + f": choose one of {', '.join(methods)}"
        )
    out_dir = Path(request.out_dir).expanduser().resolve()
    _check_out_dir(out_dir, project.root, request.overwrite)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"{out_dir}: cannot create its folder ({exc.strerror or exc}): pick an --out you can write to"
        ) from None
    if not os.access(out_dir.parent, os.W_OK | os.X_OK):
        raise UserError(f"{out_dir}: {out_dir.parent} is not writable: pick an --out you can write to")
    _remove_stale_temps(out_dir)
    return fmt, target, spec, out_dir


def _resolve_model(
    project: Project, request: ExportRequest, fmt: str, target: str | None, spec: AnySpec, events, stop: StopToken
) -> _Source:
    """Load the project's model, extract the sub-network, check it against the dynamic model, plan the vocabulary."""
    from ..prepare import project_tokenizer

    t = project.config.train
    if isinstance(spec, SubnetSpec) and (spec.width_mult not in t.width_mults or spec.depth_mult not in t.depth_mults):
        events(
            LogMessage(
                f"{spec.label} is outside the trained grid (widths {list(t.width_mults)}, depths "
                f"{list(t.depth_mults)}): it was never trained and may be inaccurate",
                "warning",
            )
        )
    fp32_name = request.model_name or final_model_name(project)
    aware = (
        request.model_name is None
        and fmt in INT8_FORMATS
        and request.int8_method == INT8_EMULATION
        and project.has_int8_aware_model()
    )
    trained_for = project.int8_aware_trained_for()
    if request.model_name is None and fmt in INT8_FORMATS and trained_for and not aware:
        events(
            LogMessage(
                f"the int8-aware stage's weights were trained for {trained_for} INT8, not {request.int8_method}: "
                f"quantizing the {fp32_name} model instead (run the stage again to train for it)"
            )
        )
    name = STAGE_MODEL["int8-aware"] if aware else fp32_name
    model = project.load_model(name)
    slim = extract_from_model(model, spec, t.depth_rule)
    slim.config.source = {**slim.config.source, "model_name": name}
    _name_the_labels(slim, project)
    reference = emulated = None
    if aware:
        events(LogMessage(f"INT8 from the int8-aware stage's weights; checked against the fp32 {fp32_name} model"))
        reference = extract_from_model(project.load_model(fp32_name), spec, t.depth_rule)
        _name_the_labels(reference, project)
        emulated = int8_runner(model, spec, t.depth_rule)
    tokenizer = project_tokenizer(project)
    input_names = input_names_for(tokenizer, slim)
    trim_on = request.trim_vocab if request.trim_vocab is not None else bool(target and target in TRIM_BY_DEFAULT)
    rows = read_task_rows(project, tokenizer, texts=trim_on)
    probe = make_probe(rows, slim, tokenizer, input_names)
    stop.check()
    extraction_diff = check_extraction(model, slim, spec, t.depth_rule, probe, input_names, fmt)
    del model
    plan = _plan_vocab(rows, probe, tokenizer, slim, request.keep_words, events) if trim_on else None
    shipped = trim_model(slim, plan.trim) if plan else slim
    return _Source(
        name,
        spec,
        t.depth_rule,
        slim,
        shipped,
        tokenizer,
        input_names,
        rows,
        probe,
        plan,
        extraction_diff,
        fp32_name if aware else None,
        reference,
        emulated,
    )


def int8_runner(model, spec: AnySpec, depth_rule: str):
    """The sub-network of the (full, dynamic) `model` computed as its INT8 file computes it, fed as the files are.
    The INT8-rounded lookup tables are computed once, on the first call (the weights do not change while it runs)."""
    from ..dynamic import embeddings_output, encoder_of, forward_subnet
    from ..quantaware import int8_tables

    model.eval()
    emb = cast(nn.Module, encoder_of(model).embeddings)
    tables: dict = {}

    def run(f: dict):
        with torch.no_grad():
            if not tables:
                tables.update(int8_tables(emb))
            t = {k: torch.from_numpy(v) for k, v in f.items()}
            tt = t.get("token_type_ids")
            out = forward_subnet(
                model,
                t["input_ids"],
                t.get("attention_mask"),
                tt,
                spec=spec,
                depth_rule=depth_rule,
                embedded=embeddings_output(emb, t["input_ids"], tt, True, tables),
                int8=True,
            )
        return out.logits.float().numpy()

    return run


def _plan_vocab(rows: TaskRows, probe: Probe, tokenizer, slim: SlimModel, keep_words: str | None, events) -> VocabPlan:
    if rows.texts is None or probe.dev is None:
        raise UserError(
            f"vocabulary trimming needs the task's texts, which could not be read ({probe.source}): "
            "export without trimming, or fix the project's data"
        )
    words = read_word_list(keep_words) if keep_words else []
    events(
        LogMessage(
            "trimming the vocabulary to the tokens of the task's train and dev texts"
            + (f" and {len(words)} listed words" if words else "")
        )
    )
    return plan_vocab(tokenizer, slim.config.vocab_size, rows.texts, words)


def _calibration_feeds(project: Project, src: _Source, rows: int = CALIBRATION_ROWS) -> list[dict]:
    """Feeds of `rows` train rows drawn at random (seeded), one row each, unpadded, as a device sends them, for
    the formats whose activation ranges are calibrated (openvino-int8). Train rows only: dev reports the result.
    A trimmed vocabulary's model gets its own ids."""
    from ..data.batching import iterate_batches
    from ..prepare import prepare_inputs
    from .runners import feed

    sample = prepare_inputs(project).train.sample(rows, project.config.train.seed)
    out = [feed(b, src.input_names) for b in iterate_batches(sample, 1, shuffle=False, pad_id=0)]
    if src.vocab:
        unk = src.tokenizer.unk_token_id
        unk_new = int(src.vocab.trim.old_to_new[unk]) if unk is not None else 0
        out = [{**f, "input_ids": src.vocab.trim.remap_ids(f["input_ids"], unk_new)} for f in out]
    return out


def _int8_speed(int8: Path, fp32: Path, src: _Source, seq: int, stop: StopToken) -> dict:
    """What the INT8 file costs and saves in time: it and the fp32 ONNX file of the same model, timed side by side
    on this machine (onnxruntime, 1 thread, batch 1, `seq` tokens), in interleaved rounds."""
    from ..latency import cpu_name, latency_feed, time_runs
    from .runners import ort_session

    f = latency_feed(src.input_names, src.shipped.config.vocab_size, 1, seq)
    sessions = {"fp32": ort_session(fp32, threads=1), "int8": ort_session(int8, threads=1)}
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for round_ in range(SPEED_ROUNDS):
        for k, s in sessions.items():
            stop.check()
            times[k] += list(time_runs(s, f, SPEED_RUNS, 3 if round_ == 0 else 0))
    ms = {k: 1000 * float(np.median(v)) for k, v in times.items()}
    return {
        "fp32_ms": ms["fp32"],
        "int8_ms": ms["int8"],
        "speedup": ms["fp32"] / ms["int8"],
        "setup": f"onnxruntime, 1 thread, batch 1, {seq} tokens, median of {SPEED_ROUNDS} interleaved rounds of "
        f"{SPEED_RUNS} runs, {cpu_name()}",
    }


def _write_folder(
    fmt: str, src: _Source, tmp: Path, stop: StopToken, int8_method: str, calibration: list[dict] | None
) -> Path | None:
    """The tokenizer (trimmed with the model), the model in its format, and the shape and labels beside them.
    An onnxruntime INT8 format is quantized from an fp32 ONNX file written first into a hidden folder, kept for
    timing the two (returned; the caller removes it), else None."""
    # the tokenizer first: a trimmed one is loaded back from the folder, which must not hold the hf format's
    # config.json yet (its auto_map made transformers ask on the console whether to run the folder's code)
    if src.vocab:
        save_trimmed_tokenizer(src.tokenizer, src.vocab.trim, tmp)
    else:
        src.tokenizer.save_pretrained(str(tmp))
    fp32 = None
    if fmt in INT8_FORMATS:
        (tmp / ".fp32").mkdir()
        fp32 = write_format("onnx", src.shipped, tmp / ".fp32", src.input_names)
    write_format(fmt, src.shipped, tmp, src.input_names, fp32, int8_method, calibration)
    stop.check()
    if fmt != "hf":
        # the full shape; not as config.json: AutoTokenizer reads that and warns about the unknown model type
        atomic_write_text(tmp / CONFIG_FILE, src.shipped.config.to_json_string())
    if fmt.startswith("onnx"):
        # the ecosystem's layout (optimum, transformers.js...): config.json with the labels, base model type
        atomic_write_text(tmp / "config.json", json.dumps(onnx_folder_config(src.shipped, src.input_names), indent=2))
    return fp32


def _verify(
    project: Project,
    request: ExportRequest,
    fmt: str,
    target: str | None,
    src: _Source,
    tmp: Path,
    events,
    stop: StopToken,
    t0: float,
) -> dict:
    """The written folder checked against PyTorch; returns the verification record (verification.json)."""
    trim = src.vocab.trim if src.vocab else None
    check = check_format(fmt, tmp, src.slim, src.input_names, src.probe, src.spec.label, trim, src.tokenizer)
    events(StageProgress("export", 3, EXPORT_STEPS))
    dev, failure, emulation = None, None, None
    if check.deployed is not None and (fmt in AGREEMENT_FORMATS or src.vocab):
        if src.probe.dev is None:
            failure = f"the dev set was unavailable, so the {fmt} predictions could not be checked ({src.probe.source})"
        else:
            events(LogMessage(f"checking {fmt} predictions on the dev set"))
            ref = torch_runner(src.reference or src.slim, src.input_names)
            # as a device runs it: a dynamic INT8 file's output for a row depends on its batch (verify.dev_agreement)
            one_row = fmt in INT8_FORMATS and request.int8_method == "dynamic"
            rows = request.agreement_rows
            dev = dev_agreement(check.deployed, ref, src.probe, src.input_names, rows, stop, one_row)
            failure = agreement_failure(fmt, dev, request.min_agreement)
            if src.emulated is not None and request.int8_method == "per-token":  # the method the stage emulates
                events(LogMessage(f"checking the {fmt} file against its INT8 emulation in PyTorch"))
                emulation = dev_agreement(check.deployed, src.emulated, src.probe, src.input_names, rows, stop)
    check.deployed = None  # a compiled OpenVINO model holds memory the vocabulary check can use
    src.emulated = None
    vocabulary = None
    if src.vocab and src.rows.texts is not None:
        events(LogMessage("measuring the trimmed vocabulary on dev rows held out from it"))
        vocabulary = vocab_report(
            src.vocab,
            fmt,
            src.slim,
            src.tokenizer,
            src.input_names,
            src.probe,
            src.rows.texts,
            project.config.train.max_seq_length,
            tmp,
            stop,
        )
    events(StageProgress("export", 4, EXPORT_STEPS))
    record = _record(project, request, fmt, target, src, check, dev, failure, vocabulary, tmp, t0)
    if fmt in INT8_FORMATS:
        record["quantization"] = {
            "path": "int8-aware" if src.fp32_name else "post-training",
            "method": request.int8_method,
            "weights_from": src.name,
            "activations": ACTIVATIONS[request.int8_method],
            "weights": "INT8 per output channel, symmetric",
            "emulation": emulation,
        }
    if fmt == "openvino-int8" and request.int8_method == "static":
        record["quantization"] = {
            "path": "post-training",
            "method": "static",
            "weights_from": src.name,
            "activations": "INT8 with fixed ranges: NNCF post-training quantization (transformer preset), "
            f"calibrated on {CALIBRATION_ROWS} train rows at most (never dev), one at a time",
            "weights": "INT8 per output channel (NNCF)",
        }
    elif fmt == "openvino-int8":
        record["quantization"] = {
            "path": "post-training",
            "method": "per-token",
            "weights_from": src.name,
            "activations": f"8 bits with a range per {src.shipped.config.hidden_size} values of each token, computed "
            "on the fly by OpenVINO's CPU plugin (DYNAMIC_QUANTIZATION_GROUP_SIZE, stored in the IR)",
            "weights": "INT8 per output channel, asymmetric (NNCF weight compression)",
        }
    return record


def _record(
    project: Project,
    request: ExportRequest,
    fmt: str,
    target: str | None,
    src: _Source,
    check: FormatCheck,
    dev: dict | None,
    failure: str | None,
    vocabulary: dict | None,
    tmp: Path,
    t0: float,
) -> dict:
    """verification.json: what was exported, what it was checked with, and how each check went."""
    c = src.slim.config
    return {
        "format": fmt,
        "target": target,
        "model_file": MODEL_FILES[fmt],
        "inputs": src.input_names,
        "outputs": ["logits"],
        "subnet": {
            **_multipliers(src.spec, c),
            "depth_rule": src.depth_rule,
            "layers": len(c.heads_per_layer),
            "heads": c.heads_per_layer[0] if c.heads_per_layer else 0,
            "neurons": c.ffn_per_layer[0] if c.ffn_per_layer else 0,
            "kept_layers": c.source["kept_layers"],
            "params": sum(p.numel() for p in src.shipped.parameters()),
        },
        # the project's name, not its path: nothing exported records where it was made
        "source": {"project": project.config.name or project.root.name, "model": src.name},
        "reference": (
            f"PyTorch fp32 (the sub-network of the {src.fp32_name} model; the file's weights come from {src.name})"
            if src.fp32_name
            else "PyTorch fp32 (the extracted model)"
        ),
        "probe": {"source": src.probe.source, "shapes": check.shapes},
        "max_abs_diff": check.max_abs_diff,
        "tolerance": check.tolerance,
        "min_agreement": request.min_agreement if fmt in AGREEMENT_FORMATS or src.vocab else None,
        "runtime_verified": check.max_abs_diff is not None,
        "runtime": _runtime_name(fmt),
        "spec_check": check.spec_check,
        "passed": failure is None,
        "failure": failure,
        "extraction_max_abs_diff": src.extraction_diff,
        "dev": dev,
        "vocabulary": vocabulary,
        "size_mb": model_size(tmp, fmt) / 1e6,
        "files": file_sizes(tmp),
        "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _multipliers(spec: AnySpec, c) -> dict:
    """A grid cell's width and depth multipliers; a searched shape's label and counts, with its share of the full
    model's heads and layers in their place (what the report and the README print)."""
    if isinstance(spec, SubnetSpec):
        return {"width_mult": spec.width_mult, "depth_mult": spec.depth_mult}
    src = c.source or {}
    heads = src.get("full_heads") or max(c.heads_per_layer or [1])
    layers = src.get("full_layers") or len(spec.layers) or 1
    return {**shape_multipliers(spec.to_json(), heads, layers), "searched": spec.to_json(), "label": spec.label}


def _report(out_dir: Path, v: dict, events, t0: float) -> ExportReport:
    dev = v["dev"]
    report = ExportReport(
        path=str(out_dir),
        format=v["format"],
        target=v["target"],
        width_mult=v["subnet"]["width_mult"],
        depth_mult=v["subnet"]["depth_mult"],
        max_abs_diff=v["max_abs_diff"],
        agreement=dev["agreement"] if dev else None,
        passed=v["passed"],
        failure=v["failure"],
        dev_examples=dev["examples"] if dev else 0,
        size_mb=v["size_mb"],
        files=file_sizes(out_dir),
        verification=v,
    )
    if report.failure is not None:
        events(LogMessage(f"export failed its check: {report.failure}", "error"))
    events(ExportDone(str(out_dir), report.format, report.max_abs_diff, report.agreement, report.passed))
    events(StageEnded("export", time.perf_counter() - t0))
    return report


# ---- the output folder --------------------------------------------------------------------------
def _check_out_dir(out_dir: Path, project_root: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a folder: pick another --out")
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise UserError(f"{out_dir}: already exists: pass --overwrite to replace it, or pick another --out")
    root = project_root.resolve()
    if out_dir == root or out_dir in root.parents:
        raise UserError(f"{out_dir}: holds the project itself: pick another --out")
    if not (out_dir / VERIFICATION_FILE).is_file():
        # --overwrite replaces earlier exports only: a typo must not delete an unrelated folder
        raise UserError(
            f"{out_dir}: not an export folder (no {VERIFICATION_FILE}), so --overwrite will not delete it: "
            "pick another --out"
        )


def _remove_stale_temps(out_dir: Path, older_than_s: float = 3600) -> None:
    """Temporary folders an earlier export of `out_dir` left when it was killed (SIGKILL, power loss): an hour
    old at least, so an export still running elsewhere keeps its own."""
    now = time.time()
    for p in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):
        try:
            if p.is_dir() and now - p.stat().st_mtime > older_than_s:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    if out_dir.exists():
        trash = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
        os.replace(out_dir, trash / "old")
        os.replace(tmp, out_dir)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


# ---- what the record says about its making ------------------------------------------------------
def _name_the_labels(slim: SlimModel, project: Project) -> None:
    """A model that only knows LABEL_0, LABEL_1... gets the task's label names (as they appear in its data)."""
    try:
        names = project.task().label_names
    except (ProjectError, OSError):  # no task.json, or a broken one: the model keeps its own names
        return
    current = {int(k): v for k, v in (slim.config.id2label or {}).items()}
    if len(names) == len(current) > 1 and all(current[i] == f"LABEL_{i}" for i in range(len(names))):
        slim.config.id2label = {i: str(n) for i, n in enumerate(names)}
        slim.config.label2id = {str(n): i for i, n in enumerate(names)}


def _runtime_name(fmt: str) -> str:
    return {
        "openvino": "OpenVINO",
        "executorch": "ExecuTorch (XNNPACK)",
        "coreml": "Core ML (not on this machine)",
        "torchscript": "PyTorch (torch.jit)",
        "hf": "PyTorch (transformers)",
    }.get(fmt, "onnxruntime")


def _versions() -> dict:
    import onnxruntime
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
    }
