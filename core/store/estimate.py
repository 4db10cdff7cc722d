"""The whole-pipeline time estimate as estimate.json holds it (read without torch), and the clock that corrects it
during a run from the steps' own times; core.estimate measures this machine and writes the file."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..config import STAGES
from .files import atomic_write_text, main_process_writes

ESTIMATE_FILE = "estimate.json"
ESTIMATE_VERSION = 1
# settings that change what a run learns but not how long it takes
_TIMELESS = {"profile", "seed", "teacher_lr", "width_lr", "depth_lr", "subnet_lr", "weight_decay", "warmup_frac"}
_TIMELESS |= {"width_l1", "depth_l1", "report_to"}


def machine() -> dict:
    """What sets how fast this machine trains, as far as a process without torch can tell (torch takes its
    default thread count from the CPUs this process may use; OMP_NUM_THREADS overrides it)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    return {
        "cpus": os.cpu_count() or 1,
        "usable_cpus": usable,
        "omp_threads": os.environ.get("OMP_NUM_THREADS"),
        "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def estimate_key(project) -> str:
    """Everything an estimate depends on: the settings that set the step counts and the step costs, the row counts,
    the model and this machine. A cached estimate with another key is stale and is measured again."""
    cfg = project.config
    train = {k: v for k, v in asdict(cfg.train).items() if k not in _TIMELESS}
    try:
        task = project.task()
        rows = [task.train_rows, task.dev_rows]
    except Exception:  # noqa: BLE001  (a missing task.json: the estimate itself will say why)
        rows = None
    key = {
        "version": ESTIMATE_VERSION,
        "model": cfg.model,
        "finetuned": cfg.model_is_finetuned,
        "data": asdict(cfg.data),
        "train": train,
        "teacher_lr_trial": cfg.train.teacher_lr is None,  # a trial and a race of whole teachers take longer
        "rows": rows,
        "machine": machine(),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=list).encode()).hexdigest()[:24]


def stages_to_run(project, until: str | None = None) -> list[str]:
    """The stages a run would run, in order (core.stages.pending_stages, and the studio, ask here): a stage is
    redone when it did not finish or its output is gone, and so is every stage after it."""
    last = STAGES.index(until) if until in STAGES else len(STAGES) - 1
    out: list[str] = []
    for s in STAGES[: last + 1]:
        if out or not project.is_done(s) or project.missing_output(s) is not None:
            out.append(s)
    return out


