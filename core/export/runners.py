"""Running a written model back: the onnxruntime session the studio measures with, and one runner per format."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .. import threads as cpu_threads
from ..errors import ConfigError
from ..slim import SlimModel
from .logits import logits_module, quiet_export, quiet_import
from .runtimes import import_openvino
from .targets import MODEL_FILES

# onnxruntime's fused SkipLayerNormalization CPU kernel is ~8x slower than the Add + LayerNormalization
# it replaces (onnxruntime 1.32, AMD EPYC, 1 thread: 0.20 vs 0.025 ms on 128 x 384): it cost 13% of
# MiniLM's latency, a constant that hides the width savings. Measurements and the READMEs turn it off.
ORT_DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]
UNVERIFIABLE_FORMATS = ("coreml",)  # no runtime on Linux: the package's spec is checked instead
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # the exported models' argument order

Runner = Callable[[dict], np.ndarray]  # {input name: int64 array} -> fp32 logits


def ort_session(path: Path, threads: int | None = None, providers: list[str] | None = None):
    """An onnxruntime session the way the studio measures and recommends it (sequential, SkipLayerNorm unfused).

    `threads`: the intra-op pool for a latency measurement, whose spinning threads are part of what a deployed
    app gets. Without it (scoring and verifying files), the pool is this process's share of the usable cores
    (core/threads.py), and while other jobs of ours compute on the machine its idle threads sleep instead of
    spinning."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    if not threads:
        others = cpu_threads.others_computing()
        threads, _ = cpu_threads.plan_threads(None, len(others))
        if others:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(
        str(path), so, providers=providers or ["CPUExecutionProvider"], disabled_optimizers=ORT_DISABLED_OPTIMIZERS
    )


def feed(batch: dict, input_names: list[str]) -> dict:
    """A batch of tensors (as `iterate_batches` gives them) as the int64 arrays a runner or a session takes."""
    out = {}
    for k in input_names:
        v = batch.get(k)
        if v is None:  # a tokenizer without token types: zeros, as the model assumes
            v = torch.zeros_like(batch["input_ids"])
        out[k] = v.numpy().astype(np.int64)
    return out


def runner(fmt: str, folder: Path, strict: bool = False) -> Runner | None:
    """Run the exported file back (None where no runtime runs on this machine). `strict`: OpenVINO in fp32
    (its default on a CPU with bf16 is bf16), for the check that the conversion itself is exact."""
    path = folder / MODEL_FILES[fmt]
    if fmt in UNVERIFIABLE_FORMATS:
        return None
    if fmt in ("openvino", "openvino-int8"):
        return _openvino_runner(path, strict and fmt == "openvino")
    if fmt == "executorch":
        return _executorch_runner(path)
    if fmt.startswith("onnx") or fmt.startswith("ort"):
        sess = ort_session(path)
        names = [i.name for i in sess.get_inputs()]
        return lambda f: sess.run(None, {k: f[k] for k in names})[0].astype(np.float32)
    if fmt == "torchscript":
        return _torchscript_runner(path)
    if fmt == "hf":
        return _hf_runner(folder)
    raise ConfigError(f"unknown format '{fmt}'")


def torch_runner(slim: SlimModel, input_names: list[str]) -> Runner:
    """The extracted model in PyTorch, fed as the exported files are: the reference every check compares with."""
    module = logits_module(slim, input_names)

    def run(f: dict) -> np.ndarray:
        with torch.no_grad():
            return module(*(torch.from_numpy(f[k]) for k in input_names)).numpy()

    return run


def _openvino_runner(path: Path, strict: bool) -> Runner:
    ov = import_openvino()
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"} if strict else {})
    names = [i.any_name for i in compiled.inputs]
    return lambda f: np.asarray(compiled({k: f[k] for k in names})[0], dtype=np.float32)


def _executorch_runner(path: Path) -> Runner:
    with quiet_import():
        from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(path)).load_method("forward")
    order = TOKEN_INPUTS[: method.metadata.num_inputs()]
    return lambda f: method.execute([torch.from_numpy(np.ascontiguousarray(f[k])) for k in order])[0].numpy()


def _torchscript_runner(path: Path) -> Runner:
    with quiet_export():
        module = torch.jit.load(str(path), map_location="cpu").eval()
    order = TOKEN_INPUTS[: len(module.forward.schema.arguments) - 1]  # minus self

    def run(f: dict) -> np.ndarray:
        with torch.no_grad():
            return module(*(torch.from_numpy(f[k]) for k in order)).numpy()

    return run


def _hf_runner(folder: Path) -> Runner:
    model = SlimModel.from_pretrained(str(folder)).eval()

    def run(f: dict) -> np.ndarray:
        with torch.no_grad():
            t = {k: torch.from_numpy(v) for k, v in f.items()}
            return model(**t, return_dict=True).logits.float().numpy()

    return run
