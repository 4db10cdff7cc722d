"""The project folder: config, stage state, atomic safetensors checkpoints, metrics, importance, results."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError

from .config import STAGE_MODEL, STAGES, ProjectConfig
from .errors import ConfigError, ProjectError, disk_full

if TYPE_CHECKING:  # torch is imported where tensors are handled: the studio reads projects without it
    import torch

PROJECT_FILE = "project.json"
STATE_FILE = "state.json"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # mkstemp makes 0600 files; give the user's usual permissions


@contextlib.contextmanager
def _atomic_target(path: Path):
    """Yield a temp path in the target's folder; on success give it normal permissions and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise disk_full(exc, str(path)) or exc
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except Exception as exc:
        full = disk_full(exc, str(path))
        if full is None:
            raise
        raise full from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with _atomic_target(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_tensors(path: Path, tensors: dict[str, "torch.Tensor"], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    # safetensors refuses shared or strided storage; give it plain contiguous copies
    plain = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with _atomic_target(path) as tmp:
        save_file(plain, tmp, metadata=metadata)


def load_tensors(path: Path, what: str) -> dict[str, "torch.Tensor"]:
    return _load(path, what, "torch")


def load_arrays(path: Path, what: str) -> dict:
    """Like load_tensors, as numpy arrays: for readers that must not load torch (the studio)."""
    return _load(path, what, "numpy")


def _load(path: Path, what: str, kind: str) -> dict:
    if kind == "torch":
        from safetensors.torch import load_file
    else:
        from safetensors.numpy import load_file
    path = Path(path)
    if not path.is_file():
        raise ProjectError(f"{path}: {what} is missing: run the stage that makes it again (dynastudio run)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ProjectError(
            f"{path}: {what} is corrupted ({str(exc).splitlines()[0][:80]}): delete it and run the stage again"
        ) from None


@dataclass
class Checkpoint:
    step: int
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict
    rng_state: torch.Tensor | None  # the main process's CPU random state
    extra: dict  # trainer.json
    rng_states: dict = field(default_factory=dict)  # rank -> runtime.RngState, of every process


def tensor_file_step(path: Path) -> int | None:
    """The step a checkpoint's safetensors file records in its metadata (None when it records none)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            step = (f.metadata() or {}).get("step")
        return int(step) if step is not None else None
    except (SafetensorError, OSError, ValueError):
        return None


def _is_main_process() -> bool:
    runtime = sys.modules.get(f"{__package__}.runtime")
    return runtime is None or runtime.is_main()


def _main_process_writes(method):
    """Under torchrun only the main process (rank 0) writes the project; the others keep their in-memory
    state in step and wait at the barriers the stages set, then read what it wrote."""
    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        # only a process that trains loads runtime (and torch): without it there is no process group
        runtime = sys.modules.get(f"{__package__}.runtime")
        if runtime is None or runtime.is_main():
            return method(self, *args, **kwargs)
        return None

    return guarded


class Project:
    """A project folder. All writes are atomic; `run` picks up at the first unfinished stage."""

    def __init__(self, root: Path, config: ProjectConfig, state: dict):
        self.root = Path(root)
        self.config = config
        self.state = state

    # ---- creation / opening ------------------------------------------------------------------
    @staticmethod
    def create(root: Path, config: ProjectConfig, overwrite: bool = False) -> "Project":
        root = Path(root)
        if (root / PROJECT_FILE).exists() and not overwrite:
            raise ProjectError(f"{root}: a project already exists here: open it, or pick another folder")
        if root.exists() and not root.is_dir():
            raise ProjectError(f"{root}: exists and is not a folder: pick another path")
        root.mkdir(parents=True, exist_ok=True)
        project = Project(root, config, {"stages": {}, "created": time.time()})
        atomic_write_text(root / PROJECT_FILE, config.to_json())
        project._save_state()
        return project

    @staticmethod
    def open(root: Path) -> "Project":
        root = Path(root)
        cfg_path = root / PROJECT_FILE
        if not cfg_path.is_file():
            raise ProjectError(f"{root}: not a DynaBERT Studio project (no {PROJECT_FILE}): create one with `dynastudio new`")
        try:
            config = ProjectConfig.from_json(cfg_path.read_text(encoding="utf-8"), str(cfg_path))
        except UnicodeDecodeError:
            raise ConfigError(f"{cfg_path}: not UTF-8 text: restore it or create the project again") from None
        state_path = root / STATE_FILE
        state = {"stages": {}}
        if state_path.is_file():
            try:
                state = json.loads(state_path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                state = None
            if not isinstance(state, dict) or not isinstance(state.get("stages", {}), dict):
                raise ProjectError(f"{state_path}: corrupted: delete it to redo every stage") from None
        project = Project(root, config, state)
        project.migrate_files()
        return project

    def save_config(self, config: ProjectConfig) -> None:
        self.config = config
        self._write_config()

    @_main_process_writes
    def _write_config(self) -> None:
        atomic_write_text(self.root / PROJECT_FILE, self.config.to_json())

    # ---- stage state -------------------------------------------------------------------------
    @_main_process_writes
    def _save_state(self) -> None:
        atomic_write_text(self.root / STATE_FILE, json.dumps(self.state, indent=2, sort_keys=True))

    def is_done(self, stage: str) -> bool:
        return bool(self.state.get("stages", {}).get(stage, {}).get("done"))

    def missing_output(self, stage: str) -> Path | None:
        """What a stage marked done should have left on disk and is not there (deleted, or lost with a disk), else
        None. state.json says what ran; the files say what is left, and a stage whose output is gone is not done."""
        if not self.is_done(stage):
            return None
        if stage == "evaluate":
            return None if self.results_path.is_file() else self.results_path
        if stage == "finetune-subnets" and self.stage_info(stage).get("skipped"):
            return None  # subnet_epochs 0: it made nothing
        if stage == "rewire" and not self.importance_path.is_file():
            return self.importance_path
        name = STAGE_MODEL[stage]
        return None if self.has_model(name) else self.model_dir(name)

    def mark_done(self, stage: str, record: dict[str, Any]) -> None:
        """Record a finished stage (state.json has this one writer) and drop its mid-stage checkpoint.
        Every later stage was built on what this stage made before (a teacher trained again, say, after its
        model was deleted): it is no longer done, and its checkpoint, which would resume on the old output, goes."""
        stages = self.state.setdefault("stages", {})
        later = STAGES[STAGES.index(stage) + 1:]
        undone = [s for s in later if stages.pop(s, None) is not None]
        stages[stage] = {"done": True, "finished": time.time(), **record}
        self._save_state()
        for s in (stage, *later):
            self.clear_checkpoint(s)
        if "evaluate" in undone:
            # the grid scored the old models: the evaluate stage writes it again (latency.json stays: the device
            # kits' imported timings depend on the cells' shapes, not their weights)
            self._remove_results()

    def stage_info(self, stage: str) -> dict:
        return dict(self.state.get("stages", {}).get(stage, {}))

    # ---- paths -------------------------------------------------------------------------------
    @property
    def tokenizer_dir(self) -> Path:
        return self.root / "tokenizer"

    def model_dir(self, name: str) -> Path:
        return self.root / "models" / name

    def checkpoint_dir(self, stage: str) -> Path:
        return self.root / "checkpoints" / stage

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
    def importance_path(self) -> Path:
        return self.root / "importance.safetensors"

    # ---- models ------------------------------------------------------------------------------
    @_main_process_writes
    def save_model(self, name: str, model: torch.nn.Module, info: dict | None = None) -> Path:
        d = self.model_dir(name)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(d / "config.json", model.config.to_json_string())
        meta = {"format": "pt", "dynastudio_model": name, "info": json.dumps(info or {})}
        atomic_save_tensors(d / "model.safetensors", model.state_dict(), meta)
        return d

    def has_model(self, name: str) -> bool:
        return (self.model_dir(name) / "model.safetensors").is_file()

    def load_model(self, name: str, device: str | torch.device = "cpu") -> torch.nn.Module:
        from transformers import AutoConfig, AutoModelForSequenceClassification

        d = self.model_dir(name)
        cfg_path = d / "config.json"
        if not cfg_path.is_file():
            raise ProjectError(f"{cfg_path}: the {name} model is missing: run `dynastudio run {self.root}` to make it")
        try:
            config = AutoConfig.from_pretrained(str(d))
        except (OSError, ValueError) as exc:
            raise ProjectError(f"{cfg_path}: unreadable model config ({exc}): delete {d} and run again") from None
        state = load_tensors(d / "model.safetensors", f"the {name} model weights")
        model = AutoModelForSequenceClassification.from_config(config)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ProjectError(
                f"{d / 'model.safetensors'}: weights do not match config.json ({str(exc).splitlines()[0][:100]}): "
                f"delete {d} and run again"
            ) from None
        return model.to(device).eval()

    # ---- mid-stage checkpoints ---------------------------------------------------------------
    @_main_process_writes
    def save_checkpoint(self, stage: str, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, extra: dict,
                        rngs: list | None = None) -> Path:
        """Weights, optimizer, every process's random state (`rngs`: runtime.RngState per rank), then trainer.json,
        as one unit: all three go into a new folder beside the old checkpoint, which then takes its place. A kill
        at any moment leaves the old checkpoint or the new one whole, never model step N beside optimizer step M
        (`_recover_checkpoint` finishes a swap a kill interrupted)."""
        final = self.checkpoint_dir(stage)
        final.parent.mkdir(parents=True, exist_ok=True)
        d = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{stage}.new-"))
        try:
            self._write_checkpoint(d, stage, step, model, optimizer, extra, rngs)
        except BaseException:
            shutil.rmtree(d, ignore_errors=True)  # the previous checkpoint stays as it was
            raise
        if final.exists():
            old = final.parent / f".{stage}.old-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(d, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(d, final)
        return final

    @staticmethod
    def _write_checkpoint(d: Path, stage: str, step: int, model, optimizer, extra: dict, rngs) -> None:
        import torch

        meta = {"step": str(step), "stage": stage}
        atomic_save_tensors(d / "model.safetensors", model.state_dict(), meta)
        opt_tensors, opt_meta = _flatten_optimizer(optimizer)
        opt_tensors["__rng_torch__"] = rngs[0].cpu.clone() if rngs else torch.get_rng_state()
        for r, state in enumerate(rngs or []):
            opt_tensors[f"__rng_torch__.{r}"] = state.cpu
            if state.cuda is not None:
                opt_tensors[f"__rng_cuda__.{r}"] = state.cuda
        atomic_save_tensors(d / "optimizer.safetensors", opt_tensors, meta)
        # trainer.json is written last: it is what marks the checkpoint complete
        atomic_write_text(d / "trainer.json", json.dumps({"step": step, "optimizer": opt_meta, **extra}, indent=2))

    def _recover_checkpoint(self, stage: str) -> None:
        """After a kill: finish an interrupted swap (the newest complete folder becomes the checkpoint) and
        remove the leftovers (half-written folders, the replaced one)."""
        final = self.checkpoint_dir(stage)
        parent = final.parent
        if not parent.is_dir():
            return
        spare = [p for p in parent.glob(f".{stage}.*") if p.is_dir()]
        if not spare:
            return
        if not (final / "trainer.json").is_file():
            def step_of(p: Path) -> int:
                try:
                    return int(json.loads((p / "trainer.json").read_text(encoding="utf-8"))["step"])
                except (OSError, ValueError, KeyError, TypeError):
                    return -1  # incomplete: trainer.json is written last
            best = max(spare, key=step_of)
            if step_of(best) >= 0:
                shutil.rmtree(final, ignore_errors=True)
                os.replace(best, final)
                spare.remove(best)
        for p in spare:
            shutil.rmtree(p, ignore_errors=True)

    def load_checkpoint(self, stage: str) -> Checkpoint | None:
        from .runtime import RngState

        d = self.checkpoint_dir(stage)
        if _is_main_process():
            self._recover_checkpoint(stage)
        trainer = d / "trainer.json"
        if not trainer.is_file():
            return None
        try:
            info = json.loads(trainer.read_text(encoding="utf-8"))
            step = int(info["step"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
            raise ProjectError(f"{trainer}: corrupted checkpoint: delete {d} to restart the {stage} stage") from None
        model_state = load_tensors(d / "model.safetensors", f"the {stage} checkpoint")
        opt = load_tensors(d / "optimizer.safetensors", f"the {stage} optimizer checkpoint")
        # every file of the checkpoint must come from the same step (a torn checkpoint is never resumed)
        steps = {name: tensor_file_step(d / name) for name in ("model.safetensors", "optimizer.safetensors")}
        torn = {k: v for k, v in steps.items() if v is not None and v != step}
        if torn:
            raise ProjectError(f"{d}: torn checkpoint (trainer.json is at step {step}, "
                               + ", ".join(f"{k} at step {v}" for k, v in torn.items())
                               + f"): delete {d} to restart the {stage} stage")
        rng = opt.pop("__rng_torch__", None)
        states: dict[int, RngState] = {}
        for key in [k for k in opt if k.startswith("__rng_torch__.")]:
            r = int(key.rsplit(".", 1)[1])
            states[r] = RngState(opt.pop(key), opt.pop(f"__rng_cuda__.{r}", None))
        return Checkpoint(info["step"], model_state, _unflatten_optimizer(opt, info["optimizer"]), rng, info, states)

    def checkpoint_progress(self, stage: str) -> tuple[int, int | None] | None:
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

    @_main_process_writes
    def _remove_results(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.results_path.unlink()

    @_main_process_writes
    def clear_checkpoint(self, stage: str) -> None:
        shutil.rmtree(self.checkpoint_dir(stage), ignore_errors=True)
        for p in self.checkpoint_dir(stage).parent.glob(f".{stage}.*"):
            shutil.rmtree(p, ignore_errors=True)

    # ---- metrics, importance, results --------------------------------------------------------
    @_main_process_writes
    def append_metrics(self, record: dict) -> None:
        # one short line per call: a crash can at worst truncate the last line, which readers skip
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict]:
        if not self.metrics_path.is_file():
            return []
        out = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    @_main_process_writes
    def save_importance(self, tensors: dict[str, torch.Tensor], info: dict) -> None:
        atomic_save_tensors(self.importance_path, tensors, {"info": json.dumps(info)})

    def load_importance(self, as_numpy: bool = False) -> dict[str, torch.Tensor]:
        if not self.importance_path.is_file():
            raise ProjectError(f"{self.root}: no importance scores yet: run `dynastudio run {self.root} --until rewire`")
        return (load_arrays if as_numpy else load_tensors)(self.importance_path, "the importance scores")

    # results.json is written by the evaluate job only, latency.json by the latency job only;
    # load_results() is the one place that joins them into the grid.
    @_main_process_writes
    def save_evaluation(self, results: dict) -> None:
        atomic_write_text(self.results_path, json.dumps(results, indent=2))

    @_main_process_writes
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

    def load_results(self, device: str | None = None) -> dict:
        """The results grid: one row per sub-network, the evaluation's metric and sizes joined with the
        latest latency measurement's numbers (`latency_setup` says how those were measured): this machine's,
        or with `device` those a device kit measured on that device (`latency_devices` lists them)."""
        evaluation = self._read_json(self.results_path)
        latency = self.load_latency()
        devices = sorted((latency or {}).get("devices", {}))
        if device is not None:
            if device not in devices:
                raise ProjectError(f"{self.root}: no latency measured on device '{device}' "
                                   f"({'known: ' + ', '.join(devices) if devices else 'none imported yet'}): "
                                   f"import one with `dynastudio latency {self.root} --import FILE`")
            here = {m["label"]: m for m in latency.get("rows", [])}
            latency = latency["devices"][device]
            # a cell's dev metric per precision does not depend on the device: it comes from this machine's run
            latency = {**latency, "rows": [
                {**m, "values": {**{k: v for k, v in here.get(m["label"], {}).get("values", {}).items()
                                    if k.startswith("metric_")}, **m["values"]}} for m in latency.get("rows", [])]}
        elif latency is not None and "rows" not in latency:
            latency = None  # only devices' measurements so far
        if evaluation is None and latency is None and device is None and not devices:
            raise ProjectError(f"{self.root}: no results yet: run `dynastudio run {self.root}` through the evaluate stage")
        res = dict(evaluation) if evaluation is not None else {
            "task": None, "metric": None, "model": None, "depth_rule": self.config.train.depth_rule,
            "dev_examples": None, "rows": []}
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
        res["rows"] = rows
        if devices:
            res["latency_devices"] = devices  # the devices a kit measured, for a picker
        return res

    @_main_process_writes
    def migrate_files(self) -> None:
        """Older projects kept latency numbers inside results.json (two writers): move them to latency.json."""
        res = self._read_json(self.results_path)
        if res is None or "latency_setup" not in res:
            return
        prefixes = ("latency_", "size_onnx_")
        moved = []
        for r in res.get("rows", []):
            values = {k: r.pop(k) for k in [k for k in r if k.startswith(prefixes)]}
            if values:
                moved.append({"label": r["label"], "width_mult": r["width_mult"], "depth_mult": r["depth_mult"],
                              "sizes": {}, "values": values})
        if not self.latency_path.is_file():
            self.save_latency({"setup": res["latency_setup"], "rows": moved})
        del res["latency_setup"]
        self.save_evaluation(res)


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    import torch

    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{k}"] = v
            else:
                scalars.setdefault(str(idx), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        idx, k = key.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    for idx, kv in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(kv)
    return {"state": state, "param_groups": meta["param_groups"]}
