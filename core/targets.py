"""The export formats and the target presets that pick one (no torch import: the CLI's parser reads them)."""
from __future__ import annotations

from .errors import ConfigError

# format -> what it is (the GUI shows these)
FORMATS: dict[str, str] = {
    "onnx": "ONNX fp32, dynamic batch and sequence axes (onnxruntime on any CPU)",
    "onnx-int8": "ONNX with INT8 weights (onnxruntime dynamic quantization, fp16 embeddings): ~2.5x smaller, ~2x faster on CPUs",
    "onnx-fp16": "ONNX fp16 (half the size; for GPUs: onnxruntime-gpu with CUDA or TensorRT)",
    "torchscript": "TorchScript (traced): LibTorch in C++, or torch.jit.load in Python without transformers",
    "hf": "Hugging Face folder (safetensors + config + tokenizer), loads with transformers' Auto classes",
}

# target preset -> format
PRESETS: dict[str, str] = {
    "desktop-cpu": "onnx",
    "mobile-arm": "onnx-int8",
    "gpu-server": "onnx-fp16",
    "python": "hf",
    "libtorch": "torchscript",
}

# target preset -> the devices it is for (the format's own description says the rest)
PRESET_DESCRIPTIONS: dict[str, str] = {
    "desktop-cpu": "desktop or laptop CPUs (x86 or ARM)",
    "mobile-arm": "phones, ARM boards and other small devices",
    "gpu-server": "GPU servers",
    "python": "Python programs that use transformers",
    "libtorch": "C++ programs that link LibTorch",
}

# the file holding the model in each format
MODEL_FILES = {
    "onnx": "model.onnx", "onnx-int8": "model_int8.onnx", "onnx-fp16": "model_fp16.onnx",
    "torchscript": "model.torchscript.pt", "hf": "model.safetensors",
}


def resolve_format(format_or_target: str) -> tuple[str, str | None]:
    """(format, preset or None) for a format name or a target preset name."""
    key = (format_or_target or "").strip().lower()
    if key in FORMATS:
        return key, None
    if key in PRESETS:
        return PRESETS[key], key
    raise ConfigError(
        f"unknown format or target '{format_or_target}': formats are {', '.join(FORMATS)}; "
        f"targets are {', '.join(PRESETS)}"
    )
