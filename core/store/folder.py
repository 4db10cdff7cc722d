"""The project folder as its files tell it: config, stage state, training history, results.json and latency.json."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from pathlib import Path
from typing import Any, TypeVar

from ..config import INT8_EMULATION, STAGE_MODEL, STAGES, ProjectConfig
from ..errors import ConfigError, ProjectError
from .files import atomic_write_text, main_process_writes
from .grid import MEASURED_PREFIXES, Grid
from .task import TASK_FILE, TaskInfo, read_task

PROJECT_FILE = "project.json"
STATE_FILE = "state.json"


_S = TypeVar("_S", bound="ProjectStore")


class ProjectStore:
    """A project folder as its files tell it: config, stage state, task, results. All writes are atomic.
    core.project.Project builds on it with what needs torch (models, checkpoints, importance tensors)."""

    def __init__(self, root: Path, config: ProjectConfig, state: dict):
        self.root = Path(root)
        self.config = config
        self.state = state

    # ---- creation / opening ------------------------------------------------------------------
    @classmethod
    def create(cls, root: Path, config: ProjectConfig, overwrite: bool = False):
        root = Path(root)
        if (root / PROJECT_FILE).exists() and not overwrite:
            raise ProjectError(f"{root}: a project already exists here: open it, or pick another folder")
        if root.exists() and not root.is_dir():
            raise ProjectError(f"{root}: exists and is not a folder: pick another path")
        root.mkdir(parents=True, exist_ok=True)
        project = cls(root, config, {"stages": {}, "created": time.time()})
        atomic_write_text(root / PROJECT_FILE, config.to_json())
        project._save_state()
        return project

    @classmethod
    def open(cls: type[_S], root: Path) -> _S:
        root = Path(root)
        cfg_path = root / PROJECT_FILE
        if not cfg_path.is_file():
            raise ProjectError(
                f"{root}: not a DynaBERT Studio project (no {PROJECT_FILE}): create one with `dynastudio new`"
            )
        try:
            config = ProjectConfig.from_json(cfg_path.read_text(encoding="utf-8"), str(cfg_path))
        except UnicodeDecodeError:
            raise ConfigError(f"{cfg_path}: not UTF-8 text: restore it or create the project again") from None
        project = cls(root, config, _read_state(root))
        project.migrate_files()
        return project

    def reload_state(self) -> None:
        """Read state.json again: another process (a run's stage in its own child process) wrote it."""
        self.state = _read_state(self.root)

    def save_config(self, config: ProjectConfig) -> None:
        self.config = config
        self._write_config()

    @main_process_writes
    def _write_config(self) -> None:
        atomic_write_text(self.root / PROJECT_FILE, self.config.to_json())

    # ---- paths -------------------------------------------------------------------------------
    @property
    def tokenizer_dir(self) -> Path:
        return self.root / "tokenizer"

    def model_dir(self, name: str) -> Path:
        return self.root / "models" / name

    def checkpoint_dir(self, stage: str) -> Path:
        return self.root / "checkpoints" / stage

    @property
    def task_path(self) -> Path:
        return self.root / TASK_FILE

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def results_path(self) -> Path:
        return self.root / "results.json"

    @property
    def latency_path(self) -> Path:
        return self.root / "latency.json"

    @property
    def inputs_cache_path(self) -> Path:
        return self.root / "cache" / "inputs.safetensors"

    @property
    def dev_scores_path(self) -> Path:
        return self.root / "cache" / "dev_scores.json"

    @property
    def importance_path(self) -> Path:
        return self.root / "importance.safetensors"

    def has_model(self, name: str) -> bool:
        return (self.model_dir(name) / "model.safetensors").is_file()

    def task(self) -> TaskInfo:
        return read_task(self.root)

    # ---- stage state -------------------------------------------------------------------------
    @main_process_writes
    def _save_state(self) -> None:
        atomic_write_text(self.root / STATE_FILE, json.dumps(self.state, indent=2, sort_keys=True))

    def is_done(self, stage: str) -> bool:
        return bool(self.state.get("stages", {}).get(stage, {}).get("done"))

    def stage_info(self, stage: str) -> dict:
        return dict(self.state.get("stages", {}).get(stage, {}))

    def missing_output(self, stage: str) -> Path | None:
        """What a stage marked done should have left on disk and is not there (deleted, or lost with a disk), else
        None. state.json says what ran; the files say what is left, and a stage whose output is gone is not done."""
        if not self.is_done(stage):
            return None
        if stage == "evaluate":
            return None if self.results_path.is_file() else self.results_path
        if stage in ("width", "finetune-subnets", "int8-aware") and self.stage_info(stage).get("skipped"):
            return None  # stage_order joint, subnet_epochs or int8_epochs 0: it made nothing
        if stage == "rewire" and not self.importance_path.is_file():
            return self.importance_path
        name = STAGE_MODEL[stage]
        return None if self.has_model(name) else self.model_dir(name)

    def has_int8_aware_model(self) -> bool:
        """Whether the int8-aware stage left weights for the INT8 files (it ran through the INT8 method the files
        use now, was not skipped, its model is there): the INT8 exports and the latency job's INT8 files quantize
        those; everything fp32 keeps the model before it."""
        return self.int8_aware_trained_for() == INT8_EMULATION and self.has_model(STAGE_MODEL["int8-aware"])

    def int8_aware_trained_for(self) -> str | None:
        """The INT8 method the int8-aware stage trained through, or None when it did not run (or was skipped). A
        stage of before round 8 recorded none: it trained through one range per tensor ("dynamic")."""
        if not self.is_done("int8-aware") or self.stage_info("int8-aware").get("skipped"):
            return None
        return self.stage_info("int8-aware").get("emulation", "dynamic")

    def mark_done(self, stage: str, record: dict[str, Any]) -> None:
        """Record a finished stage (state.json has this one writer) and drop its mid-stage checkpoint.
        Every later stage was built on what this stage made before (a teacher trained again, say, after its
        model was deleted): it is no longer done, and its checkpoint, which would resume on the old output, goes."""
        stages = self.state.setdefault("stages", {})
        later = STAGES[STAGES.index(stage) + 1 :]
        undone = [s for s in later if stages.pop(s, None) is not None]
        stages[stage] = {"done": True, "finished": time.time(), **record}
        self._save_state()
        for s in (stage, *later):
            self.clear_checkpoint(s)
        if "evaluate" in undone:
            # the grid scored the old models: the evaluate stage writes it again (latency.json stays: the device
            # kits' imported timings depend on the cells' shapes, not their weights)
            self._remove_results()

    def reopen(self, stage: str) -> None:
        """Forget that `stage` and every stage after it ran (a setting of theirs changed): the next run does them
        again. Their checkpoints go; so does results.json when evaluate was among them."""
        stages = self.state.setdefault("stages", {})
        again = STAGES[STAGES.index(stage) :]
        undone = [s for s in again if stages.pop(s, None) is not None]
        self._save_state()
        for s in again:
            self.clear_checkpoint(s)
        if "evaluate" in undone:
            self._remove_results()

    def checkpoint_progress(self, stage: str) -> tuple[int | None, int | None] | None:
        """(step, total steps) of the stage's saved checkpoint; None without one. The total is None for
        checkpoints written before it was recorded (0.2.0), and the step None when trainer.json is unreadable."""
        trainer = self.checkpoint_dir(stage) / "trainer.json"
        if not trainer.is_file():
            return None
        try:
            info = json.loads(trainer.read_text(encoding="utf-8"))
            step, total = int(info["step"]), info.get("total_steps")
        except (OSError, ValueError, KeyError, TypeError):
            return (None, None)
        return step, int(total) if isinstance(total, int) and total > 0 else None

    @main_process_writes
    def clear_checkpoint(self, stage: str) -> None:
        shutil.rmtree(self.checkpoint_dir(stage), ignore_errors=True)
        for p in self.checkpoint_dir(stage).parent.glob(f".{stage}.*"):
            shutil.rmtree(p, ignore_errors=True)

    @main_process_writes
    def _remove_results(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.results_path.unlink()

    # ---- the training history (metrics.jsonl) ------------------------------------------------
    @main_process_writes
    def append_metrics(self, record: dict) -> None:
        # one short line per call: a crash can at worst truncate the last line, which readers skip
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict]:
        """Every step and evaluation record of the project's training, across runs and resumes, in order."""
        if not self.metrics_path.is_file():
            return []
        out = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                out.append(record)
        return out

    # ---- results.json, latency.json -----------------------------------------------------------
    # results.json is written by the evaluate job only, latency.json by the latency job (and a device kit's
    # import) only; load_results() is the one place that joins them into the grid.
    @main_process_writes
    def save_evaluation(self, results: dict) -> None:
        atomic_write_text(self.results_path, json.dumps(results, indent=2))

    @main_process_writes
    def save_latency(self, latency: dict) -> None:
        atomic_write_text(self.latency_path, json.dumps(latency, indent=2))

    def _read_json(self, path: Path) -> dict | None:
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            data = None
        if not isinstance(data, dict):
            raise ProjectError(f"{path}: corrupted: delete it and run the job that writes it again") from None
        return data

    def load_latency(self) -> dict | None:
        return self._read_json(self.latency_path)

    def grid(self, device: str | None = None) -> Grid:
        """The results grid as typed rows: this machine's latency, or with `device` a device kit's."""
        return Grid.from_dict(self.load_results(device), device)

    def load_results(self, device: str | None = None) -> dict:
        """The results grid as JSON (what `dynastudio report --json` prints; code reads `grid()`): one row per
        sub-network, the evaluation's metric and sizes joined with the latest latency measurement's numbers
        (`latency_setup` says how those were measured): this machine's, or with `device` those a device kit
        measured on that device (`latency_devices` lists them)."""
        evaluation = self._read_json(self.results_path)
        latency = self.load_latency()
        devices = sorted((latency or {}).get("devices", {}))
        if device is not None:
            if latency is None or device not in devices:
                raise ProjectError(
                    f"{self.root}: no latency measured on device '{device}' "
                    f"({'known: ' + ', '.join(devices) if devices else 'none imported yet'}): "
                    f"import one with `dynastudio latency {self.root} --import FILE`"
                )
            here = {m["label"]: m for m in latency.get("rows", [])}
            latency = latency["devices"][device]
            # a cell's dev metric per precision does not depend on the device: it comes from this machine's run
            latency = {
                **latency,
                "rows": [
                    {
                        **m,
                        "values": {
                            **{
                                k: v
                                for k, v in here.get(m["label"], {}).get("values", {}).items()
                                if k.startswith("metric_")
                            },
                            **m["values"],
                        },
                    }
                    for m in latency.get("rows", [])
                ],
            }
        elif latency is not None and "rows" not in latency:
            latency = None  # only devices' measurements so far
        if evaluation is None and latency is None and device is None and not devices:
            raise ProjectError(
                f"{self.root}: no results yet: run `dynastudio run {self.root}` through the evaluate stage"
            )
        res = (
            dict(evaluation)
            if evaluation is not None
            else {
                "task": None,
                "metric": None,
                "model": None,
                "depth_rule": self.config.train.depth_rule,
                "dev_examples": None,
                "rows": [],
            }
        )
        rows = [dict(r) for r in res.get("rows", [])]
        if latency is not None:
            by_label = {r["label"]: r for r in rows}
            for m in latency.get("rows", []):
                row = by_label.get(m["label"])
                if row is None:  # measured before any evaluation: the metric comes with `evaluate`
                    row = {k: m[k] for k in ("label", "width_mult", "depth_mult")}
                    rows.append(row)
                    by_label[m["label"]] = row
                for k, v in m.get("sizes", {}).items():
                    row.setdefault(k, v)
                row.update(m["values"])
            res["latency_setup"] = latency.get("setup", {})
        searched = self._searched_rows(device)
        labels = {r["label"] for r in rows}
        rows += [r for r in searched if r["label"] not in labels]
        res["rows"] = rows
        if devices:
            res["latency_devices"] = devices  # the devices a kit measured, for a picker
        return res

    def _searched_rows(self, device: str | None) -> list[dict]:
        """The points `dynastudio search` kept (search.json) for this device, as grid rows of kind "searched"; the
        latest search's wins when two kept the same shape. Their latency is what was measured on this machine."""
        data = self._read_json(self.root / "search.json")
        runs = data.get("runs", []) if isinstance(data, dict) else []
        by_label: dict[str, dict] = {}
        for run in runs:
            if not isinstance(run, dict) or run.get("device") != device:
                continue
            for point in run.get("points", []):
                if isinstance(point, dict) and "label" in point and isinstance(point.get("searched"), dict):
                    by_label[point["label"]] = {**point, "kind": "searched", "budget_ms": run.get("budget_ms")}
        return list(by_label.values())

    @main_process_writes
    def migrate_files(self) -> None:
        """Older projects kept latency numbers inside results.json (two writers): move them to latency.json."""
        res = self._read_json(self.results_path)
        if res is None or "latency_setup" not in res:
            return
        moved = []
        for r in res.get("rows", []):
            values = {k: r.pop(k) for k in [k for k in r if k.startswith(MEASURED_PREFIXES)]}
            if values:
                moved.append(
                    {
                        "label": r["label"],
                        "width_mult": r["width_mult"],
                        "depth_mult": r["depth_mult"],
                        "sizes": {},
                        "values": values,
                    }
                )
        if not self.latency_path.is_file():
            self.save_latency({"setup": res["latency_setup"], "rows": moved})
        del res["latency_setup"]
        self.save_evaluation(res)


def _read_state(root: Path) -> dict:
    state_path = root / STATE_FILE
    state: Any = {"stages": {}}
    if state_path.is_file():
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            state = None
        if not isinstance(state, dict) or not isinstance(state.get("stages", {}), dict):
            raise ProjectError(f"{state_path}: corrupted: delete it to redo every stage") from None
    return state


def final_model_name(project: ProjectStore) -> str:
    """The most trained model the project has (what `evaluate`, `latency` and `export` use). A stage marked done
    whose model is gone is an error, not a reason to fall back to an earlier model without a word."""
    for stage in ("finetune-subnets", "depth", "width", "rewire", "finetune"):
        name = STAGE_MODEL[stage]
        gone = project.missing_output(stage) if stage != "rewire" or not project.has_model(name) else None
        if gone is not None:
            raise ProjectError(
                f"{gone}: the {stage} stage's output is missing: run `dynastudio run {project.root}` "
                f"to make it again (and the stages after it)"
            )
        if project.is_done(stage) and project.has_model(name):
            return name
    raise ProjectError(f"{project.root}: no trained model yet: run `dynastudio run {project.root}`")
