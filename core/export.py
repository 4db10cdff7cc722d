"""Export one sub-network to a device format (ONNX fp32/INT8/fp16, TorchScript, HF folder), then verify it against PyTorch."""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import platform
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .data import Encoded, compute_metric, iterate_batches
from .dynamic import SubnetSpec, forward_subnet
from .errors import ConfigError, InternalError, UserError
from .events import ExportDone, LogMessage, StageEnded, StageProgress, StageStarted, StopToken
from .extract import check_spec, extract_from_model
from .project import Project, atomic_write_text
from .requests import MIN_AGREEMENT, ExportReport, ExportRequest  # noqa: F401  (tests import them from here)
from .slim import SlimModel
from .targets import FORMATS, MODEL_FILES, PRESET_DESCRIPTIONS, PRESETS, resolve_format  # noqa: F401  (the GUI imports them from here too)

FP32_FORMATS = ("onnx", "torchscript", "hf")
FP32_TOLERANCE = 1e-4  # an fp32 export further than this from PyTorch is broken, not "slightly off"
EXTRACTION_TOLERANCE = 1e-4
# onnxruntime's fused SkipLayerNormalization CPU kernel is ~8x slower than the Add + LayerNormalization
# it replaces (onnxruntime 1.32, AMD EPYC, 1 thread: 0.20 vs 0.025 ms on 128 x 384): it cost 13% of
# MiniLM's latency, a constant that hides the width savings. Measurements and the READMEs turn it off.
ORT_DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]
VERIFICATION_FILE = "verification.json"
CONFIG_FILE = "dynabert_config.json"  # the sub-network's shape and labels, in the non-HF formats


# ---- what is exported: named tensors in, fp32 logits out ----------------------------------------
class _Logits(nn.Module):
    def __init__(self, slim: SlimModel):
        super().__init__()
        self.slim = slim

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # fp32 logits whatever the weights' dtype: consumers need not care about fp16
        return self.slim(input_ids, attention_mask, None, return_dict=False).float()


class _LogitsWithTypes(_Logits):
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        return self.slim(input_ids, attention_mask, token_type_ids, return_dict=False).float()


def input_names_for(tokenizer, slim: SlimModel) -> list[str]:
    """The model's inputs: the tokenizer's, so `session.run(None, dict(tokenizer(..., return_tensors="np")))` works."""
    names = list(getattr(tokenizer, "model_input_names", None) or ["input_ids", "token_type_ids", "attention_mask"])
    types = "token_type_ids" in names and slim.config.type_vocab_size > 0
    return ["input_ids", "attention_mask"] + (["token_type_ids"] if types else [])


def _logits_module(slim: SlimModel, input_names: list[str]) -> nn.Module:
    cls = _LogitsWithTypes if "token_type_ids" in input_names else _Logits
    return cls(slim).eval()


def _example_inputs(input_names: list[str], vocab: int, batch: int = 2, seq: int = 8) -> tuple:
    # batch and seq above 1: torch.export specialises dimensions of size 0/1
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    out = [ids, torch.ones_like(ids)]
    if "token_type_ids" in input_names:
        out.append(torch.zeros_like(ids))
    return tuple(out)


