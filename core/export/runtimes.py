"""The device runtimes' writers: OpenVINO IR, ExecuTorch (XNNPACK), Core ML, TorchScript and the Hugging Face folder."""

from __future__ import annotations

import copy
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import slim as slim_source
from ..slim import SlimModel
from .logits import example_inputs, logits_module, quiet_export, quiet_import


def to_openvino(src: Path, dst: Path) -> Path:
    """ONNX -> OpenVINO IR (xml + bin), weights kept in fp32: OpenVINO's CPU plugin picks its own inference
    precision (bf16 on CPUs with AVX512-BF16 or AMX, else fp32)."""
    ov = import_openvino()
    ov.save_model(ov.Core().read_model(str(src)), str(dst), compress_to_fp16=False)
    return Path(dst)


def openvino_int8(src: Path, dst: Path, group: int) -> Path:
    """ONNX -> OpenVINO IR with INT8 weights (NNCF's weight compression: asymmetric, per output channel) whose
    MatMul inputs OpenVINO's CPU plugin quantizes to 8 bits on the fly, with a range per `group` consecutive
    values of each token (the hidden size: a range per token, as the per-token ONNX files). The group size
    travels in the IR (rt_info runtime_options), so every app that compiles the file gets it. Data-free."""
    ov = import_openvino()
    with quiet_import():
        import nncf

    model = nncf.compress_weights(ov.Core().read_model(str(src)), mode=nncf.CompressWeightsMode.INT8_ASYM)
    model.set_rt_info(str(group), ["runtime_options", "DYNAMIC_QUANTIZATION_GROUP_SIZE"])
    ov.save_model(model, str(dst), compress_to_fp16=False)
    return Path(dst)


def openvino_int8_static(src: Path, dst: Path, calibration: list[dict]) -> Path:
    """ONNX -> OpenVINO IR quantized to INT8 by NNCF's post-training quantization (`--int8-method static`): its
    activation ranges fixed from `calibration`, feeds of train rows, one row each as a device sends them; the
    transformer preset keeps the ops that lose accuracy at INT8 (softmax, LayerNorm, GELU) in floating point."""
    ov = import_openvino()
    with quiet_import():
        import nncf

    model = ov.Core().read_model(str(src))
    quantized = nncf.quantize(
        model, nncf.Dataset(calibration), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calibration)
    )
    ov.save_model(quantized, str(dst), compress_to_fp16=False)
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


def _dynamic_export(module: nn.Module, input_names: list[str], vocab: int):
    """torch.export of the logits module with dynamic batch (<= 64) and sequence (<= 512) axes."""
    args = example_inputs(input_names, vocab)
    batch, seq = torch.export.Dim("batch", max=64), torch.export.Dim("sequence", max=512)
    return torch.export.export(module, args, dynamic_shapes={n: {0: batch, 1: seq} for n in input_names})


def export_executorch(slim: SlimModel, path: Path, input_names: list[str]) -> Path:
    """An ExecuTorch program lowered to the XNNPACK delegate (fp32; batch up to 64, sequence up to 512)."""
    with quiet_import():
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

    with quiet_export(), torch.no_grad():
        program = _dynamic_export(logits_module(slim, input_names).eval(), input_names, slim.config.vocab_size)
        et = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
    Path(path).write_bytes(et.buffer)
    return Path(path)


def export_coreml(slim: SlimModel, path: Path, input_names: list[str]) -> Path:
    """A Core ML ML program (iOS 16+, fp16 compute as Core ML does by default), int32 inputs of up to 64 x 512."""
    with quiet_import():
        import coremltools as ct

    with quiet_export(), torch.no_grad():
        program = _dynamic_export(logits_module(slim, input_names).eval(), input_names, slim.config.vocab_size)
        program = program.run_decompositions({})
        shape = (ct.RangeDim(1, 64), ct.RangeDim(2, 512))
        ml = ct.convert(
            program,
            inputs=[ct.TensorType(name=n, shape=shape, dtype=np.int32) for n in input_names],
            outputs=[ct.TensorType(name="logits")],
            minimum_deployment_target=ct.target.iOS16,
        )
    ml.short_description = "DynaBERT sub-network: sequence classification logits"
    ml.save(str(path))
    return Path(path)


def check_coreml_spec(path: Path, input_names: list[str], num_labels: int | None) -> dict:
    """Read the saved package's spec back: the inputs, the output and their shapes as a device would see them."""
    import coremltools as ct

    spec = ct.utils.load_spec(str(path))
    ins = {}
    for i in spec.description.input:
        a = i.type.multiArrayType
        ranges = [(r.lowerBound, r.upperBound) for r in a.shapeRange.sizeRanges]
        ins[i.name] = {
            "dtype": ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(a.dataType),
            "ranges": ranges,
        }
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
    return {
        "inputs": ins,
        "outputs": outs,
        "spec_version": spec.specificationVersion,
        "problems": problems,
        "num_labels": num_labels,
    }


def export_torchscript(slim: SlimModel, path: Path, input_names: list[str]) -> Path:
    """A traced TorchScript module (what LibTorch loads in C++), its weights frozen."""
    frozen = copy.deepcopy(slim)
    for p in frozen.parameters():
        p.requires_grad_(False)  # saved with the weights: callers get plain inference outputs
    module = logits_module(frozen, input_names)
    args = example_inputs(input_names, slim.config.vocab_size)
    with quiet_export(), torch.no_grad():
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
    with quiet_export():
        model.save_pretrained(str(folder), safe_serialization=True)
    shutil.copyfile(Path(slim_source.__file__), Path(folder) / "modeling_dynabert.py")
