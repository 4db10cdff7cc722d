"""Device kits: the sub-networks as ONNX files plus a numpy + onnxruntime runner that times them on the device.

`dynastudio device-kit DIR --out KIT` writes the kit; on the device `python run_kit.py` writes
latency-<device>.json; `dynastudio latency DIR --import FILE` merges it into latency.json under the
device's name, beside (never over) the measurements taken on this machine.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import uuid
from importlib import resources
from pathlib import Path

from .errors import ConfigError
from .events import LogMessage, StageEnded, StageProgress, StageStarted, StopToken
from .project import Project
from .requests import DeviceKitRequest
from .store import atomic_write_text

# the kit job loads the engine when it runs; reading a kit's result file is the store's (core/store/devices.py)
KIT_FORMATS = ("fp32", "int8", "fp16")


def device_kit_job(project: Project, request: DeviceKitRequest, events, stop: StopToken) -> dict:
    """Write the kit folder (atomically: a temp sibling renamed at the end); returns {"path", "cells"}."""
    from .dynamic import SubnetSpec, subnet_grid
    from .export.logits import input_names_for
    from .export.runners import ORT_DISABLED_OPTIMIZERS
    from .extract import extract_from_model
    from .latency import LatencySettings, export_cell, model_for_latency, shape_specs
    from .prepare import project_tokenizer

    bad = [f for f in request.formats if f not in KIT_FORMATS]
    if bad or not request.formats:
        raise ConfigError(f"device-kit --formats {','.join(request.formats)}: choose from {', '.join(KIT_FORMATS)}")
    t = project.config.train
    specs: list = (
        [SubnetSpec(w, d) for w, d in request.cells] if request.cells else subnet_grid(t.width_mults, t.depth_mults)
    )
    labels = [sp.label for sp in specs]
    shape_layers = None
    if request.shapes:
        shape_labels, shape_models, shape_layers = shape_specs(project)
        labels, specs = labels + shape_labels, specs + shape_models
    out = Path(request.out_dir).expanduser().resolve()
    if out.exists() and not request.overwrite:
        raise ConfigError(f"{out}: exists: pick another --out, or --overwrite to replace it")
    if out == project.root.resolve() or project.root.resolve() in out.parents:
        raise ConfigError(f"{out}: inside the project: put the kit outside it, e.g. next to the project folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    events(StageStarted("device-kit", len(specs)))
    model, name = model_for_latency(project)
    c = model.config
    max_seq = c.max_position_embeddings - ((c.pad_token_id or 0) + 1 if c.model_type != "bert" else 0)
    tokenizer = project_tokenizer(project)
    settings = LatencySettings(1, min(t.max_seq_length, max_seq), 1, tuple(request.formats), 1, 0)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        cells = []
        for i, (spec, label) in enumerate(zip(specs, labels)):
            stop.check()
            slim = extract_from_model(model, spec, t.depth_rule)
            names = input_names_for(tokenizer, slim)
            folder = tmp / "models" / label
            cell = export_cell(slim, names, request.formats, folder, settings)
            keep = {p.name for p in cell.files.values()}
            for p in folder.iterdir():  # export_cell also leaves the fp32 file that int8 is made from
                if not any(p.name == k or p.name.startswith(k + ".") for k in keep):
                    p.unlink()
            cells.append(
                {
                    "label": label,
                    "width_mult": getattr(spec, "width_mult", None),  # None: a shape model, not a grid cell
                    "depth_mult": getattr(spec, "depth_mult", None),
                    "inputs": names,
                    "vocab_size": slim.config.vocab_size,
                    "files": {fmt: f"models/{label}/{p.name}" for fmt, p in cell.files.items()},
                }
            )
            events(StageProgress("device-kit", i + 1, len(specs)))
        kit = {
            "kind": "dynastudio-device-kit",
            "version": 1,
            "id": uuid.uuid4().hex[:12],
            "project": project.config.name or project.root.name,
            "model": name,
            "seq": settings.seq,
            "max_seq": max_seq,
            "disabled_optimizers": list(ORT_DISABLED_OPTIMIZERS),
            "made": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "cells": cells,
        }
        if shape_layers:
            kit["shape_layers"] = shape_layers
        atomic_write_text(tmp / "kit.json", json.dumps(kit, indent=2))
        runner = resources.files("dynastudio.core").joinpath("kit/run_kit.py").read_text(encoding="utf-8")
        atomic_write_text(tmp / "run_kit.py", runner)
        atomic_write_text(tmp / "README.md", _readme(kit))
        stop.check()
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    events(LogMessage(f"device kit written to {out}: {len(cells)} sub-networks, formats {', '.join(request.formats)}"))
    events(StageEnded("device-kit", time.perf_counter() - t0))
    return {"path": str(out), "cells": [c["label"] for c in cells]}


def _readme(kit: dict) -> str:
    labels = ", ".join(c["label"] for c in kit["cells"])
    return f"""# DynaBERT Studio device kit ({kit["project"]})

Sub-networks: {labels}. Each is an ONNX file under `models/`, made from the project's `{kit["model"]}` model.

## On the device
Python 3.8 or newer with numpy and onnxruntime (`pip install numpy onnxruntime`), nothing else:

    python run_kit.py --threads 1 --batch 1 --seq {kit["seq"]} --device my-board

It times every sub-network with full-length random inputs, the way `dynastudio latency` does, and
writes `latency-my-board.json` beside it (the device, its CPU, the onnxruntime version, and per
sub-network the median and p90 in milliseconds).

## Back on the machine with the project

    dynastudio latency PROJECT --import latency-my-board.json

The numbers join the project's grid under the device's name (`dynastudio report PROJECT --device
my-board`), beside those measured on the project's own machine.
"""