@contextlib.contextmanager
def _quiet_export():
    """The exporter and the quantizer talk a lot (torchvision notices, deprecations); keep the user's console clean."""
    names = ("torch.onnx", "torch.export", "torch._export", "torch.fx", "onnxscript", "root")
    loggers = [logging.getLogger(n if n != "root" else None) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def export_onnx(slim: SlimModel, path: Path, input_names: list[str], half: bool = False) -> Path:
    """Write `slim` as ONNX with dynamic batch and sequence axes (torch.export based exporter)."""
    module = _logits_module(copy.deepcopy(slim).half() if half else slim, input_names)
    args = _example_inputs(input_names, slim.config.vocab_size)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    dynamic = {name: {0: batch, 1: seq} for name in input_names}
    big = sum(p.numel() * p.element_size() for p in module.parameters()) > 1.8e9  # protobuf's 2 GB limit
    path = Path(path)
    with _quiet_export(), torch.no_grad():
        torch.onnx.export(
            module, args, str(path), input_names=input_names, output_names=["logits"],
            dynamic_shapes=dynamic, dynamo=True, external_data=big, verbose=False,
        )
    _scrub_onnx(path, big)
    return path


def _scrub_onnx(path: Path, external: bool) -> None:
    """Drop what the exporter records about the machine that made the file: every node's Python stack trace
    (with this machine's source paths) and doc strings. The graph itself is untouched."""
    import onnx

    m = onnx.load(str(path))
    graphs = [m.graph] + [f for f in m.functions]
    for g in graphs:
        for n in g.node:
            del n.metadata_props[:]
            n.doc_string = ""
    m.graph.doc_string = ""
    m.doc_string = ""
    del m.metadata_props[:]
    onnx.save(m, str(path), save_as_external_data=external, location=Path(path).name + ".data" if external else None)


def quantize_int8(src: Path, dst: Path) -> Path:
    """onnxruntime dynamic quantization: INT8 weights per output channel, activations quantized on the fly.

    Only the weight MatMuls are quantized. The word-embedding table is stored as fp16 instead of
    INT8: quantizing it per tensor flipped 0.8% of SST-2 dev predictions of a MiniLM (agreement 98.4%
    -> 99.2% with fp16), for 12 MB more; the per-channel weights did the rest (96.7% per tensor).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    big = Path(str(src) + ".data").exists()  # the exporter's external-data file for > 2 GB models
    with tempfile.TemporaryDirectory(dir=Path(dst).parent) as scratch:
        tmp = Path(scratch) / "int8.onnx"
        with _quiet_export():
            quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul"], use_external_data_format=big)
        _fp16_embedding_tables(tmp, Path(dst), big)
    return Path(dst)


def _fp16_embedding_tables(src: Path, dst: Path, external: bool, min_elements: int = 1_000_000) -> None:
    """Store large fp32 lookup tables (Gather data) as fp16, with a Cast back to fp32 after the lookup."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(src))
    inits = {i.name: i for i in m.graph.initializer}
    nodes = []
    for n in m.graph.node:
        nodes.append(n)
        t = inits.get(n.input[0]) if n.op_type == "Gather" and n.input else None
        if t is not None and t.data_type == TensorProto.FLOAT and int(np.prod(t.dims)) >= min_elements:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
            out = n.output[0]
            n.output[0] = out + "_fp16"
            nodes.append(helper.make_node("Cast", [out + "_fp16"], [out], to=TensorProto.FLOAT, name=n.name + "_to_fp32"))
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    onnx.save(m, str(dst), save_as_external_data=external, location=Path(dst).name + ".data" if external else None)


def export_torchscript(slim: SlimModel, path: Path, input_names: list[str]) -> Path:
    frozen = copy.deepcopy(slim)
    for p in frozen.parameters():
        p.requires_grad_(False)  # saved with the weights: callers get plain inference outputs
    module = _logits_module(frozen, input_names)
    args = _example_inputs(input_names, slim.config.vocab_size)
    with _quiet_export(), torch.no_grad():
        # torch.jit is deprecated in favour of torch.export, but it is what LibTorch (C++) loads today
        traced = torch.jit.trace(module, args, check_trace=False)
    traced.save(str(path))
    return Path(path)


def save_hf_folder(slim: SlimModel, folder: Path) -> None:
    """safetensors + config.json (with auto_map) + modeling_dynabert.py: loads without DynaBERT Studio."""
    model = copy.deepcopy(slim)
    model.config.return_dict = True  # HF-style outputs (.logits) for transformers users and pipelines
    model.config.auto_map = {
        "AutoConfig": "modeling_dynabert.DynaBertSlimConfig",
        "AutoModelForSequenceClassification": "modeling_dynabert.DynaBertSlimForSequenceClassification",
    }
    model.config.architectures = ["DynaBertSlimForSequenceClassification"]
    with _quiet_export():
        model.save_pretrained(str(folder), safe_serialization=True)
    shutil.copyfile(Path(__file__).with_name("slim.py"), Path(folder) / "modeling_dynabert.py")


def ort_session(path: Path, threads: int | None = None, providers: list[str] | None = None):
    """An onnxruntime session the way the studio measures and recommends it (sequential, SkipLayerNorm unfused)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    return ort.InferenceSession(
        str(path), so, providers=providers or ["CPUExecutionProvider"], disabled_optimizers=ORT_DISABLED_OPTIMIZERS
    )


# ---- running an exported model back ------------------------------------------------------------
Runner = Callable[[dict], np.ndarray]  # {input name: int64 array} -> logits


def _runner(fmt: str, folder: Path) -> Runner:
    path = folder / MODEL_FILES[fmt]
    if fmt.startswith("onnx"):
        sess = ort_session(path)
        names = [i.name for i in sess.get_inputs()]
        return lambda feed: sess.run(None, {k: feed[k] for k in names})[0].astype(np.float32)
    if fmt == "torchscript":
        with _quiet_export():
            module = torch.jit.load(str(path), map_location="cpu").eval()
        n_args = len(module.forward.schema.arguments) - 1  # minus self

        def run_ts(feed):
            order = ["input_ids", "attention_mask", "token_type_ids"][:n_args]
            with torch.no_grad():
                return module(*(torch.from_numpy(feed[k]) for k in order)).numpy()

        return run_ts
    if fmt == "hf":
        model = SlimModel.from_pretrained(str(folder)).eval()

        def run_hf(feed):
            with torch.no_grad():
                t = {k: torch.from_numpy(v) for k, v in feed.items()}
                return model(**t, return_dict=True).logits.float().numpy()

        return run_hf
    raise ConfigError(f"unknown format '{fmt}'")


def _torch_runner(slim: SlimModel, input_names: list[str]) -> Runner:
    module = _logits_module(slim, input_names)

    def run(feed):
        with torch.no_grad():
            return module(*(torch.from_numpy(feed[k]) for k in input_names)).numpy()

    return run


def _feed(batch: dict, input_names: list[str]) -> dict:
    out = {}
    for k in input_names:
        v = batch.get(k)
        if v is None:  # a tokenizer without token types: zeros, as the model assumes
            v = torch.zeros_like(batch["input_ids"])
        out[k] = v.numpy().astype(np.int64)
    return out


def _pad_more(feed: dict, extra: int, pad_id: int) -> dict:
    """The same rows with `extra` padded positions: a second (batch, sequence) shape to check the dynamic axes."""
    out = {}
    for k, v in feed.items():
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
        mask[0, seq // 2:] = 0
        ids[0, seq // 2:] = slim.config.pad_token_id or 0
        f = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        feeds.append({k: f[k] for k in input_names})
    return feeds


def _load_dev(project: Project) -> tuple[Encoded | None, str, str | None]:
    """(encoded dev set, source, metric) from the project's cached inputs; (None, why, None) when unavailable:
    export still works then, checked on synthetic inputs."""
    from .prepare import prepare_inputs

    try:
        inputs = prepare_inputs(project)
        return inputs.dev, "dev set", inputs.task.metric
    except UserError as exc:
        return None, f"synthetic (dev set unavailable: {str(exc)[:160]})", None


@dataclass
class _Probe:
    feeds: list[dict]  # two different (batch, sequence) shapes
    source: str
    dev: Encoded | None
    metric: str | None
    pad_id: int


def _make_probe(project: Project, slim: SlimModel, tokenizer, input_names: list[str]) -> _Probe:
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (slim.config.pad_token_id or 0)
    dev, source, metric = _load_dev(project)
    if dev is None or len(dev) == 0:
        why = source if dev is None else "synthetic (empty dev set)"
        return _Probe(_synthetic_probe(slim, tokenizer, input_names), why, None, None, pad_id)
    first = _feed(next(iterate_batches(dev, min(16, len(dev)), shuffle=False, pad_id=pad_id)), input_names)
    second = _pad_more({k: v[:3] for k, v in first.items()}, 5, pad_id)
    return _Probe([first, second], source, dev, metric, pad_id)


def _dev_agreement(run: Runner, ref: Runner, probe: _Probe, input_names: list[str], max_rows: int | None,
                   stop: StopToken) -> dict:
    """Prediction agreement and task metric of the exported model vs PyTorch on the (first max_rows of the) dev set."""
    dev = probe.dev
    enc = dev
    if max_rows is not None and len(dev) > max_rows:
        enc = Encoded(dev.input_ids[:max_rows], None if dev.token_type_ids is None else dev.token_type_ids[:max_rows],
                      dev.labels[:max_rows], dev.is_regression)
    outs, refs = [], []
    for batch in iterate_batches(enc, 32, shuffle=False, pad_id=probe.pad_id):
        stop.check()
        feed = _feed(batch, input_names)
        outs.append(run(feed))
        refs.append(ref(feed))
    a, b = np.concatenate(outs), np.concatenate(refs)
    labels = np.asarray(enc.labels)
    classify = a.shape[-1] > 1 and not enc.is_regression
    if classify:
        agreement = float((a.argmax(-1) == b.argmax(-1)).mean())
    else:  # regression: how closely the exported scores follow PyTorch's (Pearson r of the two)
        from scipy.stats import pearsonr

        x, y = a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64)
        agreement = float(pearsonr(x, y).statistic) if len(x) > 1 and x.std() > 0 and y.std() > 0 else float(np.allclose(x, y))
    out = {
        "examples": int(a.shape[0]),
        "agreement": agreement,
        "agreement_kind": "same predicted class" if classify else "Pearson r with the PyTorch scores",
        "max_abs_diff": float(np.abs(a - b).max()),
        "rows_capped_at": max_rows if enc is not dev else None,
        "metric": probe.metric,
    }
    if probe.metric:
        out["exported_score"] = compute_metric(probe.metric, a, labels)["score"]
        out["pytorch_score"] = compute_metric(probe.metric, b, labels)["score"]
    return out


# ---- the job ------------------------------------------------------------------------------------
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
        raise UserError(f"{out_dir}: not an export folder (no {VERIFICATION_FILE}), so --overwrite will not delete it: pick another --out")


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    if out_dir.exists():
        trash = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
        os.replace(out_dir, trash / "old")
        os.replace(tmp, out_dir)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


def _versions() -> dict:
    import onnxruntime
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}


EXPORT_STEPS = 5  # extract, write, verify, dev agreement, move into place


def export_job(project: Project, request: ExportRequest, events, stop: StopToken) -> ExportReport:
    """Extract a sub-network of the project and export it to `request.out_dir`, verified against PyTorch.

    The folder gets the model, the tokenizer files, the model's shape and labels (config.json in the
    hf format, dynabert_config.json in the others), a README.md on how to run it, and verification.json:
    the largest difference to PyTorch on dev inputs at two (batch, sequence) shapes, and for onnx-int8 /
    onnx-fp16 the prediction agreement on the dev set. Everything is written to a temporary sibling folder
    that is renamed at the end, so a stop or an error leaves nothing behind.

    Outcomes: a user's mistake (the folder exists, a bad multiplier) raises a UserError; an extraction or
    fp32 export that differs from PyTorch is a bug and raises InternalError; an INT8/fp16 export below
    `min_agreement` is written but returned (and saved) with passed=False.
    """
    from .prepare import project_tokenizer
    from .stages import final_model_name

    t0 = time.perf_counter()
    fmt, target = resolve_format(request.target)
    spec = check_spec(SubnetSpec(request.width_mult, request.depth_mult))
    if not 0 < request.min_agreement <= 1:
        raise ConfigError(f"min_agreement {request.min_agreement}: must be in (0, 1], e.g. 0.99")
    out_dir = Path(request.out_dir).expanduser().resolve()
    _check_out_dir(out_dir, project.root, request.overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    events(StageStarted("export", EXPORT_STEPS))

    t = project.config.train
    if spec.width_mult not in t.width_mults or spec.depth_mult not in t.depth_mults:
        events(LogMessage(f"{spec.label} is outside the trained grid (widths {list(t.width_mults)}, depths "
                          f"{list(t.depth_mults)}): it was never trained and may be inaccurate", "warning"))
    name = request.model_name or final_model_name(project)
    model = project.load_model(name)
    slim = extract_from_model(model, spec, t.depth_rule)
    slim.config.source = {**slim.config.source, "model_name": name}
    _name_the_labels(slim, project)
    tokenizer = project_tokenizer(project)
    input_names = input_names_for(tokenizer, slim)
    probe = _make_probe(project, slim, tokenizer, input_names)
    stop.check()

    # the extracted model must equal the dynamic one before anything is written
    extraction_diff = 0.0
    with torch.no_grad():
        for feed in probe.feeds:
            tt = feed.get("token_type_ids")
            dyn = forward_subnet(model, torch.from_numpy(feed["input_ids"]), torch.from_numpy(feed["attention_mask"]),
                                 None if tt is None else torch.from_numpy(tt), spec=spec, depth_rule=t.depth_rule).logits
            ext = torch.from_numpy(_torch_runner(slim, input_names)(feed))
            extraction_diff = max(extraction_diff, float((dyn - ext).abs().max()))
    del model
    if extraction_diff > EXTRACTION_TOLERANCE:
        raise InternalError(f"the extracted {spec.label} differs from the dynamic model by {extraction_diff:.2e}: "
                            f"this is a bug, please report it")
    events(StageProgress("export", 1, EXPORT_STEPS))

    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the export is meant to be shared
        events(LogMessage(f"exporting {spec.label} as {fmt} to {out_dir}"))
        write_format(fmt, slim, tmp, input_names)
        stop.check()
        tokenizer.save_pretrained(str(tmp))
        if fmt != "hf":
            # the full shape; not as config.json: AutoTokenizer reads that and warns about the unknown model type
            atomic_write_text(tmp / CONFIG_FILE, slim.config.to_json_string())
        if fmt.startswith("onnx"):
            # the ecosystem's layout (optimum, transformers.js...): config.json with the labels, base model type
            atomic_write_text(tmp / "config.json", json.dumps(onnx_folder_config(slim, input_names), indent=2))
        events(StageProgress("export", 2, EXPORT_STEPS))

        # verification: the exported file, read back, against PyTorch on the same inputs
        run, ref = _runner(fmt, tmp), _torch_runner(slim, input_names)
        diff, shapes = 0.0, []
        for feed in probe.feeds:
            diff = max(diff, float(np.abs(run(feed) - ref(feed)).max()))
            shapes.append(list(feed["input_ids"].shape))
        tolerance = FP32_TOLERANCE if fmt in FP32_FORMATS else None
        if tolerance is not None and diff > tolerance:
            raise InternalError(
                f"{fmt} export of {spec.label} differs from PyTorch by {diff:.2e} (> {tolerance:g}): nothing was "
                f"written; this is a bug, please report it with the model and the versions of torch/onnxruntime")
        events(StageProgress("export", 3, EXPORT_STEPS))
        dev, failure = None, None
        if fmt in ("onnx-int8", "onnx-fp16"):
            if probe.dev is None:
                failure = f"the dev set was unavailable, so the {fmt} predictions could not be checked ({probe.source})"
            else:
                events(LogMessage(f"checking {fmt} predictions on the dev set"))
                dev = _dev_agreement(run, ref, probe, input_names, request.agreement_rows, stop)
                if dev["agreement"] < request.min_agreement:
                    failure = (f"{fmt} agrees with PyTorch on {100 * dev['agreement']:.2f}% of {dev['examples']} dev examples "
                               f"({dev['agreement_kind']}), below the required {100 * request.min_agreement:g}%: "
                               f"use the fp32 ONNX export for this sub-network, or a larger sub-network")
        del run
        events(StageProgress("export", 4, EXPORT_STEPS))
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        model_bytes = sum(v for k, v in files.items() if k == MODEL_FILES[fmt] or k.startswith(MODEL_FILES[fmt] + "."))
        verification = {
            "format": fmt,
            "target": target,
            "model_file": MODEL_FILES[fmt],
            "inputs": input_names,
            "outputs": ["logits"],
            "subnet": {
                "width_mult": spec.width_mult, "depth_mult": spec.depth_mult, "depth_rule": t.depth_rule,
                "layers": len(slim.config.heads_per_layer), "heads": slim.config.heads_per_layer[0] if slim.config.heads_per_layer else 0,
                "neurons": slim.config.ffn_per_layer[0] if slim.config.ffn_per_layer else 0,
                "kept_layers": slim.config.source["kept_layers"], "params": sum(p.numel() for p in slim.parameters()),
            },
            # the project's name, not its path: nothing exported records where it was made
            "source": {"project": project.config.name or project.root.name, "model": name},
            "reference": "PyTorch fp32 (the extracted model)",
            "probe": {"source": probe.source, "shapes": shapes},
            "max_abs_diff": diff,
            "tolerance": tolerance,
            "min_agreement": request.min_agreement if fmt in ("onnx-int8", "onnx-fp16") else None,
            "passed": failure is None,
            "failure": failure,
            "extraction_max_abs_diff": extraction_diff,
            "dev": dev,
            "size_mb": model_bytes / 1e6,
            "files": files,
            "versions": _versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(time.perf_counter() - t0, 2),
        }
        atomic_write_text(tmp / VERIFICATION_FILE, json.dumps(verification, indent=2))
        atomic_write_text(tmp / "README.md", readme(verification, slim, out_dir.name))
        stop.check()
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    events(StageProgress("export", EXPORT_STEPS, EXPORT_STEPS))
    report = ExportReport(
        path=str(out_dir), format=fmt, target=target, width_mult=spec.width_mult, depth_mult=spec.depth_mult,
        max_abs_diff=diff, agreement=dev["agreement"] if dev else None, passed=failure is None, failure=failure,
        dev_examples=dev["examples"] if dev else 0,
        size_mb=model_bytes / 1e6, files={p.name: p.stat().st_size for p in sorted(out_dir.iterdir()) if p.is_file()},
        verification=verification,
    )
    if failure is not None:
        events(LogMessage(f"export failed its check: {failure}", "error"))
    events(ExportDone(str(out_dir), fmt, diff, report.agreement, report.passed))
    events(StageEnded("export", time.perf_counter() - t0))
    return report


def _name_the_labels(slim: SlimModel, project: Project) -> None:
    """A model that only knows LABEL_0, LABEL_1... gets the task's label names (as they appear in its data)."""
    try:
        names = json.loads((project.root / "task.json").read_text(encoding="utf-8")).get("labels") or []
    except (OSError, ValueError):
        return
    current = {int(k): v for k, v in (slim.config.id2label or {}).items()}
    if len(names) == len(current) > 1 and all(current[i] == f"LABEL_{i}" for i in range(len(names))):
        slim.config.id2label = {i: str(n) for i, n in enumerate(names)}
        slim.config.label2id = {str(n): i for i, n in enumerate(names)}


