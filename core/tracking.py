"""A run's losses, learning rate, dev metrics, settings and final grid, also sent to TensorBoard and/or MLflow.

`train.report_to` names the trackers. The subscriber sits on the job's event stream next to metrics.jsonl's
(core.stages) and reads only the events and the project's files: the training loop does not know it is there.

Each stage is a run of its own in both tools (TensorBoard: PROJECT/tensorboard/<n>-<stage>/; MLflow: a run named
after the stage in the project's experiment), because each stage has its own step axis, its own sub-networks and
its own learning-rate schedule, and a stage stopped and resumed continues its own run. Tags are the same in both:
  loss/<sub-network>   per optimizer step          lr                    per optimizer step
  dev/<metric>/<sub-network>, dev/chance           per epoch (at that epoch's last step)
  teacher/<metric>, teacher/constant               once, after the teacher is fine-tuned
  grid/<metric>/<sub-network>, grid/chance         once, the evaluate stage's final grid (also a table)
  stage/seconds                                    once, when the stage ends
plus the project's settings as hyper-parameters (TensorBoard's HPARAMS tab, MLflow's parameters).

Only the main process writes (under torchrun, rank 0). A tracker that fails while training (a full disk, a
tracking server gone) is dropped with one warning and the training goes on; a missing package is refused before
the run starts.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .config import STAGES, ProjectConfig, report_targets
from .errors import Cancelled, ConfigError, UserError
from .events import EvalEnded, LogMessage, StageEnded, StageStarted, StepEnded, TeacherChecked

TENSORBOARD_DIR = "tensorboard"
MLRUNS_DIR = "mlruns"
# tracker -> (the module that must import, the extra that installs it)
PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow")}


def require(report_to: str) -> tuple[str, ...]:
    """The trackers `report_to` names, after checking their packages import: a one-line error naming the pip
    command otherwise. Called before a run takes the project, so a missing package never stops a run half-way."""
    names = report_targets(report_to)
    for name in names:
        module, extra = PACKAGES[name]
        try:
            importlib.import_module(module)
        except ImportError:
            raise ConfigError(
                f"train.report_to names {name}, whose package is not installed: "
                f"pip install 'dynabert-studio[{extra}]' (or run with --report-to none)"
            ) from None
    return names


def missing(report_to: str) -> list[str]:
    """The pip commands the trackers `report_to` names still need here (empty when all import)."""
    out = []
    for name in report_targets(report_to):
        module, extra = PACKAGES[name]
        if not _installed(module):
            out.append(f"pip install 'dynabert-studio[{extra}]'")
    return out


def _installed(module: str) -> bool:
    """Whether `module` would import, without importing it (mlflow takes a second or more)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # in sys.modules without a spec: None there means "blocked"
        return sys.modules.get(module) is not None


def tensorboard_dir(root: Path) -> Path:
    return Path(root) / TENSORBOARD_DIR


def mlflow_uri(root: Path) -> str:
    """MLFLOW_TRACKING_URI when set (a team's server), else a file store in the project folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or (Path(root) / MLRUNS_DIR).resolve().as_uri()


def run_name(stage: str) -> str:
    """A stage's TensorBoard run: numbered so that TensorBoard's run list (sorted by name) reads in pipeline order."""
    return f"{STAGES.index(stage) + 1}-{stage}" if stage in STAGES else stage


def hyperparameters(config: ProjectConfig) -> dict[str, str | int | float | bool]:
    """The project's settings, flat (`train.width_lr`, `data.kind`, `model`): values both tools accept."""
    flat: dict[str, Any] = {"model": config.model, "model_is_finetuned": config.model_is_finetuned}
    for part in ("data", "train"):
        for k, v in vars(getattr(config, part)).items():
            flat[f"{part}.{k}"] = v
    out: dict[str, str | int | float | bool] = {}
    for k, v in flat.items():
        if isinstance(v, tuple):
            v = ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
        out[k] = "none" if v is None else v
    return out


