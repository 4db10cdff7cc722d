"""The fixed set of events a job reports, and the stop token it checks between steps."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

from .errors import Cancelled


@dataclass(frozen=True)
class StageStarted:
    """A stage began: `total_steps` optimizer steps (training) or units of work (batches, sub-networks)."""

    stage: str
    total_steps: int
    resumed_from_step: int = 0


@dataclass(frozen=True)
class StageProgress:
    """Progress of a stage that does not train (rewire batches, evaluate / latency sub-networks, export steps)."""

    stage: str
    done: int
    total: int


@dataclass(frozen=True)
class StageEnded:
    stage: str
    seconds: float
    skipped: bool = False


@dataclass(frozen=True)
class StepEnded:
    stage: str
    step: int
    total_steps: int
    losses: dict[str, float]  # sub-network label ("w0.75_d1") -> loss
    lr: float
    epoch: int


@dataclass(frozen=True)
class EvalEnded:
    stage: str
    step: int
    metric_name: str
    results: dict[str, float]  # sub-network label -> metric value
    chance: float | None = None  # what always predicting the majority class (or the mean) scores: the floor to beat


@dataclass(frozen=True)
class ImportanceReady:
    head_importance: list[list[float]]  # [layers][heads], before rewiring (original order)
    neuron_importance: list[list[float]]  # [layers][neurons], before rewiring


@dataclass(frozen=True)
class CheckpointSaved:
    stage: str
    step: int
    path: str


@dataclass(frozen=True)
class ExportDone:
    path: str
    format: str
    max_abs_diff: float
    agreement: float | None  # dev prediction agreement with PyTorch (INT8/fp16), None when not measured
    passed: bool  # False: the export was written but failed its check (see its verification.json)


@dataclass(frozen=True)
class LogMessage:
    text: str
    level: str = "info"


Event = object


class EventSink(Protocol):
    def __call__(self, event: Event) -> None: ...


def null_sink(event: Event) -> None:
    """Default sink: drops everything."""


@dataclass
class EventLog:
    """A sink that keeps every event; handy in tests and in the CLI."""

    events: list = field(default_factory=list)

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


class StopToken:
    """Set from any thread; jobs call `check()` between steps and raise Cancelled."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled("stopped by request")


@dataclass(frozen=True)
class FormatLatency:
    format: str  # fp32, int8, fp16
    median_ms: float
    p90_ms: float
    size_mb: float


@dataclass(frozen=True)
class LatencyMeasured:
    """One sub-network measured by the latency job (index of total)."""

    label: str
    width_mult: float
    depth_mult: float
    formats: tuple[FormatLatency, ...]
    index: int
    total: int