def onnx_folder_config(slim: SlimModel, input_names: list[str]) -> dict:
    """config.json of an ONNX folder: the base model type and the labels, as tools that load ONNX folders
    expect, plus the sub-network's true shape (its heads keep their width, so hidden_size / heads is not
    the head size here: `attention_head_size` is)."""
    c = slim.config
    src = c.source or {}
    layers = len(c.heads_per_layer or [])
    id2label = {int(k): v for k, v in (c.id2label or {}).items()}
    return {
        "model_type": src.get("model_type") or ("roberta" if c.head_kind == "roberta" else "bert"),
        "id2label": {str(k): v for k, v in sorted(id2label.items())},
        "label2id": {v: k for k, v in sorted(id2label.items())},
        "num_labels": len(id2label),
        "problem_type": getattr(c, "problem_type", None),
        "vocab_size": c.vocab_size, "hidden_size": c.hidden_size, "num_hidden_layers": layers,
        "num_attention_heads": (c.heads_per_layer or [0])[0] if layers else 0,
        "attention_head_size": c.head_dim, "intermediate_size": (c.ffn_per_layer or [0])[0] if layers else 0,
        "max_position_embeddings": c.max_position_embeddings, "type_vocab_size": c.type_vocab_size,
        "pad_token_id": c.pad_token_id, "layer_norm_eps": c.layer_norm_eps, "hidden_act": c.hidden_act,
        "onnx": {"inputs": list(input_names), "outputs": ["logits"]},
        "dynabert": {"width_mult": src.get("width_mult"), "depth_mult": src.get("depth_mult"),
                     "kept_layers": src.get("kept_layers"), "heads_per_layer": c.heads_per_layer,
                     "ffn_per_layer": c.ffn_per_layer},
    }


