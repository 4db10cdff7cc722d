"""Export one sub-network to a device format (ONNX fp32/INT8/fp16, TorchScript, HF folder), then verify it against PyTorch."""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import platform
import shutil
import sys
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
from .errors import ConfigError, InternalError, UserError, disk_full
from .events import ExportDone, LogMessage, StageEnded, StageProgress, StageStarted, StopToken
from .extract import check_spec, extract_from_model
from .project import Project, atomic_write_text
from .requests import MIN_AGREEMENT, ExportReport, ExportRequest  # noqa: F401  (tests import them from here)
from .slim import SlimModel
from .vocab import VocabTrim, plan_trim, read_word_list, save_trimmed_tokenizer, trim_model
from .targets import TRIM_BY_DEFAULT, require_extra, FORMATS, MODEL_FILES, PRESET_DESCRIPTIONS, PRESETS, resolve_format  # noqa: F401  (the GUI imports them from here too)

FP32_FORMATS = ("onnx", "ort", "torchscript", "hf", "executorch", "openvino")  # within FP32_TOLERANCE of PyTorch
# formats whose predictions are checked on the dev set (reduced precision; OpenVINO's default CPU precision is
# bf16 on CPUs that have it, so its deployed predictions are checked besides its strict fp32 run)
AGREEMENT_FORMATS = ("onnx-int8", "onnx-fp16", "ort-int8", "openvino")
UNVERIFIABLE_FORMATS = ("coreml",)  # no runtime on Linux: the package's spec is checked instead
FP32_TOLERANCE = 1e-4  # an fp32 export further than this from PyTorch is broken, not "slightly off"
EXTRACTION_TOLERANCE = 1e-4
# onnxruntime's fused SkipLayerNormalization CPU kernel is ~8x slower than the Add + LayerNormalization
# it replaces (onnxruntime 1.32, AMD EPYC, 1 thread: 0.20 vs 0.025 ms on 128 x 384): it cost 13% of
# MiniLM's latency, a constant that hides the width savings. Measurements and the READMEs turn it off.
ORT_DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]
RARE_GROUP = 32  # values per scale and offset in the 4-bit rows of rare tokens
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
    """Drop what the exporter records about the machine that made the file (every node's Python stack trace,
    with this machine's source paths, and doc strings) and the intermediate shape annotations. The graph
    itself is untouched.

    Why the shapes go: onnxruntime fuses Add + LayerNormalization into SkipLayerNormalization only when it
    can prove both inputs have the same shape, which the exporter's `value_info` tells it; that fused CPU
    kernel is slower than the two ops it replaces (see ORT_DISABLED_OPTIMIZERS), and under a default
    session it made the exported graphs 1.09x-1.28x slower than a TorchScript-exported HF graph of the same
    shape. `value_info` is optional in ONNX (runtimes infer what they need), and without it a default
    session runs the graph unfused: `bench/onnx_default_session.py` measures it.
    """
    import onnx

    m = onnx.load(str(path))
    del m.graph.value_info[:]
    graphs = [m.graph] + [f for f in m.functions]
    for g in graphs:
        for n in g.node:
            del n.metadata_props[:]
            n.doc_string = ""
    m.graph.doc_string = ""
    m.doc_string = ""
    del m.metadata_props[:]
    onnx.save(m, str(path), save_as_external_data=external, location=Path(path).name + ".data" if external else None)