def grid_table(results: dict) -> str:
    """The final grid as a markdown table (TensorBoard's TEXT tab, an MLflow artifact)."""
    metric = results.get("metric", "metric")
    lines = [f"| sub-network | width | depth | {metric} | params (M) | FLOPs (rel) |", "|---|---|---|---|---|---|"]
    for r in results.get("rows", []):
        value, params, flops = r.get("value"), r.get("total_params"), r.get("flops_rel")
        cells = [
            r.get("label"),
            r.get("width_mult"),
            r.get("depth_mult"),
            "" if value is None else f"{value:.4f}",
            "" if params is None else f"{params / 1e6:.2f}",
            "" if flops is None else f"{flops:.3f}",
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


# ---- the subscriber -----------------------------------------------------------------------------------------
class Tracker:
    """An event sink: passes every event on to `events`, and logs what it carries to each tracker's run of the
    stage. A tracker's run of a stage opens at the stage's first value (a skipped stage opens none)."""

    def __init__(self, project, events, names: tuple[str, ...]):
        self.project = project
        self.events = events
        self.config: ProjectConfig = project.config
        try:
            self.metric = project.task().metric
        except UserError:
            self.metric = "metric"
        self.backends: dict[str, Any] = {}
        for name in names:
            self.backends[name] = _BACKENDS[name](self)  # may raise a one-line error: before anything trains
        self._started: dict[str, int] = {}  # stage -> step it resumed from
        self._open: set[str] = set()

    def __call__(self, event) -> None:
        self.events(event)
        if isinstance(event, StageStarted):
            self._started[event.stage] = event.resumed_from_step
        elif isinstance(event, StepEnded):
            values = {f"loss/{k}": float(v) for k, v in event.losses.items()}
            values["lr"] = float(event.lr)
            self._log(event.stage, "scalars", values, event.step)
        elif isinstance(event, EvalEnded):
            prefix = "grid" if event.stage == "evaluate" else "dev"
            values = {f"{prefix}/{event.metric_name}/{k}": float(v) for k, v in event.results.items()}
            if event.chance is not None:
                values[f"{prefix}/chance"] = float(event.chance)
            self._log(event.stage, "scalars", values, event.step)
        elif isinstance(event, TeacherChecked):
            values = {f"teacher/{event.metric_name}": event.score, "teacher/constant": event.constant}
            self._log("finetune", "scalars", values, 0)
        elif isinstance(event, StageEnded):
            if not event.skipped:
                self._log(event.stage, "scalars", {"stage/seconds": float(event.seconds)}, 0)
            if event.stage == "evaluate" and not event.skipped:
                results = self._results()
                if results is not None:
                    self._log(event.stage, "grid", results, 0)
            self._close_stage(event.stage, "FINISHED")

    def _results(self) -> dict | None:
        path = self.project.results_path
        try:
            return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        except (OSError, ValueError):
            return None

    def _log(self, stage: str, kind: str, payload, step: int) -> None:
        for name, backend in list(self.backends.items()):
            try:
                if stage not in self._open:
                    backend.open_stage(stage, self._started.get(stage, 0))
                getattr(backend, kind)(stage, payload, step)
            except Exception as exc:  # noqa: BLE001  (a tracker's trouble never ends a training)
                self._drop(name, exc)
        self._open.add(stage)

    def _close_stage(self, stage: str, status: str) -> None:
        if stage not in self._open:
            return
        self._open.discard(stage)
        for name, backend in list(self.backends.items()):
            try:
                backend.close_stage(stage, status)
            except Exception as exc:  # noqa: BLE001
                self._drop(name, exc)

    def _drop(self, name: str, exc: Exception) -> None:
        backend = self.backends.pop(name, None)
        self.events(
            LogMessage(f"{name}: stopped logging ({type(exc).__name__}: {exc}); the training goes on", "warning")
        )
        if backend is not None:
            try:
                backend.close("FAILED")
            except Exception:  # noqa: BLE001  (already reported above)
                pass

    def close(self, status: str = "FINISHED") -> None:
        """End every open stage run: FINISHED, KILLED (stopped: resuming continues it) or FAILED."""
        for stage in list(self._open):
            self._close_stage(stage, status)
        for name, backend in list(self.backends.items()):
            try:
                backend.close(status)
            except Exception as exc:  # noqa: BLE001
                self._drop(name, exc)
        self.backends.clear()


@contextmanager
def subscribed(project, events) -> Iterator:
    """`events`, with the trackers of `project.config.train.report_to` subscribed for the job's length (the same
    sink when none is named, when `events` already carries them, or in a process that does not write)."""
    names = require(project.config.train.report_to)  # on every process: they all refuse alike
    if not names or isinstance(events, Tracker) or not _is_main():
        yield events
        return
    tracker = Tracker(project, events, names)
    status = "FAILED"
    try:
        yield tracker
        status = "FINISHED"
    except (Cancelled, KeyboardInterrupt):
        status = "KILLED"
        raise
    finally:
        tracker.close(status)


def _is_main() -> bool:
    from .store import is_main_process

    return is_main_process()


# ---- TensorBoard ------------------------------------------------------------------------------------------
class _TensorBoard:
    def __init__(self, tracker: Tracker):
        from torch.utils.tensorboard import SummaryWriter

        self._writer_type = SummaryWriter
        self.tracker = tracker
        self.root = tensorboard_dir(tracker.project.root)
        self.writers: dict[str, Any] = {}
        tracker.events(
            LogMessage(f"tensorboard: logging each stage to {self.root} (watch: tensorboard --logdir {self.root})")
        )

    def open_stage(self, stage: str, resumed_from: int) -> None:
        from torch.utils.tensorboard.summary import hparams

        d = self.root / run_name(stage)
        earlier = d.is_dir() and any(d.iterdir())
        # a stage that resumes at step S (or starts again) hides what an earlier run logged after S, so the
        # curves show each step once; steps count from 1, step 0 holds the settings and the once-only values
        w = self._writer_type(str(d), purge_step=resumed_from + 1 if earlier else None, flush_secs=10)
        self.writers[stage] = w
        if not earlier:
            m = self.tracker.metric
            exp, ssi, sei = hparams(
                hyperparameters(self.tracker.config), {f"dev/{m}/w1_d1": 0.0, f"grid/{m}/w1_d1": 0.0}
            )
            fw = w._get_file_writer()
            for summary in (exp, ssi, sei):
                fw.add_summary(summary)

    def scalars(self, stage: str, values: dict[str, float], step: int) -> None:
        w = self.writers[stage]
        for tag, v in values.items():
            w.add_scalar(tag, v, step)

    def grid(self, stage: str, results: dict, step: int) -> None:
        self.writers[stage].add_text("grid", grid_table(results), step)

    def close_stage(self, stage: str, status: str) -> None:
        w = self.writers.pop(stage, None)
        if w is not None:
            w.close()

    def close(self, status: str) -> None:
        for stage in list(self.writers):
            self.close_stage(stage, status)


# ---- MLflow -----------------------------------------------------------------------------------------------
class _MLflow:
    FLUSH_SECONDS = 5.0  # metrics go out in batches: one call per step would slow a fast GPU run on a remote server

    def __init__(self, tracker: Tracker):
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient

        self._metric, self._param, self._tag = Metric, Param, RunTag
        self.tracker = tracker
        root = tracker.project.root
        self.uri = mlflow_uri(root)
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            # MLflow 3 keeps the file store working but asks for this opt-in; the alternative (sqlite) needs the
            # full `mlflow` with SQLAlchemy, far more than the light `mlflow-skinny` this extra installs
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or tracker.config.name or Path(root).name
        try:
            self.client = MlflowClient(tracking_uri=self.uri)
            found = self.client.get_experiment_by_name(name)
            self.experiment = found.experiment_id if found is not None else self.client.create_experiment(name)
        except Exception as exc:  # noqa: BLE001  (MlflowException, a connection error: said in one line)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"mlflow: cannot open the tracking store {self.uri} ({first[:200]}): fix MLFLOW_TRACKING_URI "
                "or run with --report-to none"
            ) from None
        self.runs: dict[str, str] = {}  # stage -> MLflow run id
        self.pending: list = []
        self.last_flush = time.monotonic()
        tracker.events(LogMessage(f"mlflow: logging each stage as a run of experiment '{name}' at {self.uri}"))

    def open_stage(self, stage: str, resumed_from: int) -> None:
        project = str(Path(self.tracker.project.root).resolve())
        if resumed_from > 0:
            # a stopped stage continues its own run (stopped runs end KILLED, so a finished one is never reopened)
            filt = f"tags.`dynastudio.stage` = '{stage}' and tags.`dynastudio.project` = '{_quoted(project)}'"
            earlier = self.client.search_runs(
                [self.experiment], filter_string=filt, order_by=["attributes.start_time DESC"], max_results=1
            )
            if earlier and earlier[0].info.status != "FINISHED":
                run_id = earlier[0].info.run_id
                self.client.update_run(run_id, status="RUNNING")
                self.runs[stage] = run_id
                return
        tags = {"dynastudio.stage": stage, "dynastudio.project": project, "mlflow.source.name": "dynastudio"}
        run = self.client.create_run(self.experiment, run_name=stage, tags=tags)
        self.runs[stage] = run.info.run_id
        params = [self._param(k, str(v)) for k, v in hyperparameters(self.tracker.config).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters per call
            self.client.log_batch(run.info.run_id, params=params[i : i + 100])

    def scalars(self, stage: str, values: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        run_id = self.runs[stage]
        self.pending += [(run_id, self._metric(k, float(v), now, step)) for k, v in values.items()]
        if len(self.pending) >= 900 or time.monotonic() - self.last_flush >= self.FLUSH_SECONDS:
            self.flush()

    def grid(self, stage: str, results: dict, step: int) -> None:
        self.flush()
        run_id = self.runs[stage]
        self.client.log_dict(run_id, results, "results.json")
        self.client.log_text(run_id, grid_table(results), "grid.md")

    def flush(self) -> None:
        batch, self.pending = self.pending, []
        self.last_flush = time.monotonic()
        by_run: dict[str, list] = {}
        for run_id, m in batch:
            by_run.setdefault(run_id, []).append(m)
        for run_id, metrics in by_run.items():
            for i in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per call
                self.client.log_batch(run_id, metrics=metrics[i : i + 1000])

    def close_stage(self, stage: str, status: str) -> None:
        self.flush()
        run_id = self.runs.pop(stage, None)
        if run_id is not None:
            self.client.set_terminated(run_id, status)

    def close(self, status: str) -> None:
        for stage in list(self.runs):
            self.close_stage(stage, status)
        self.flush()


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


_BACKENDS = {"tensorboard": _TensorBoard, "mlflow": _MLflow}