def write_format(fmt: str, slim: SlimModel, folder: Path, input_names: list[str], fp32_onnx: Path | None = None) -> Path:
    """Write `slim` into `folder` in one format; returns the model file. Export and latency both use this.

    `fp32_onnx`: an fp32 ONNX file of the same model already written, which onnx-int8 then quantizes
    instead of exporting the model again.
    """
    if fmt == "onnx":
        export_onnx(slim, folder / MODEL_FILES[fmt], input_names)
    elif fmt == "onnx-fp16":
        export_onnx(slim, folder / MODEL_FILES[fmt], input_names, half=True)
    elif fmt == "onnx-int8":
        if fp32_onnx is not None:
            quantize_int8(fp32_onnx, folder / MODEL_FILES[fmt])
        else:
            with tempfile.TemporaryDirectory(dir=folder) as scratch:
                fp32 = export_onnx(slim, Path(scratch) / "model.onnx", input_names)
                quantize_int8(fp32, folder / MODEL_FILES[fmt])
    elif fmt == "torchscript":
        export_torchscript(slim, folder / MODEL_FILES[fmt], input_names)
    elif fmt == "hf":
        save_hf_folder(slim, folder)
    else:  # resolve_format guards this
        raise ConfigError(f"unknown format '{fmt}'")
    return folder / MODEL_FILES[fmt]


