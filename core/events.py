"""The fixed set of events a job reports, and the stop token it checks between steps."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

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
    at: float = field(default_factory=time.time)  # wall clock when the step ended: ETAs stay right when replayed


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
class TeacherChecked:
    """After fine-tuning: the teacher's dev score against always predicting the majority class (or the mean).
    `clearly_better` False means distilling it is a waste of time; `advice` then says what to change."""

    metric_name: str
    score: float
    constant: float  # what the constant prediction scores on dev
    margin_low: float  # one-sided 95 % bootstrap lower bound of score - constant
    clearly_better: bool
    advice: str = ""


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


# ---- a run in a child process: its start and end, and the answer to a stop request ---------------
@dataclass(frozen=True)
class RunStarted:
    """First event of a run: who runs it, so a front end can follow it, stop it, or tell it is gone."""

    run_id: str
    job: str  # the registered job name ("run", a stage)
    pid: int  # the process that holds the project's run lock (rank 0 under torchrun)
    host: str
    started: float  # time.time()
    command: str = ""
    launch_id: str | None = None  # set by the front end that launched the process, so it knows its own run
    launcher_pid: int | None = None  # torchrun's own process, when the run has several
    pids: tuple[int, ...] = ()  # every process of the run (rank order)
    world_size: int = 1
    hosts: tuple[str, ...] = ()  # the host of each of `pids` (empty in runs of engines before 0.4: all on `host`)


@dataclass(frozen=True)
class StopAcknowledged:
    """The run saw a stop request and will stop after its current step, saving a checkpoint."""

    source: str  # "studio" (the project's stop file), "signal"


@dataclass(frozen=True)
class RunEnded:
    """Last event of a run. outcome: done, stopped or failed (message: the one-line error; internal
    errors also leave their traceback in the run's log)."""

    run_id: str
    outcome: str
    message: str = ""
    seconds: float = 0.0
    ran: tuple[str, ...] = ()
    internal: bool = False  # failed by a bug, not by a user's mistake


@dataclass(frozen=True)
class JobEnded:
    """Last line a job child process writes on stdout: how it ended and its result as JSON."""

    outcome: str  # done, stopped, failed
    result: Any = None
    message: str = ""
    internal: bool = False
    traceback: str = ""


# ---- events as JSON lines -----------------------------------------------------------------------
EVENT_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        StageStarted,
        StageProgress,
        StageEnded,
        StepEnded,
        EvalEnded,
        ImportanceReady,
        CheckpointSaved,
        ExportDone,
        LogMessage,
        LatencyMeasured,
        RunStarted,
        StopAcknowledged,
        RunEnded,
        JobEnded,
        TeacherChecked,
    )
}


def event_to_json(event) -> str:
    """One line of JSON: {"event": <class name>, <fields>}."""
    name = type(event).__name__
    if name not in EVENT_TYPES:
        raise TypeError(f"{name} is not an event type")
    return json.dumps({"event": name, **dataclasses.asdict(event)}, separators=(",", ":"))


def event_from_json(line: str | dict):
    """The event a line of `event_to_json` describes; None for a line that is not one (torn, unknown kind).

    Fields this version does not know are dropped and missing ones take their defaults, so a front end
    can follow a run of a slightly newer or older engine."""
    try:
        rec = json.loads(line) if isinstance(line, str) else line
        cls = EVENT_TYPES[rec["event"]]
    except (ValueError, KeyError, TypeError):
        return None
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in rec:
            kwargs[f.name] = _restore(cls, f.name, rec[f.name])
    try:
        return cls(**kwargs)
    except TypeError:
        return None


def _restore(cls: type, name: str, value):
    if cls is JobEnded:
        return value  # a job's result is plain JSON, read as such
    if cls is LatencyMeasured and name == "formats":
        return tuple(FormatLatency(**v) for v in value)
    if isinstance(value, list) and cls is not ImportanceReady and name not in ("head_importance", "neuron_importance"):
        return tuple(value)  # tuples in the dataclasses travel as JSON lists
    return value
