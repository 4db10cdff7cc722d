"""What is on disk, read without torch: the project folder and its state, task info, the results grid as typed rows.

The studio, the CLI and the engine read a project's files through this package; it imports no torch,
transformers, safetensors.torch or onnxruntime (an import-linter contract keeps it so). core.project.Project
builds on ProjectStore with what needs torch: models, checkpoints, importance tensors.
"""

from __future__ import annotations

from .devices import RESULT_KIND, import_device_latency, read_device_latency
from .files import atomic_target, atomic_write_bytes, atomic_write_text, is_main_process, main_process_writes
from .folder import PROJECT_FILE, STATE_FILE, ProjectStore, final_model_name
from .grid import (
    ANY_LATENCY,
    BUDGET_PRECISIONS,
    EXPORT_FORMAT_OF,
    FLOPS_AXIS,
    LATENCY_PRECISIONS,
    Figures,
    Grid,
    GridRow,
    Point,
    axis_precision,
    best_under,
    best_under_budget,
    grid_points,
    latency_axis,
    pareto_front,
)
from .task import TASK_FILE, TaskInfo, read_task

__all__ = [
    "ANY_LATENCY",
    "BUDGET_PRECISIONS",
    "RESULT_KIND",
    "EXPORT_FORMAT_OF",
    "FLOPS_AXIS",
    "LATENCY_PRECISIONS",
    "PROJECT_FILE",
    "STATE_FILE",
    "TASK_FILE",
    "Figures",
    "Grid",
    "GridRow",
    "Point",
    "ProjectStore",
    "TaskInfo",
    "atomic_target",
    "atomic_write_bytes",
    "atomic_write_text",
    "axis_precision",
    "best_under",
    "best_under_budget",
    "final_model_name",
    "grid_points",
    "import_device_latency",
    "read_device_latency",
    "is_main_process",
    "latency_axis",
    "main_process_writes",
    "pareto_front",
    "read_task",
]