# ---- README -------------------------------------------------------------------------------------
def readme(v: dict, slim: SlimModel, folder_name: str) -> str:
    s = v["subnet"]
    fmt = v["format"]
    labels = ", ".join(f"{k}: {n}" for k, n in sorted((slim.config.id2label or {}).items()))
    feed_keys = ", ".join(f'"{k}"' for k in v["inputs"])
    lines = [
        f"# DynaBERT sub-network w{s['width_mult']:g} d{s['depth_mult']:g} ({fmt})",
        "",
    ]
    if not v.get("passed", True):
        lines += [f"**This export FAILED its check and should not be deployed:** {v.get('failure')}", ""]
    lines += [
        f"{FORMATS[fmt]}.",
        "",
        f"- Shape: {s['layers']} layers (kept {s['kept_layers']} of the original, rule `{s['depth_rule']}`), "
        f"{s['heads']} attention heads and {s['neurons']} FFN neurons per layer, hidden size {slim.config.hidden_size}; "
        f"{s['params']:,} parameters.",
        f"- Model file: `{v['model_file']}` ({v['size_mb']:.1f} MB). The tokenizer files and "
        f"`{'config.json' if fmt == 'hf' else CONFIG_FILE}` (shape, labels) are beside it.",
        f"- Inputs: {', '.join(v['inputs'])} (int64, shape batch x sequence); output: `logits` (float32, batch x {slim.config.num_labels}).",
        f"- Labels: {labels or 'regression (one score)'}.",
        f"- Verified against PyTorch: max abs difference {v['max_abs_diff']:.2e} on {v['probe']['source']} inputs "
        f"of shapes {v['probe']['shapes']}"
        + (f"; dev-set prediction agreement {100 * v['dev']['agreement']:.2f}% over {v['dev']['examples']} examples"
           if v.get("dev") and v["dev"].get("agreement") is not None else "")
        + (f" ({v['dev']['metric']}: {v['dev']['exported_score']:.4f} exported, {v['dev']['pytorch_score']:.4f} PyTorch)"
           if v.get("dev") and v["dev"].get("exported_score") is not None else "")
        + " (see `verification.json`).",
        "",
        "## Run it",
        "",
    ]
    if fmt.startswith("onnx"):
        lines += [
            "```bash",
            "pip install onnxruntime transformers" + ("  # onnxruntime-gpu on a GPU server" if fmt == "onnx-fp16" else ""),
            "```",
            "",
            "```python",
            "import onnxruntime as ort",
            "from transformers import AutoTokenizer",
            "",
            f'folder = "{folder_name}"  # this folder',
            "tokenizer = AutoTokenizer.from_pretrained(folder)",
            "options = ort.SessionOptions()",
            "# onnxruntime's fused SkipLayerNormalization is much slower than the unfused ops on many CPUs",
            f'session = ort.InferenceSession(f"{{folder}}/{v["model_file"]}", options,',
            '                                providers=["CPUExecutionProvider"],'
            + ("  # or CUDAExecutionProvider" if fmt == "onnx-fp16" else ""),
            f"                                disabled_optimizers={ORT_DISABLED_OPTIMIZERS!r})",
            'enc = tokenizer(["a great movie", "a dull plot"], padding=True, truncation=True, return_tensors="np")',
            f"logits = session.run(None, {{k: enc[k] for k in ({feed_keys},)}})[0]",
            "print(logits.argmax(-1))",
            "```",
        ]
        if fmt == "onnx-fp16":
            lines += ["", "Weights and activations are fp16, the `logits` output is cast to float32. fp16 is meant "
                      "for GPUs; it runs on a CPU too, but slower than fp32."]
        if fmt == "onnx-int8":
            lines += ["", "The weight matrices are INT8 (onnxruntime dynamic quantization, one scale per output channel); "
                      "activations are quantized on the fly; the word-embedding table is fp16. "
                      "Fast on x86 CPUs with AVX2/AVX-512 VNNI and on ARM64."]
    elif fmt == "torchscript":
        args = ", ".join(v["inputs"])
        lines += [
            "Python (needs only torch, plus a tokenizer):",
            "",
            "```python",
            "import torch",
            "from transformers import AutoTokenizer",
            "",
            f'folder = "{folder_name}"  # this folder',
            "tokenizer = AutoTokenizer.from_pretrained(folder)",
            f'model = torch.jit.load(f"{{folder}}/{v["model_file"]}").eval()',
            'enc = tokenizer(["a great movie", "a dull plot"], padding=True, return_tensors="pt")',
            "with torch.no_grad():",
            f"    logits = model({', '.join(f'enc[{k!r}]' for k in v['inputs'])})",
            "print(logits.argmax(-1))",
            "```",
            "",
            "C++ (LibTorch):",
            "",
            "```cpp",
            "#include <torch/script.h>",
            f'auto module = torch::jit::load("{v["model_file"]}");',
            f"// {args}: int64 tensors of shape {{batch, sequence}} from the tokenizer (tokenizer.json)",
            f"auto logits = module.forward({{{args}}}).toTensor();",
            "```",
            "",
            "The model was traced with torch.jit.trace (checked at two different batch/sequence shapes).",
        ]
    else:  # hf
        lines += [
            "Needs torch and transformers (5.x) only, not DynaBERT Studio. The model class ships in this folder "
            "(`modeling_dynabert.py`, a copy of DynaBERT Studio's `core/slim.py`), hence `trust_remote_code=True` "
            "for the model and the tokenizer (the tokenizer reads config.json too):",
            "",
            "```python",
            "import torch",
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
            "",
            f'folder = "{folder_name}"  # this folder',
            "tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)",
            "model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()",
            'enc = tokenizer(["a great movie", "a dull plot"], padding=True, return_tensors="pt")',
            "with torch.no_grad():",
            "    logits = model(**enc).logits",
            "print(logits.argmax(-1))",
            "```",
            "",
            "Or as a pipeline:",
            "",
            "```python",
            "from transformers import pipeline",
            "",
            f'classify = pipeline("text-classification", model="{folder_name}", trust_remote_code=True)',
            'print(classify(["a great movie", "a dull plot"]))',
            "```",
        ]
    lines += ["", f"Made by DynaBERT Studio from `{v['source']['project']}` (model `{v['source']['model']}`)."]
    return "\n".join(lines) + "\n"
