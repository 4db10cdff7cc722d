"""The fixed set of events a job reports, and the stop token it checks between steps."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Protocol

from .errors import Cancelled


@dataclass(frozen=True)
class StageStarted:
    stage: str
    total_steps: int
    resumed_from_step: int = 0


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
    losses: dict  # sub-network label ("w0.75_d1.0" or "full") -> float
    lr: float
    epoch: int


@dataclass(frozen=True)
class EvalEnded:
    stage: str
    step: int
    metric_name: str
    results: dict  # sub-network label -> metric value


@dataclass(frozen=True)
class ImportanceReady:
    head_importance: list  # [layers][heads] floats, before rewiring (original order)
    neuron_importance: list  # [layers][neurons] floats, before rewiring


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
    agreement: float | None = None


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


def fanout(*sinks: Callable[[Event], None]) -> Callable[[Event], None]:
    def sink(event: Event) -> None:
        for s in sinks:
            s(event)

    return sink


@dataclass(frozen=True)
class LatencyMeasured:
    """One sub-network measured by the latency job (index of total), with its row's new values."""

    label: str
    width_mult: float
    depth_mult: float
    values: dict  # latency_fp32_ms, latency_fp32_p90_ms, size_onnx_fp32_mb, ... as written to results.json
    index: int
    total: int
