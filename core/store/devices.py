"""A device kit's result file (latency-<device>.json), checked and filed in latency.json under the device's name."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from ..errors import ProjectError
from .folder import ProjectStore
from .shapes import BASE_LABEL, SHAPES_KEY, parse_shape_label

RESULT_KIND = "dynastudio-device-latency"  # run_kit.py writes it; a file without it is not a kit's result


def _field(path: Path, what: str, fix: str = "re-run run_kit.py to write it again") -> ProjectError:
    return ProjectError(f"{path}: {what}: {fix}")


def read_device_latency(path: Path) -> dict:
    """Read and check a kit's result file; every problem is one line naming the file and the field."""
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProjectError(f"{path}: no such file: give the latency-<device>.json that run_kit.py wrote") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _field(path, f"not a JSON file ({str(exc).splitlines()[0][:80]})") from None
    if not isinstance(d, dict) or d.get("kind") != RESULT_KIND:
        raise _field(
            path,
            f"'kind' is not {RESULT_KIND!r}: not a result of a DynaBERT Studio device kit",
            "give the latency-<device>.json that run_kit.py wrote",
        )
    setup, rows = d.get("setup"), d.get("rows")
    if not isinstance(setup, dict) or not isinstance(setup.get("device"), str) or not setup["device"].strip():
        raise _field(path, "'setup.device' is missing")
    if not isinstance(rows, list) or not rows:
        raise _field(path, "'rows' is empty")
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or not isinstance(r.get("label"), str) or not isinstance(r.get("values"), dict):
            raise _field(path, f"rows[{i}] lacks 'label' or 'values'")
        for k, v in r["values"].items():
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise _field(path, f"rows[{i}].values.{k} = {v!r} is not a time or size")
    return d


def import_device_latency(project: ProjectStore, path: Path, device: str | None = None) -> str:
    """Merge a kit's result file into latency.json under its device's name (or `device`); returns the name."""
    d = read_device_latency(path)
    name = (device or d["setup"]["device"]).strip()
    is_shape = [r["label"] == BASE_LABEL or parse_shape_label(r["label"]) is not None for r in d["rows"]]
    shape_rows = [r for r, s in zip(d["rows"], is_shape) if s]
    d = {**d, "rows": [r for r, s in zip(d["rows"], is_shape) if not s]}
    layers = d.get("shape_layers")
    if shape_rows and (not isinstance(layers, int) or layers < 1):
        raise _field(Path(path), "'shape_layers' is missing though the file has layer-shape rows")
    grid = {
        f"w{w:g}_d{dd:g}"
        for w, dd in (
            (r["width_mult"], r["depth_mult"])
            for r in d["rows"]
            if isinstance(r.get("width_mult"), (int, float)) and isinstance(r.get("depth_mult"), (int, float))
        )
    }
    unknown = [r["label"] for r in d["rows"] if r["label"] not in grid]
    if unknown:
        raise _field(Path(path), f"rows {unknown} lack width_mult/depth_mult or do not match their label")
    latency = project.load_latency() or {}
    devices = dict(latency.get("devices", {}))
    before = devices.get(name, {})
    setup = {**d["setup"], "imported": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "kit": d.get("kit")}
    if not d["rows"] and before.get("rows"):  # a shapes-only kit keeps the cells an earlier kit timed
        d = {**d, "rows": before["rows"]}
    devices[name] = {
        "setup": setup,
        "rows": [
            {"label": r["label"], "width_mult": r["width_mult"], "depth_mult": r["depth_mult"], "values": r["values"]}
            for r in d["rows"]
        ],
    }
    if shape_rows:
        devices[name][SHAPES_KEY] = {"setup": setup, "layers": layers, "rows": shape_rows}
    elif SHAPES_KEY in before:
        devices[name][SHAPES_KEY] = before[SHAPES_KEY]
    project.save_latency({**latency, "devices": devices})
    return name
