"""The export formats, the presets that pick one, the files of an export folder (torch-free: the CLI reads them)."""

from __future__ import annotations

from ..errors import ConfigError

# format -> what it is (the GUI shows these)
FORMATS: dict[str, str] = {
    "onnx": "ONNX fp32, dynamic batch and sequence axes (onnxruntime on any CPU)",
    "onnx-int8": "ONNX with INT8 weights and per-token INT8 activations (INT8 embedding rows): ~4x smaller, ~2x faster on CPUs",
    "onnx-fp16": "ONNX fp16 (half the size; for GPUs: onnxruntime-gpu with CUDA or TensorRT)",
    "ort": "ONNX Runtime Mobile (.ort, fp32): onnxruntime-android / onnxruntime-objc, or any onnxruntime",
    "ort-int8": "ONNX Runtime Mobile (.ort) with INT8 weights: the small, fast choice for Android",
    "openvino": "OpenVINO IR (xml + bin): the fastest runtime on Intel and AMD x86 CPUs",
    "openvino-int8": "OpenVINO IR with INT8 weights (NNCF) and inputs quantized per token on the fly: faster "
    "still on x86 CPUs",
    "executorch": "ExecuTorch program (.pte) with the XNNPACK delegate: PyTorch's on-device runtime (Android, iOS, embedded)",
    "coreml": "Core ML package (.mlpackage, ML program): iPhone, iPad and Mac (Neural Engine, GPU or CPU)",
    "torchscript": "TorchScript (traced): LibTorch in C++, or torch.jit.load in Python without transformers",
    "hf": "Hugging Face folder (safetensors + config + tokenizer), loads with transformers' Auto classes",
}

# target preset -> format
PRESETS: dict[str, str] = {
    "android": "ort-int8",
    "ios": "coreml",
    "intel-cpu": "openvino",
    "desktop-cpu": "openvino",
    "arm-linux": "onnx-int8",
    "gpu-server": "onnx-fp16",
    "python": "hf",
    "libtorch": "torchscript",
}

# target preset -> the devices it is for (the format's own description says the rest)
PRESET_DESCRIPTIONS: dict[str, str] = {
    "android": "Android phones (ONNX Runtime Mobile), vocabulary trimmed to the task",
    "ios": "iPhones and iPads (Core ML), vocabulary trimmed to the task",
    "intel-cpu": "Intel (and AMD) x86 CPUs in servers and PCs (OpenVINO)",
    "desktop-cpu": "desktop and laptop x86 CPUs (OpenVINO)",
    "arm-linux": "ARM64 Linux boards: Raspberry Pi, Jetson CPU, car computers (onnxruntime)",
    "gpu-server": "GPU servers",
    "python": "Python programs that use transformers",
    "libtorch": "C++ programs that link LibTorch",
}

# the name latency.json keeps OpenVINO's figures of this machine under (a device beside this machine's onnxruntime)
OPENVINO_DEVICE = "this machine (OpenVINO)"

# earlier names of presets, still accepted
PRESET_ALIASES: dict[str, str] = {"mobile-arm": "android"}

# presets that trim the vocabulary unless told not to (phones: the embedding table is most of a small model)
TRIM_BY_DEFAULT = ("android", "ios")

# the formats whose MatMuls are quantized by quantize.quantize_int8 (the method is ExportRequest.int8_method)
INT8_FORMATS = ("onnx-int8", "ort-int8")

# the file holding the model in each format
MODEL_FILES = {
    "onnx": "model.onnx",
    "onnx-int8": "model_int8.onnx",
    "onnx-fp16": "model_fp16.onnx",
    "ort": "model.ort",
    "ort-int8": "model_int8.ort",
    "openvino": "openvino_model.xml",
    "openvino-int8": "openvino_model.xml",
    "executorch": "model.pte",
    "coreml": "model.mlpackage",
    "torchscript": "model.torchscript.pt",
    "hf": "model.safetensors",
}
VERIFICATION_FILE = "verification.json"  # what was checked and how it went; marks a folder as an export
CONFIG_FILE = "dynabert_config.json"  # the sub-network's shape and labels, in the non-HF formats

# formats that need an optional package: format -> (module to import, pip extra)
FORMAT_EXTRAS = {
    "openvino": ("openvino", "openvino"),
    "openvino-int8": ("nncf", "openvino"),
    "executorch": ("executorch", "executorch"),
    "coreml": ("coremltools", "coreml"),
}


def resolve_format(format_or_target: str) -> tuple[str, str | None]:
    """(format, preset or None) for a format name or a target preset name."""
    key = (format_or_target or "").strip().lower()
    key = PRESET_ALIASES.get(key, key)
    if key in FORMATS:
        return key, None
    if key in PRESETS:
        return PRESETS[key], key
    raise ConfigError(
        f"unknown format or target '{format_or_target}': formats are {', '.join(FORMATS)}; "
        f"targets are {', '.join(PRESETS)}"
    )


def pip_command(extra: str) -> str:
    """The pip command that installs `extra` into this interpreter (the one the studio and its jobs run on)."""
    import shlex
    import sys

    return f"{shlex.quote(sys.executable)} -m pip install 'dynabert-studio[{extra}]'"


def missing_extra(fmt: str) -> str | None:
    """The pip command a format still needs here; None when nothing is missing."""
    import importlib.util

    if fmt in FORMAT_EXTRAS:
        module, extra = FORMAT_EXTRAS[fmt]
        if importlib.util.find_spec(module) is None:
            return pip_command(extra)
    return None


def require_extra(fmt: str) -> None:
    """A one-line error naming the pip command when a format's optional package is missing."""
    if (command := missing_extra(fmt)) is not None:
        raise ConfigError(
            f"the {fmt} format needs the {FORMAT_EXTRAS[fmt][0]} package, which is not installed: {command}"
        )