def quantize_int8(src: Path, dst: Path, tables: str = "int8", rare_from: int | None = None) -> Path:
    """onnxruntime dynamic quantization: INT8 weights per output channel, activations quantized on the fly.

    Only the weight MatMuls go through onnxruntime's quantizer. The lookup tables (word and position
    embeddings) are stored by `_compact_lookup_tables`: one INT8 value per entry with one scale per row
    (`tables="int8"`, the default), or as fp16 (`tables="fp16"`). onnxruntime's own Gather quantization
    uses one scale for the whole table, which flipped 0.8% of SST-2 dev predictions of a MiniLM; a scale
    per row (per token) keeps each row's own range.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    big = Path(str(src) + ".data").exists()  # the exporter's external-data file for > 2 GB models
    with tempfile.TemporaryDirectory(dir=Path(dst).parent) as scratch:
        tmp = Path(scratch) / "int8.onnx"
        with _quiet_export():
            quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul"], use_external_data_format=big)
        _compact_lookup_tables(tmp, Path(dst), big, tables, rare_from=rare_from)
    return Path(dst)


def _compact_lookup_tables(src: Path, dst: Path, external: bool, tables: str = "int8", min_elements: int = 65536,
                           rare_from: int | None = None) -> None:
    """Store large fp32 lookup tables (a Gather's data) compactly and turn the looked-up rows back into fp32.

    "int8": the table as INT8 with one scale per row (symmetric: scale = max |row| / 127); the graph
    gathers the INT8 rows and their scales and multiplies. "fp16": the table as fp16, cast after the lookup.
    `rare_from` (int8 only; a trimmed vocabulary): the word-embedding rows from this id on are the rare
    tokens', stored at 4 bits with a scale and an offset per group of 32 values (see core/vocab.py).
    """
    import onnx
    from onnx import TensorProto, numpy_helper

    if tables not in ("int8", "fp16"):
        raise ConfigError(f"lookup tables: 'int8' or 'fp16', not {tables!r}")
    m = onnx.load(str(src))
    g = _GraphBuilder(m.graph)
    inits = {i.name: i for i in m.graph.initializer}
    nodes, mixed_done = [], False
    for n in m.graph.node:
        t = inits.get(n.input[0]) if n.op_type == "Gather" and n.input else None
        if t is None or t.data_type != TensorProto.FLOAT or len(t.dims) != 2 or int(np.prod(t.dims)) < min_elements:
            nodes.append(n)
            continue
        table = numpy_helper.to_array(t).astype(np.float32)
        ids, out = n.input[1], n.output[0]
        m.graph.initializer.remove(t)
        if tables == "fp16":
            nodes += g.lookup_fp16(table, t.name, ids, out)
        elif rare_from is not None and "word_embeddings" in t.name and 0 < rare_from < table.shape[0]:
            nodes += g.lookup_mixed(table, t.name, ids, out, rare_from)
            mixed_done = True
        else:
            nodes += g.lookup_int8(table, t.name, ids, out)
    if rare_from is not None and tables == "int8" and not mixed_done and rare_from < _word_rows(m):
        raise InternalError("the INT8 export found no word-embedding table to store the rare rows of: please report it")
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    del m.graph.value_info[:]  # as _scrub_onnx: the quantizer's shape annotations would let SkipLayerNorm fuse
    onnx.save(m, str(dst), save_as_external_data=external, location=Path(dst).name + ".data" if external else None)


def _word_rows(m) -> int:
    from onnx import numpy_helper

    for i in m.graph.initializer:
        if "word_embeddings" in i.name:
            return int(numpy_helper.to_array(i).shape[0])
    return 0


class _GraphBuilder:
    """Nodes and initializers for the compact lookups (unique names under the table's name)."""

    def __init__(self, graph):
        self.graph = graph

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    @staticmethod
    def node(op: str, inputs: list[str], output: str, **attrs):
        from onnx import helper

        return helper.make_node(op, inputs, [output], name=output + "_" + op, **attrs)

    def lookup_fp16(self, table: np.ndarray, name: str, ids: str, out: str) -> list:
        from onnx import TensorProto

        self.const(name, table.astype(np.float16))
        return [self.node("Gather", [name, ids], out + "_fp16", axis=0),
                self.node("Cast", [out + "_fp16"], out, to=TensorProto.FLOAT)]

    def _int8_rows(self, table: np.ndarray, name: str, ids: str, out: str) -> list:
        from onnx import TensorProto

        scale = np.abs(table).max(axis=1, keepdims=True) / 127.0
        scale[scale == 0] = 1.0
        self.const(name, np.clip(np.rint(table / scale), -127, 127).astype(np.int8))
        self.const(name + "_row_scale", scale.astype(np.float16))
        return [
            self.node("Gather", [name, ids], out + "_q", axis=0),
            self.node("Cast", [out + "_q"], out + "_qf", to=TensorProto.FLOAT),
            self.node("Gather", [name + "_row_scale", ids], out + "_s16", axis=0),
            self.node("Cast", [out + "_s16"], out + "_s", to=TensorProto.FLOAT),
            self.node("Mul", [out + "_qf", out + "_s"], out),
        ]

    def lookup_int8(self, table: np.ndarray, name: str, ids: str, out: str) -> list:
        return self._int8_rows(table, name, ids, out)

    def lookup_mixed(self, table: np.ndarray, name: str, ids: str, out: str, rare_from: int) -> list:
        """Rows below `rare_from` at 8 bits, the others at 4 bits (two per byte, an fp16 scale and offset per
        group of 32 values); each id takes its row from the table it falls in."""
        from onnx import TensorProto

        rows, hidden = table.shape
        group = RARE_GROUP if hidden % RARE_GROUP == 0 else hidden
        if hidden % 2:
            return self._int8_rows(table, name, ids, out)
        c = lambda suffix, v: self.const(f"{name}_{suffix}", v)  # noqa: E731
        n8 = c("rare_from", np.array(rare_from, dtype=np.int64))
        last8 = c("last_frequent", np.array(rare_from - 1, dtype=np.int64))
        zero = c("zero", np.array(0, dtype=np.int64))
        sixteen = c("sixteen", np.array(16, dtype=np.int32))
        minus1 = c("minus1", np.array([-1], dtype=np.int64))
        groups = c("groups", np.array([hidden // group, group], dtype=np.int64))
        width = c("hidden", np.array([hidden], dtype=np.int64))

        rare = table[rare_from:].reshape(rows - rare_from, hidden // group, group)
        lo, hi = rare.min(-1, keepdims=True), rare.max(-1, keepdims=True)
        scale = (hi - lo) / 15.0
        scale[scale == 0] = 1.0
        q = np.clip(np.rint((rare - lo) / scale), 0, 15).astype(np.uint8).reshape(rows - rare_from, hidden)
        c("q4", (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8))
        c("q4_scale", scale.astype(np.float16))
        c("q4_offset", lo.astype(np.float16))
        n = self.node
        i4 = f"{name}_i4"
        nodes = self._int8_rows(table[:rare_from], name, out + "_i8", out + "_r8")
        nodes[:0] = [n("Min", [ids, last8], out + "_i8"), n("Sub", [ids, n8], out + "_i4raw"),
                     n("Max", [out + "_i4raw", zero], i4)]
        nodes += [
            n("Gather", [f"{name}_q4", i4], out + "_p", axis=0),  # (..., hidden/2) bytes
            n("Cast", [out + "_p"], out + "_pi", to=TensorProto.INT32),
            n("Mod", [out + "_pi", sixteen], out + "_lo"),
            n("Div", [out + "_pi", sixteen], out + "_hi"),
            n("Unsqueeze", [out + "_lo", minus1], out + "_lo1"),
            n("Unsqueeze", [out + "_hi", minus1], out + "_hi1"),
            n("Concat", [out + "_lo1", out + "_hi1"], out + "_pairs", axis=-1),  # (..., hidden/2, 2): in order
            n("Shape", [ids], out + "_ids_shape"),
            n("Concat", [out + "_ids_shape", groups], out + "_gshape", axis=0),
            n("Reshape", [out + "_pairs", out + "_gshape"], out + "_g"),  # (..., groups, 32)
            n("Cast", [out + "_g"], out + "_gf", to=TensorProto.FLOAT),
            n("Gather", [f"{name}_q4_scale", i4], out + "_gs16", axis=0),
            n("Cast", [out + "_gs16"], out + "_gs", to=TensorProto.FLOAT),
            n("Gather", [f"{name}_q4_offset", i4], out + "_go16", axis=0),
            n("Cast", [out + "_go16"], out + "_go", to=TensorProto.FLOAT),
            n("Mul", [out + "_gf", out + "_gs"], out + "_gm"),
            n("Add", [out + "_gm", out + "_go"], out + "_ga"),
            n("Concat", [out + "_ids_shape", width], out + "_hshape", axis=0),
            n("Reshape", [out + "_ga", out + "_hshape"], out + "_r4"),
            n("Less", [ids, n8], out + "_frequent"),
            n("Unsqueeze", [out + "_frequent", minus1], out + "_frequent1"),
            n("Where", [out + "_frequent1", out + "_r8", out + "_r4"], out),
        ]
        return nodes


def to_ort(src: Path, dst: Path) -> Path:
    """ONNX -> ONNX Runtime's .ort format (what onnxruntime-android and onnxruntime-objc load), with the
    basic, hardware-independent graph optimizations applied (constant folding, redundant nodes removed),
    as onnxruntime's own converter does; the hardware-specific fusions stay for the device's runtime."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(dst)
    so.add_session_config_entry("session.save_model_format", "ORT")
    so.log_severity_level = 3
    ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
    return Path(dst)


def to_openvino(src: Path, dst: Path) -> Path:
    """ONNX -> OpenVINO IR (xml + bin), weights kept in fp32: OpenVINO's CPU plugin picks its own inference
    precision (bf16 on CPUs with AVX512-BF16 or AMX, else fp32)."""
    ov = import_openvino()
    ov.save_model(ov.Core().read_model(str(src)), str(dst), compress_to_fp16=False)
    return Path(dst)


def import_openvino():
    """`import openvino` without OpenVINO's usage telemetry. Importing openvino sends an event (and its
    converter more) unless the user has opted out in ~/intel; the studio's exports and measurements send
    nothing: with `openvino_telemetry` unimportable in this process, OpenVINO uses its own no-op stub.
    The user's own consent file is left as it is."""
    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)  # an ImportError for `import openvino_telemetry`
    import openvino

    return openvino


@contextlib.contextmanager
def _quiet_import():
    """Optional packages (executorch, coremltools) warn about deprecations of their own at import."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _dynamic_export(module: nn.Module, input_names: list[str], vocab: int):
    """torch.export of the logits module with dynamic batch (<= 64) and sequence (<= 512) axes."""
    args = _example_inputs(input_names, vocab)
    batch, seq = torch.export.Dim("batch", max=64), torch.export.Dim("sequence", max=512)
    return torch.export.export(module, args, dynamic_shapes={n: {0: batch, 1: seq} for n in input_names})


def export_executorch(slim: SlimModel, path: Path, input_names: list[str]) -> Path:
    """An ExecuTorch program lowered to the XNNPACK delegate (fp32; batch up to 64, sequence up to 512)."""
    with _quiet_import():
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

    with _quiet_export(), torch.no_grad():
        program = _dynamic_export(_logits_module(slim, input_names).eval(), input_names, slim.config.vocab_size)
        et = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
    Path(path).write_bytes(et.buffer)
    return Path(path)


def export_coreml(slim: SlimModel, path: Path, input_names: list[str]) -> Path:
    """A Core ML ML program (iOS 16+, fp16 compute as Core ML does by default), int32 inputs of up to 64 x 512."""
    with _quiet_import():
        import coremltools as ct

    with _quiet_export(), torch.no_grad():
        program = _dynamic_export(_logits_module(slim, input_names).eval(), input_names, slim.config.vocab_size)
        program = program.run_decompositions({})
        shape = (ct.RangeDim(1, 64), ct.RangeDim(2, 512))
        ml = ct.convert(program, inputs=[ct.TensorType(name=n, shape=shape, dtype=np.int32) for n in input_names],
                        outputs=[ct.TensorType(name="logits")], minimum_deployment_target=ct.target.iOS16)
    ml.short_description = "DynaBERT sub-network: sequence classification logits"
    ml.save(str(path))
    return Path(path)


def check_coreml_spec(path: Path, input_names: list[str], num_labels: int) -> dict:
    """Read the saved package's spec back: the inputs, the output and their shapes as a device would see them."""
    import coremltools as ct

    spec = ct.utils.load_spec(str(path))
    ins = {}
    for i in spec.description.input:
        a = i.type.multiArrayType
        ranges = [(r.lowerBound, r.upperBound) for r in a.shapeRange.sizeRanges]
        ins[i.name] = {"dtype": ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(a.dataType), "ranges": ranges}
    outs = [o.name for o in spec.description.output]
    problems = []
    if list(ins) != list(input_names):
        problems.append(f"inputs are {list(ins)}, expected {input_names}")
    for name, d in ins.items():
        if len(d["ranges"]) != 2 or d["ranges"][0][1] < 1 or d["ranges"][1][1] < 128:
            problems.append(f"input {name} has shape ranges {d['ranges']}, expected batch x sequence up to 64 x 512")
        if d["dtype"] != "INT32":
            problems.append(f"input {name} is {d['dtype']}, expected INT32")
    if outs != ["logits"]:
        problems.append(f"outputs are {outs}, expected ['logits']")
    return {"inputs": ins, "outputs": outs, "spec_version": spec.specificationVersion, "problems": problems,
            "num_labels": num_labels}


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


def _runner(fmt: str, folder: Path, strict: bool = False) -> Runner | None:
    """Run the exported file back (None where no runtime runs on this machine). `strict`: OpenVINO in fp32
    (its default on a CPU with bf16 is bf16), for the check that the conversion itself is exact."""
    path = folder / MODEL_FILES[fmt]
    if fmt in UNVERIFIABLE_FORMATS:
        return None
    if fmt == "openvino":
        ov = import_openvino()
        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"} if strict else {})
        names = [i.any_name for i in compiled.inputs]
        return lambda feed: np.asarray(compiled({k: feed[k] for k in names})[0], dtype=np.float32)
    if fmt == "executorch":
        with _quiet_import():
            from executorch.runtime import Runtime

        method = Runtime.get().load_program(str(path)).load_method("forward")
        n_args = method.metadata.num_inputs()
        order = ["input_ids", "attention_mask", "token_type_ids"][:n_args]
        return lambda feed: method.execute([torch.from_numpy(np.ascontiguousarray(feed[k])) for k in order])[0].numpy()
    if fmt.startswith("onnx") or fmt.startswith("ort"):
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


def _tree_size(p: Path) -> int:
    return sum(q.stat().st_size for q in p.rglob("*") if q.is_file()) if p.is_dir() else p.stat().st_size


def _file_sizes(folder: Path) -> dict:
    """Each entry's size in bytes (a folder such as a .mlpackage: everything in it)."""
    return {p.name: _tree_size(p) for p in sorted(folder.iterdir())}


def model_size(folder: Path, fmt: str) -> int:
    """Bytes of the model itself: its file with the files that belong to it (ONNX external data, OpenVINO's .bin)."""
    main = Path(folder) / MODEL_FILES[fmt]
    parts = [main, Path(str(main) + ".data")]
    if fmt == "openvino":
        parts.append(main.with_suffix(".bin"))
    return sum(_tree_size(p) for p in parts if p.exists())


def _runtime_name(fmt: str) -> str:
    return {"openvino": "OpenVINO", "executorch": "ExecuTorch (XNNPACK)", "coreml": "Core ML (not on this machine)",
            "torchscript": "PyTorch (torch.jit)", "hf": "PyTorch (transformers)"}.get(fmt, "onnxruntime")


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
    require_extra(fmt)
    spec = check_spec(SubnetSpec(request.width_mult, request.depth_mult))
    if not 0 < request.min_agreement <= 1:
        raise ConfigError(f"min_agreement {request.min_agreement}: must be in (0, 1], e.g. 0.99")
    out_dir = Path(request.out_dir).expanduser().resolve()
    _check_out_dir(out_dir, project.root, request.overwrite)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out_dir}: cannot create its folder ({exc.strerror or exc}): pick an --out you can write to") from None
    if not os.access(out_dir.parent, os.W_OK | os.X_OK):
        raise UserError(f"{out_dir}: {out_dir.parent} is not writable: pick an --out you can write to")
    _remove_stale_temps(out_dir)
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
    trim_on = request.trim_vocab if request.trim_vocab is not None else bool(target and target in TRIM_BY_DEFAULT)
    vocab_plan = _plan_vocab(project, tokenizer, slim, probe, request.keep_words, events) if trim_on else None
    shipped = trim_model(slim, vocab_plan.trim) if vocab_plan else slim  # what the folder holds
    events(StageProgress("export", 1, EXPORT_STEPS))

    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the export is meant to be shared
        events(LogMessage(f"exporting {spec.label} as {fmt} to {out_dir}"))
        write_format(fmt, shipped, tmp, input_names)
        stop.check()
        if vocab_plan:
            save_trimmed_tokenizer(tokenizer, vocab_plan.trim, tmp)
        else:
            tokenizer.save_pretrained(str(tmp))
        if fmt != "hf":
            # the full shape; not as config.json: AutoTokenizer reads that and warns about the unknown model type
            atomic_write_text(tmp / CONFIG_FILE, shipped.config.to_json_string())
        if fmt.startswith("onnx"):
            # the ecosystem's layout (optimum, transformers.js...): config.json with the labels, base model type
            atomic_write_text(tmp / "config.json", json.dumps(onnx_folder_config(shipped, input_names), indent=2))
        events(StageProgress("export", 2, EXPORT_STEPS))

        # verification: the exported file, read back, against PyTorch (the untrimmed fp32 model) on the same inputs
        run, ref = _runner(fmt, tmp, strict=True), _torch_runner(slim, input_names)
        if vocab_plan and run is not None:
            run = _remapping(run, vocab_plan.trim, tokenizer)
        diff, shapes, spec_check = None if run is None else 0.0, [], None
        for feed in probe.feeds:
            if run is not None:
                diff = max(diff, float(np.abs(run(feed) - ref(feed)).max()))
            shapes.append(list(feed["input_ids"].shape))
        if run is None:  # Core ML: no runtime here; the saved package's spec is read back and checked
            spec_check = check_coreml_spec(tmp / MODEL_FILES[fmt], input_names, slim.config.num_labels)
            if spec_check["problems"]:
                raise InternalError(f"{fmt} export of {spec.label}: {'; '.join(spec_check['problems'])}: this is a bug, please report it")
        elif fmt == "openvino":  # the deployed predictions: OpenVINO's default precision on this CPU
            run = _runner(fmt, tmp)
            if vocab_plan:
                run = _remapping(run, vocab_plan.trim, tokenizer)
        tolerance = FP32_TOLERANCE if fmt in FP32_FORMATS else None
        if tolerance is not None and diff > tolerance:
            raise InternalError(
                f"{fmt} export of {spec.label} differs from PyTorch by {diff:.2e} (> {tolerance:g}): nothing was "
                f"written; this is a bug, please report it with the model and the versions of torch/onnxruntime")
        events(StageProgress("export", 3, EXPORT_STEPS))
        dev, failure = None, None
        if run is not None and (fmt in AGREEMENT_FORMATS or vocab_plan):
            if probe.dev is None:
                failure = f"the dev set was unavailable, so the {fmt} predictions could not be checked ({probe.source})"
            else:
                events(LogMessage(f"checking {fmt} predictions on the dev set"))
                dev = _dev_agreement(run, ref, probe, input_names, request.agreement_rows, stop)
                if dev["agreement"] < request.min_agreement:
                    failure = (f"{fmt} agrees with PyTorch on {100 * dev['agreement']:.2f}% of {dev['examples']} dev examples "
                               f"({dev['agreement_kind']}), below the required {100 * request.min_agreement:g}%: "
                               f"use the fp32 ONNX export for this sub-network, or a larger sub-network")
        runtime_verified = run is not None
        del run
        vocabulary = None
        if vocab_plan:
            events(LogMessage("measuring the trimmed vocabulary on dev rows held out from it"))
            vocabulary = _vocab_report(vocab_plan, fmt, slim, tokenizer, input_names, project, tmp, stop)
        events(StageProgress("export", 4, EXPORT_STEPS))
        files = _file_sizes(tmp)
        model_bytes = model_size(tmp, fmt)
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
                "kept_layers": slim.config.source["kept_layers"], "params": sum(p.numel() for p in shipped.parameters()),
            },
            # the project's name, not its path: nothing exported records where it was made
            "source": {"project": project.config.name or project.root.name, "model": name},
            "reference": "PyTorch fp32 (the extracted model)",
            "probe": {"source": probe.source, "shapes": shapes},
            "max_abs_diff": diff,
            "tolerance": tolerance,
            "min_agreement": request.min_agreement if fmt in AGREEMENT_FORMATS or vocab_plan else None,
            "runtime_verified": runtime_verified,
            "runtime": _runtime_name(fmt),
            "spec_check": spec_check,
            "passed": failure is None,
            "failure": failure,
            "extraction_max_abs_diff": extraction_diff,
            "dev": dev,
            "vocabulary": vocabulary,
            "size_mb": model_bytes / 1e6,
            "files": files,
            "versions": _versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(time.perf_counter() - t0, 2),
        }
        atomic_write_text(tmp / VERIFICATION_FILE, json.dumps(verification, indent=2))
        atomic_write_text(tmp / "README.md", readme(verification, shipped, out_dir.name))
        stop.check()
        _swap_into_place(tmp, out_dir)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        full = disk_full(exc, str(out_dir)) if isinstance(exc, Exception) else None
        if full is not None:
            raise full from None
        raise
    events(StageProgress("export", EXPORT_STEPS, EXPORT_STEPS))
    report = ExportReport(
        path=str(out_dir), format=fmt, target=target, width_mult=spec.width_mult, depth_mult=spec.depth_mult,
        max_abs_diff=diff, agreement=dev["agreement"] if dev else None, passed=failure is None, failure=failure,
        dev_examples=dev["examples"] if dev else 0,
        size_mb=model_bytes / 1e6, files=_file_sizes(out_dir),
        verification=verification,
    )
    if failure is not None:
        events(LogMessage(f"export failed its check: {failure}", "error"))
    events(ExportDone(str(out_dir), fmt, diff, report.agreement, report.passed))
    events(StageEnded("export", time.perf_counter() - t0))
    return report


@dataclass
class _VocabPlan:
    trim: VocabTrim  # what the export keeps: the train and dev texts' tokens, specials, the word list
    heldout: VocabTrim  # the same from the train texts only: the dev rows are then new text
    words: int  # entries of the user's word list
    task: object  # the task's data (TaskData), read once for the plan and the held-out report


def _plan_vocab(project: Project, tokenizer, slim: SlimModel, probe: _Probe, keep_words: str | None, events) -> _VocabPlan:
    from .data import load_task_data

    if probe.dev is None:
        raise UserError(f"vocabulary trimming needs the task's texts, which could not be read ({probe.source}): "
                        "export without trimming, or fix the project's data")
    words = read_word_list(keep_words) if keep_words else []
    events(LogMessage("trimming the vocabulary to the tokens of the task's train and dev texts"
                      + (f" and {len(words)} listed words" if words else "")))
    task = load_task_data(project.config.data)
    vocab = slim.config.vocab_size
    train = (task.train.text_a, task.train.text_b)
    trim = plan_trim(tokenizer, vocab, train, [(task.dev.text_a, task.dev.text_b)], words)
    heldout = plan_trim(tokenizer, vocab, train, [], words)
    return _VocabPlan(trim, heldout, len(words), task)


def _remapping(run: Runner, trim: VocabTrim, tokenizer) -> Runner:
    """A runner for a trimmed model fed with the original tokenizer's ids (the verification's inputs)."""
    unk = int(trim.old_to_new[tokenizer.unk_token_id]) if tokenizer.unk_token_id is not None else 0
    return lambda feed: run({**feed, "input_ids": trim.remap_ids(feed["input_ids"], unk)})


def _vocab_report(plan: _VocabPlan, fmt: str, slim: SlimModel, tokenizer, input_names: list[str], project: Project,
                  folder: Path, stop: StopToken) -> dict:
    """Sizes before/after and how the trimmed vocabulary does on text it has not seen.

    Held out: a second trim built from the train texts alone, so every dev row is new text; the dev set,
    tokenized by that trimmed tokenizer (unseen words become [UNK] or smaller pieces), goes through the
    trimmed PyTorch model and is compared with the untrimmed model on the original tokens.
    """
    from .data import encode

    with tempfile.TemporaryDirectory(dir=folder.parent) as scratch:
        write_format(fmt, slim, Path(scratch), input_names)
        size_before = model_size(Path(scratch), fmt)
        tok_h = save_trimmed_tokenizer(tokenizer, plan.heldout, Path(scratch) / "heldout-tokenizer")
    size_after = model_size(folder, fmt)
    task = plan.task
    max_len = project.config.train.max_seq_length
    original = encode(task.dev, tokenizer, max_len)
    heldout = encode(task.dev, tok_h, max_len)
    o2n = plan.heldout.old_to_new
    changed = sum(1 for a, b in zip(original.input_ids, heldout.input_ids) if [int(o2n[i]) for i in a] != list(b))
    ref, trimmed = _torch_runner(slim, input_names), _torch_runner(trim_model(slim, plan.heldout), input_names)
    pad_o = tokenizer.pad_token_id or 0
    pad_h = tok_h.pad_token_id or 0
    scores_a, scores_b = [], []
    for bo, bh in zip(iterate_batches(original, 32, shuffle=False, pad_id=pad_o), iterate_batches(heldout, 32, shuffle=False, pad_id=pad_h)):
        stop.check()
        a, b = ref(_feed(bo, input_names)), trimmed(_feed(bh, input_names))
        scores_a.append(a)
        scores_b.append(b)
    a, b = np.concatenate(scores_a), np.concatenate(scores_b)
    if a.shape[-1] > 1 and not original.is_regression:
        agreement, kind = float((a.argmax(-1) == b.argmax(-1)).mean()), "same predicted class"
    else:
        from scipy.stats import pearsonr

        agreement, kind = float(pearsonr(a.reshape(-1), b.reshape(-1)).statistic), "Pearson r with the untrimmed scores"
    return {
        "kept_tokens": int(len(plan.trim.kept)),
        "original_tokens": int(plan.trim.old_vocab_size),
        "word_list_entries": plan.words,
        "from": "the task's train and dev texts, the special tokens" + (", the word list" if plan.words else ""),
        "size_before_mb": size_before / 1e6,
        "size_after_mb": size_after / 1e6,
        "heldout": {
            "rows": int(len(a)),
            "kept_tokens": int(len(plan.heldout.kept)),
            "rows_with_unseen_tokens": int(changed),
            "agreement": agreement,
            "agreement_kind": kind,
            "how": "vocabulary from the train texts only; dev rows tokenized by it, trimmed vs untrimmed model in PyTorch fp32",
        },
    }


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
        rare_from = (slim.config.source or {}).get("vocab_rare_from")  # a trimmed vocabulary's rare rows: 4 bits
        if fp32_onnx is not None:
            quantize_int8(fp32_onnx, folder / MODEL_FILES[fmt], rare_from=rare_from)
        else:
            with tempfile.TemporaryDirectory(dir=folder) as scratch:
                fp32 = export_onnx(slim, Path(scratch) / "model.onnx", input_names)
                quantize_int8(fp32, folder / MODEL_FILES[fmt], rare_from=rare_from)
    elif fmt in ("ort", "ort-int8"):
        with tempfile.TemporaryDirectory(dir=folder) as scratch:
            onnx_file = write_format("onnx" if fmt == "ort" else "onnx-int8", slim, Path(scratch), input_names, fp32_onnx)
            to_ort(onnx_file, folder / MODEL_FILES[fmt])
    elif fmt == "openvino":
        require_extra(fmt)
        with tempfile.TemporaryDirectory(dir=folder) as scratch:
            onnx_file = fp32_onnx or export_onnx(slim, Path(scratch) / "model.onnx", input_names)
            to_openvino(onnx_file, folder / MODEL_FILES[fmt])
    elif fmt == "executorch":
        require_extra(fmt)
        export_executorch(slim, folder / MODEL_FILES[fmt], input_names)
    elif fmt == "coreml":
        require_extra(fmt)
        export_coreml(slim, folder / MODEL_FILES[fmt], input_names)
    elif fmt == "torchscript":
        export_torchscript(slim, folder / MODEL_FILES[fmt], input_names)
    elif fmt == "hf":
        save_hf_folder(slim, folder)
    else:  # resolve_format guards this
        raise ConfigError(f"unknown format '{fmt}'")
    return folder / MODEL_FILES[fmt]


# ---- README -------------------------------------------------------------------------------------
def _ort_python(v: dict, folder_name: str, feed_keys: str, provider_note: str = "") -> list[str]:
    """The README's Python snippet that runs an ONNX or .ort file with onnxruntime and the folder's tokenizer."""
    return [
        "```python",
        "import onnxruntime as ort",
        "from transformers import AutoTokenizer",
        "",
        f'folder = "{folder_name}"  # this folder',
        "tokenizer = AutoTokenizer.from_pretrained(folder)",
        f'session = ort.InferenceSession(f"{{folder}}/{v["model_file"]}", providers=["CPUExecutionProvider"]){provider_note}',
        'enc = tokenizer(["a great movie", "a dull plot"], padding=True, truncation=True, return_tensors="np")',
        f"logits = session.run(None, {{k: enc[k] for k in ({feed_keys},)}})[0]",
        "print(logits.argmax(-1))",
        "```",
    ]


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
        (f"- Verified against PyTorch: max abs difference {v['max_abs_diff']:.2e} on {v['probe']['source']} inputs "
         f"of shapes {v['probe']['shapes']}" if v["max_abs_diff"] is not None else
         "- **Not verified on this machine** (no Core ML runtime on Linux): the saved package's inputs, output and "
         "shape ranges were read back and checked")
        + (f"; dev-set prediction agreement {100 * v['dev']['agreement']:.2f}% over {v['dev']['examples']} examples"
           if v.get("dev") and v["dev"].get("agreement") is not None else "")
        + (f" ({v['dev']['metric']}: {v['dev']['exported_score']:.4f} exported, {v['dev']['pytorch_score']:.4f} PyTorch)"
           if v.get("dev") and v["dev"].get("exported_score") is not None else "")
        + " (see `verification.json`).",
        "",
        "## Run it",
        "",
    ]
    if voc := v.get("vocabulary"):
        lines[-3:-3] = [
            f"- Vocabulary trimmed to the task: {voc['kept_tokens']:,} of {voc['original_tokens']:,} tokens kept "
            f"({voc['from']}); model file {voc['size_before_mb']:.1f} MB before, {voc['size_after_mb']:.1f} MB after. "
            f"Words outside it become [UNK] or smaller pieces: on dev rows held out from a vocabulary built the same way "
            f"({voc['heldout']['rows_with_unseen_tokens']} of {voc['heldout']['rows']} with unseen words) the predictions "
            f"agreed with the untrimmed model on {100 * voc['heldout']['agreement']:.2f}%. Use this folder's tokenizer: "
            "the token ids differ from the original model's.",
        ]
    if fmt in ("ort", "ort-int8"):
        lines += [
            "ONNX Runtime Mobile loads `.ort` files: on Android the `com.microsoft.onnxruntime:onnxruntime-android` package, "
            "on iOS `onnxruntime-objc` (CocoaPods), elsewhere any onnxruntime (`pip install onnxruntime`). Tokenize on the "
            "device with the `tokenizer.json` beside it (e.g. the Hugging Face `tokenizers` bindings), then:",
            "",
            "```kotlin",
            "val env = OrtEnvironment.getEnvironment()",
            f'val session = env.createSession(assets.open("{v["model_file"]}").readBytes())',
            f"// {', '.join(v['inputs'])}: LongArray tensors of shape [batch, sequence]",
            "val logits = session.run(inputs)[0].value as Array<FloatArray>",
            "```",
            "",
            "Python check:",
            "",
            *_ort_python(v, folder_name, feed_keys),
        ]
    elif fmt == "openvino":
        lines += [
            "```bash",
            "pip install openvino transformers",
            "```",
            "",
            "```python",
            "import openvino as ov",
            "from transformers import AutoTokenizer",
            "",
            f'folder = "{folder_name}"  # this folder',
            "tokenizer = AutoTokenizer.from_pretrained(folder)",
            f'model = ov.Core().compile_model(f"{{folder}}/{v["model_file"]}", "CPU")',
            'enc = tokenizer(["a great movie", "a dull plot"], padding=True, return_tensors="np")',
            f"logits = model({{k: enc[k] for k in ({feed_keys},)}})[0]",
            "print(logits.argmax(-1))",
            "```",
            "",
            "The weights are fp32 (`openvino_model.bin`). OpenVINO's CPU plugin computes in bf16 on CPUs that have it "
            "(AVX512-BF16, AMX) and in fp32 elsewhere; pass `{\"INFERENCE_PRECISION_HINT\": \"f32\"}` to "
            "`compile_model` for fp32 everywhere. `verification.json` has both checks: strict fp32, and the default "
            "precision's dev-set agreement.",
        ]
    elif fmt == "executorch":
        lines += [
            "An ExecuTorch program lowered to the XNNPACK delegate (fp32; batch up to 64, sequence up to 512). "
            "On Android and iOS, link the ExecuTorch runtime with the XNNPACK backend and load `model.pte` with "
            "`Module`; tokenize with the `tokenizer.json` beside it. Inputs are int64.",
            "",
            "```python",
            "import torch",
            "from executorch.runtime import Runtime",
            "from transformers import AutoTokenizer",
            "",
            f'folder = "{folder_name}"  # this folder',
            "tokenizer = AutoTokenizer.from_pretrained(folder)",
            f'method = Runtime.get().load_program(f"{{folder}}/{v["model_file"]}").load_method("forward")',
            'enc = tokenizer(["a great movie", "a dull plot"], padding=True, return_tensors="pt")',
            f"logits = method.execute([{', '.join(f'enc[{k!r}]' for k in v['inputs'])}])[0]",
            "print(logits.argmax(-1))",
            "```",
        ]
    elif fmt == "coreml":
        lines += [
            "A Core ML ML program (iOS 16 / macOS 13 or later; Core ML computes it in fp16 on the Neural Engine or GPU). "
            "Add `model.mlpackage` to an Xcode project, or load it in Python on a Mac:",
            "",
            "```python",
            "import coremltools as ct",
            "import numpy as np",
            "from transformers import AutoTokenizer",
            "",
            f'folder = "{folder_name}"  # this folder',
            "tokenizer = AutoTokenizer.from_pretrained(folder)",
            f'model = ct.models.MLModel(f"{{folder}}/{v["model_file"]}")',
            'enc = tokenizer(["a great movie", "a dull plot"], padding=True, return_tensors="np")',
            f"out = model.predict({{k: enc[k].astype(np.int32) for k in ({feed_keys},)}})",
            'print(out["logits"].argmax(-1))',
            "```",
            "",
            "Inputs are int32 arrays of shape batch (1-64) x sequence (2-512).",
        ]
    elif fmt.startswith("onnx"):
        lines += [
            "```bash",
            "pip install onnxruntime transformers" + ("  # onnxruntime-gpu on a GPU server" if fmt == "onnx-fp16" else ""),
            "```",
            "",
            *_ort_python(v, folder_name, feed_keys, "  # or CUDAExecutionProvider" if fmt == "onnx-fp16" else ""),
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
