"""What each registered job takes and gives back, as plain dataclasses that travel as JSON to a job's child process.

Light on purpose (no torch): the studio builds requests and reads results without loading the engine.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field

from .config import ProjectConfig

MIN_AGREEMENT = 0.99  # INT8/fp16 pass only when at least this share of dev predictions match PyTorch


# how the INT8 formats quantize each MatMul's input. onnx-int8 and ort-int8: a range per token (the default) or one
# per tensor (onnxruntime's dynamic quantization: faster, further from fp32); export/quantize.py has both,
# bench/int8_paths.py compares them. openvino-int8: a range per token's group of channels, computed by OpenVINO's CPU
# plugin on the fly (the default), or static ranges calibrated on train rows by NNCF (bench/openvino_int8.py).
INT8_METHODS_BY_FORMAT = {
    "onnx-int8": ("per-token", "dynamic"),
    "ort-int8": ("per-token", "dynamic"),
    "openvino-int8": ("per-token", "static"),
}
INT8_METHODS = ("per-token", "dynamic", "static")  # every format's, the default first


@dataclass(frozen=True)
class StageRequest:
    """A stage job takes no options: everything comes from the project's settings."""


@dataclass(frozen=True)
class RunRequest:
    until: str | None = None  # the last stage to run; None = to the end
    # each stage in its own child process (core.stageproc); the `dynastudio run` command asks for it
    stage_processes: bool = False


@dataclass(frozen=True)
class StageRunRequest:
    """One stage of a run, in the child process the run started for it (core.stageproc)."""

    stage: str = ""


@dataclass(frozen=True)
class RunResult:
    ran: tuple[str, ...]


@dataclass(frozen=True)
class EstimateRequest:
    again: bool = False  # time this machine again even when the saved estimate still fits the settings


@dataclass(frozen=True)
class CreateRequest:
    """`create` is the one job without a project yet: its `project` argument is the folder to create."""

    config: ProjectConfig
    overwrite: bool = False


@dataclass(frozen=True)
class TableSummaryRequest:
    """One data file read as the loader reads it, summarized for the new-project form (see table_summary_job)."""

    path: str
    text_columns: tuple[str, ...]
    label_column: str
    label_names: tuple[str, ...] | None = None  # the train file's label set, when this is the dev file
    regression: bool | None = None
    preview_rows: int = 20


@dataclass(frozen=True)
class LatencyRequest:
    """How to time every grid sub-network: shapes, threads, formats, runs. seq None = the project's max_seq_length."""

    batch: int = 1
    seq: int | None = None
    threads: int = 1
    formats: tuple[str, ...] = ("fp32",)
    runs: int = 50
    warmup: int = 10
    specs: tuple[tuple[float, float], ...] | None = None  # (width, depth) pairs; None = the project's grid
    runtime: str = "onnxruntime"  # or "openvino": the same ONNX files timed with OpenVINO (kept as its own device)
    # time the per-layer shape table a search predicts latency from (store/shapes.py) instead of the grid's cells
    shapes: bool = False


@dataclass(frozen=True)
class SearchRequest:
    """A search for the best sub-network of any shape within `budget_ms` on a device (None: this machine)."""

    budget_ms: float = 0.0
    device: str | None = None
    precision: str = "fp32"
    generations: int = 12
    population: int = 20
    rows: int = 1000  # train rows no stage trained on, each shape is scored on
    seed: int = 0
    measure: bool = True  # on this machine: time the best shapes for real and keep the best that fits


@dataclass(frozen=True)
class ExportRequest:
    """One sub-network, a format or a target preset (see FORMATS, PRESETS), and the folder to create."""

    width_mult: float
    depth_mult: float
    target: str  # a format name or a target preset name
    out_dir: str
    overwrite: bool = False
    model_name: str | None = None  # default: the most trained model of the project
    min_agreement: float = MIN_AGREEMENT
    agreement_rows: int | None = 5000  # dev rows the INT8/fp16 agreement is measured on (None = all)
    trim_vocab: bool | None = None  # keep only the task's tokens; None = what the target preset says
    keep_words: str | None = None  # a word list (one per line) whose tokens trimming keeps too
    int8_method: str = "per-token"  # how INT8 formats quantize each MatMul's input: one of INT8_METHODS
    searched: str | None = None  # a searched point's label (search.json): export that shape, not width x depth


@dataclass(frozen=True)
class DeviceKitRequest:
    """A folder to carry to a device: the sub-networks' ONNX files and a runner that times them there."""

    out_dir: str
    cells: tuple[tuple[float, float], ...] | None = None  # (width, depth) pairs; None = the project's grid
    formats: tuple[str, ...] = ("fp32", "int8")
    overwrite: bool = False
    shapes: bool = False  # also the per-layer shape models `dynastudio search --device` predicts latency from


@dataclass
class ExportReport:
    """What `export` wrote and how well it matches PyTorch (also saved as verification.json)."""

    path: str
    format: str
    target: str | None
    width_mult: float
    depth_mult: float
    max_abs_diff: float
    agreement: float | None  # fraction of dev examples with the same prediction (int8/fp16); None if not measured
    passed: bool  # every check held; False = written, but marked failed in verification.json and README.md
    failure: str | None  # why it failed, one line
    dev_examples: int
    size_mb: float  # the model file(s) only
    files: dict = field(default_factory=dict)  # file name -> bytes
    verification: dict = field(default_factory=dict)


# ---- as JSON ------------------------------------------------------------------------------------
def request_to_json(request) -> str:
    d = {}
    for f in dataclasses.fields(request):
        v = getattr(request, f.name)
        d[f.name] = json.loads(v.to_json()) if isinstance(v, ProjectConfig) else v
    return json.dumps({"type": type(request).__name__, **d})


def request_from_json(text: str, request_type: type):
    d = json.loads(text)
    if d.pop("type", request_type.__name__) != request_type.__name__:
        raise ValueError(f"the request is not a {request_type.__name__}")
    kwargs = {}
    for f in dataclasses.fields(request_type):
        if f.name in d:
            v = d[f.name]
            if f.name == "config" and request_type is CreateRequest:
                v = ProjectConfig.from_json(json.dumps(v), "the create request")
            kwargs[f.name] = _tuples(v)
    return request_type(**kwargs)


def _tuples(v):
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def result_to_json(result):
    """A job's result as plain JSON: dataclasses as dicts; a Project as its folder."""
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return asdict(result)
    root = getattr(result, "root", None)
    if root is not None:
        return {"root": str(root)}
    return result
