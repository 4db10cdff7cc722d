"""The one writer of every format (export and latency share it), and what a written model weighs."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..errors import ConfigError, InternalError
from ..slim import SlimModel
from .onnx import export_onnx, to_ort
from .quantize import quantize_int8, table_bytes, table_storage
from .runtimes import (
    export_coreml,
    export_executorch,
    export_torchscript,
    openvino_int8,
    openvino_int8_static,
    save_hf_folder,
    to_openvino,
)
from .targets import MODEL_FILES, require_extra


def write_format(
    fmt: str,
    slim: SlimModel,
    folder: Path,
    input_names: list[str],
    fp32_onnx: Path | None = None,
    int8_method: str = "per-token",
    calibration: list[dict] | None = None,
) -> Path:
    """Write `slim` into `folder` in one format; returns the model file. Export and latency both use this.

    `fp32_onnx`: an fp32 ONNX file of the same model already written, which onnx-int8 then quantizes
    instead of exporting the model again. `int8_method`: how onnx-int8 and ort-int8 quantize (quantize.INT8_METHODS).
    `calibration`: the calibration feeds of openvino-int8's static method (train rows, one per feed).
    """
    if fmt == "onnx":
        export_onnx(slim, folder / MODEL_FILES[fmt], input_names)
    elif fmt == "onnx-fp16":
        export_onnx(slim, folder / MODEL_FILES[fmt], input_names, half=True)
    elif fmt == "onnx-int8":
        rare_from = (slim.config.source or {}).get("vocab_rare_from")  # a trimmed vocabulary's rare rows: 4 bits
        if fp32_onnx is not None:
            quantize_int8(fp32_onnx, folder / MODEL_FILES[fmt], rare_from=rare_from, method=int8_method)
        else:
            with tempfile.TemporaryDirectory(dir=folder) as scratch:
                fp32 = export_onnx(slim, Path(scratch) / "model.onnx", input_names)
                quantize_int8(fp32, folder / MODEL_FILES[fmt], rare_from=rare_from, method=int8_method)
    elif fmt in ("ort", "ort-int8"):
        with tempfile.TemporaryDirectory(dir=folder) as scratch:
            onnx_file = write_format(
                "onnx" if fmt == "ort" else "onnx-int8", slim, Path(scratch), input_names, fp32_onnx, int8_method
            )
            to_ort(onnx_file, folder / MODEL_FILES[fmt])
    elif fmt == "openvino":
        require_extra(fmt)
        with tempfile.TemporaryDirectory(dir=folder) as scratch:
            onnx_file = fp32_onnx or export_onnx(slim, Path(scratch) / "model.onnx", input_names)
            to_openvino(onnx_file, folder / MODEL_FILES[fmt])
    elif fmt == "openvino-int8":
        require_extra(fmt)
        if int8_method == "static" and not calibration:
            raise InternalError("openvino-int8 static needs calibration rows: the export job passes train rows")
        with tempfile.TemporaryDirectory(dir=folder) as scratch:
            onnx_file = fp32_onnx or export_onnx(slim, Path(scratch) / "model.onnx", input_names)
            if int8_method == "static" and calibration:
                openvino_int8_static(onnx_file, folder / MODEL_FILES[fmt], calibration)
            else:
                openvino_int8(onnx_file, folder / MODEL_FILES[fmt], slim.config.hidden_size)
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


def tree_size(p: Path) -> int:
    """Bytes of a file, or of everything in a folder (a .mlpackage)."""
    return sum(q.stat().st_size for q in p.rglob("*") if q.is_file()) if p.is_dir() else p.stat().st_size


def file_sizes(folder: Path) -> dict:
    """Each entry's size in bytes (a folder such as a .mlpackage: everything in it)."""
    return {p.name: tree_size(p) for p in sorted(folder.iterdir())}


def model_size(folder: Path, fmt: str) -> int:
    """Bytes of the model itself: its file with the files that belong to it (ONNX external data, OpenVINO's .bin)."""
    main = Path(folder) / MODEL_FILES[fmt]
    parts = [main, Path(str(main) + ".data")]
    if fmt in ("openvino", "openvino-int8"):
        parts.append(main.with_suffix(".bin"))
    return sum(tree_size(p) for p in parts if p.exists())


def word_table_bytes(fmt: str, rows: int, hidden: int, rare_from: int | None = None) -> int:
    """Bytes the word-embedding table takes in a format's model file. Nothing else in the file depends on the
    vocabulary, so what trimming it saves is this at the old row count less this at the new one.

    INT8 formats store it as `quantize.table_storage` says; onnx-fp16 in fp16, and Core ML too (an ML program
    holds its weights in fp16 unless converted for fp32 compute); every other format in fp32.
    """
    if fmt in ("onnx-int8", "ort-int8"):
        storage = table_storage("word_embeddings", rows, hidden, "int8", rare_from)
        return table_bytes(storage, rows, hidden, rare_from)
    return rows * hidden * (2 if fmt in ("onnx-fp16", "coreml") else 4)
