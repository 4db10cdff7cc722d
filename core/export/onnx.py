"""ONNX: the export with dynamic axes, the scrub of what it records about this machine, the folder's config, .ort."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from ..slim import SlimModel
from .logits import example_inputs, logits_module, quiet_export


def export_onnx(slim: SlimModel, path: Path, input_names: list[str], half: bool = False) -> Path:
    """Write `slim` as ONNX with dynamic batch and sequence axes (torch.export based exporter)."""
    module = logits_module(copy.deepcopy(slim).half() if half else slim, input_names)
    args = example_inputs(input_names, slim.config.vocab_size)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    dynamic = {name: {0: batch, 1: seq} for name in input_names}
    big = sum(p.numel() * p.element_size() for p in module.parameters()) > 1.8e9  # protobuf's 2 GB limit
    path = Path(path)
    with quiet_export(), torch.no_grad():
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=input_names,
            output_names=["logits"],
            dynamic_shapes=dynamic,
            dynamo=True,
            external_data=big,
            verbose=False,
        )
    _scrub_onnx(path, big)
    return path


def _scrub_onnx(path: Path, external: bool) -> None:
    """Drop what the exporter records about the machine that made the file (every node's Python stack trace,
    with this machine's source paths, and doc strings) and the intermediate shape annotations. The graph
    itself is untouched.

    Why the shapes go: onnxruntime fuses Add + LayerNormalization into SkipLayerNormalization only when it
    can prove both inputs have the same shape, which the exporter's `value_info` tells it; that fused CPU
    kernel is slower than the two ops it replaces (see runners.ORT_DISABLED_OPTIMIZERS), and under a default
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
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "num_hidden_layers": layers,
        "num_attention_heads": (c.heads_per_layer or [0])[0] if layers else 0,
        "attention_head_size": c.head_dim,
        "intermediate_size": (c.ffn_per_layer or [0])[0] if layers else 0,
        "max_position_embeddings": c.max_position_embeddings,
        "type_vocab_size": c.type_vocab_size,
        "pad_token_id": c.pad_token_id,
        "layer_norm_eps": c.layer_norm_eps,
        "hidden_act": c.hidden_act,
        "onnx": {"inputs": list(input_names), "outputs": ["logits"]},
        "dynabert": {
            "width_mult": src.get("width_mult"),
            "depth_mult": src.get("depth_mult"),
            "kept_layers": src.get("kept_layers"),
            "heads_per_layer": c.heads_per_layer,
            "ffn_per_layer": c.ffn_per_layer,
        },
    }