@dataclass(frozen=True)
class StageEstimate:
    """One stage: its steps (training steps, or rewire's batches), what each costs, and its fixed costs.

    seconds = steps * step_seconds + evals * eval_seconds + checkpoints * checkpoint_seconds + fixed_seconds"""

    stage: str
    steps: int = 0
    steps_per_epoch: int = 0  # a dev evaluation follows every this many steps, and the last step
    evals: int = 0
    checkpoints: int = 0
    checkpoint_every: int = 0
    step_seconds: float = 0.0
    eval_seconds: float = 0.0
    checkpoint_seconds: float = 0.0
    fixed_seconds: float = 0.0  # loading and saving the models, the teacher's check
    skipped: bool = False

    @property
    def seconds(self) -> float:
        return (
            self.steps * self.step_seconds
            + self.evals * self.eval_seconds
            + self.checkpoints * self.checkpoint_seconds
            + self.fixed_seconds
        )

    def evals_after(self, step: int) -> int:
        """Dev evaluations still to come once `step` steps are done (one per epoch end, and one at the last step)."""
        if self.steps_per_epoch <= 0 or self.steps <= 0:
            return 0
        ends = set(range(self.steps_per_epoch, self.steps + 1, self.steps_per_epoch)) | {self.steps}
        return sum(1 for e in ends if e > step)

    def checkpoints_after(self, step: int) -> int:
        """Mid-stage checkpoints still to come once `step` steps are done (every checkpoint_every steps)."""
        if self.checkpoint_every <= 0 or self.steps <= 0:
            return 0
        return max(0, (self.steps - 1) // self.checkpoint_every - step // self.checkpoint_every)


@dataclass(frozen=True)
class Estimate:
    """How long each stage of the pipeline takes on this machine, measured at `measured_at` (None: counted only)."""

    key: str
    stages: tuple[StageEstimate, ...]
    measured_at: float | None = None
    threads: int | None = None
    device: str = "cpu"
    precision: str = "fp32"
    startup_seconds: float = 0.0  # reading the encoded task once per run
    timing: dict = field(default_factory=dict)  # the measured unit costs, for whoever wants to check the model

    def stage(self, name: str) -> StageEstimate | None:
        return next((s for s in self.stages if s.stage == name), None)

    def seconds(self, stages: Iterable[str]) -> float:
        """The predicted time of `stages` (the ones a run would run: stages_to_run), startup included."""
        names = list(stages)
        found = [s for s in (self.stage(n) for n in names) if s is not None]
        return sum(s.seconds for s in found) + (self.startup_seconds if names else 0.0)

    def where(self) -> str:
        """ "timed 12:03, 2 threads" (on a GPU: "timed 12:03 on cuda, bf16")."""
        when = time.strftime("%H:%M", time.localtime(self.measured_at)) if self.measured_at else "not timed"
        if self.measured_at and time.time() - self.measured_at > 20 * 3600:
            when = time.strftime("%d %b %H:%M", time.localtime(self.measured_at))
        if self.device.startswith("cuda"):
            return f"timed {when} on {self.device}, {self.precision}"
        n = self.threads or 1
        return f"timed {when}, {n} thread{'s' if n != 1 else ''}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["version"] = ESTIMATE_VERSION
        d["stages"] = [asdict(s) for s in self.stages]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @staticmethod
    def from_dict(d: dict) -> Estimate:
        names = {f.name for f in fields(StageEstimate)}
        stages = tuple(StageEstimate(**{k: v for k, v in s.items() if k in names}) for s in d.get("stages", ()))
        top = {f.name for f in fields(Estimate)} - {"stages"}
        return Estimate(stages=stages, **{k: v for k, v in d.items() if k in top})


def estimate_path(project) -> Path:
    return Path(project.root) / ESTIMATE_FILE


def read_estimate(project) -> Estimate | None:
    """The estimate saved in the project, whatever settings it was made with; None when there is none or it is
    unreadable (a broken file is measured again, never trusted)."""
    path = estimate_path(project)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        if d.get("version") != ESTIMATE_VERSION:
            return None
        return Estimate.from_dict(d)
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return None


def current_estimate(project) -> Estimate | None:
    """The saved estimate when it was made with the project's present settings on this machine, else None."""
    est = read_estimate(project)
    return est if est is not None and est.key == estimate_key(project) and est.measured_at else None


@main_process_writes
def save_estimate(project, estimate: Estimate) -> None:
    atomic_write_text(estimate_path(project), estimate.to_json())


def about(seconds: float) -> str:
    """A duration as people say it: "under a minute", "about 7 min", "about 1 h 20 min"."""
    if seconds < 60:
        return "under a minute"
    minutes = seconds / 60
    if minutes < 59.5:
        return f"about {max(1, int(minutes + 0.5))} min"  # half up, as people round (Python's round(2.5) is 2)
    h, m = divmod(5 * int(minutes / 5 + 0.5), 60)
    return f"about {h} h {m} min" if m else f"about {h} h"


# ---- during a run ---------------------------------------------------------------------------------
RATIO_BOUNDS = (0.25, 4.0)
MIN_INTERVALS = 3  # without an estimate, a stage's own step rate is trusted once this many steps were timed
PRIOR_STEPS = 3  # the estimate counts as this many steps' evidence: the first steps move the figure a little, not 2x
STEPLESS = ("rewire", "evaluate")  # stages that report batches or sub-networks done, not training steps


class RunClock:
    """The whole pipeline's time left during a run: the current stage's remaining steps at the rate observed since
    it started, plus the stages after it as estimated, scaled by how much slower (or faster) than estimated the run
    has been so far (observed / predicted seconds of every step timed in this run), so a busier machine than the one
    timed corrects itself. Rates are means over every step since the stage started, so the figure does not wobble.

    Feed it the run's events (started, stepped, progressed, ended); `left()` is None while nothing can be said."""

    def __init__(self, estimate: Estimate | None, stages: Sequence[str]):
        self.estimate = estimate
        self.stages = list(stages)  # what this run runs, in order
        self.ended_stages: set[str] = set()
        self.current: str | None = None
        self.step = 0
        self.total = 0
        self.fraction = 0.0  # of a stage without steps (rewire, evaluate)
        self._last: tuple[int, float, int] | None = None  # (step, at, epoch) of the stage's last step seen
        self._stage_time = 0.0  # this stage's timed step intervals (an evaluation or a checkpoint between excluded)
        self._stage_n = 0
        self._ratios = 0.0  # the sum of observed / predicted over the run's timed steps (and finished stepless stages)
        self._timed = 0  # how many

    def _est(self, stage: str | None) -> StageEstimate | None:
        return self.estimate.stage(stage) if self.estimate is not None and stage else None

    def started(self, stage: str, total: int, resumed_from: int = 0) -> None:
        self.current, self.step, self.total, self.fraction = stage, resumed_from, total, 0.0
        self._last, self._stage_time, self._stage_n = None, 0.0, 0
        if stage not in self.stages:
            self.stages.append(stage)

    def stepped(self, stage: str, step: int, total: int, epoch: int, at: float) -> None:
        if stage != self.current:
            self.started(stage, total, max(0, step - 1))
        est = self._est(stage)
        last = self._last
        if last is not None and step == last[0] + 1 and at >= last[1]:
            every = est.checkpoint_every if est is not None else 0
            evaluated = epoch != last[2]  # the previous step ended an epoch: the dev evaluation ran in between
            checkpointed = every > 0 and last[0] % every == 0
            if not evaluated and not checkpointed:
                self._stage_time += at - last[1]
                self._stage_n += 1
                if est is not None and est.step_seconds > 0:
                    self._ratios += (at - last[1]) / est.step_seconds
                    self._timed += 1
        self._last = (step, at, epoch)
        self.step, self.total = step, total

    def progressed(self, stage: str, done: int, total: int) -> None:
        if stage != self.current:
            self.started(stage, 0)
        self.fraction = done / total if total else 0.0

    def ended(self, stage: str, seconds: float, skipped: bool = False) -> None:
        est = self._est(stage)
        # a stage without steps (rewire, evaluate) tells the run's pace by its whole time
        if est is not None and not skipped and est.seconds > 0 and stage in STEPLESS:
            self._ratios += PRIOR_STEPS * seconds / est.seconds  # as much evidence as the prior: it is a whole stage
            self._timed += PRIOR_STEPS
        self.ended_stages.add(stage)
        if stage == self.current:
            self.current = None

    def ratio(self) -> float:
        """How much longer than estimated this run's steps take, observed / predicted: the mean over every step
        timed so far, drawn towards 1 (the estimate) by PRIOR_STEPS steps' worth, so that it settles rather than
        jumps."""
        lo, hi = RATIO_BOUNDS
        return min(hi, max(lo, (self._ratios + PRIOR_STEPS) / (self._timed + PRIOR_STEPS)))

    def stage_left(self) -> float | None:
        """The current stage's time left, or None."""
        if self.current is None:
            return None
        est = self._est(self.current)
        r = self.ratio()
        if self.current in STEPLESS or self.total <= 0:
            return None if est is None else est.seconds * r * (1.0 - self.fraction)
        if est is not None:  # this stage's mean step, drawn towards the (corrected) estimate like the ratio
            per = (self._stage_time + PRIOR_STEPS * est.step_seconds * r) / (self._stage_n + PRIOR_STEPS)
        elif self._stage_n >= MIN_INTERVALS:
            per = self._stage_time / self._stage_n
        else:
            return None
        left = (self.total - self.step) * per
        if est is not None:
            left += est.evals_after(self.step) * est.eval_seconds * r
            left += est.checkpoints_after(self.step) * est.checkpoint_seconds * r
        return left

    def left(self) -> float | None:
        """The whole run's time left: None without an estimate, or before the current stage can be timed."""
        if self.estimate is None:
            return None
        r = self.ratio()
        later = (self._est(s) for s in self.stages if s != self.current and s not in self.ended_stages)
        rest = sum(e.seconds for e in later if e is not None) * r
        if self.current is None:
            return rest
        now = self.stage_left()
        return None if now is None else now + rest
