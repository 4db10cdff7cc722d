"""A project's torch side, on top of the store: model weights, atomic safetensors checkpoints, importance tensors."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ProjectError
from .store import ProjectStore, atomic_write_text, is_main_process, main_process_writes
from .tensorfiles import atomic_save_tensors, load_tensors, tensor_file_step

if TYPE_CHECKING:  # torch is imported where tensors are handled: the studio reads projects without it
    import torch


@dataclass
class Checkpoint:
    step: int
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict
    rng_state: torch.Tensor | None  # the main process's CPU random state
    extra: dict  # trainer.json
    rng_states: dict = field(default_factory=dict)  # rank -> runtime.RngState, of every process


class Project(ProjectStore):
    """A project folder with its torch side: models, mid-stage checkpoints, importance scores. `run` picks up at the
    first unfinished stage; everything else (paths, state, task, the grid) is the store's."""

    _inputs_memo: tuple | None = None  # core.prepare's encoded inputs, kept for this object's life (one run)

    # ---- models ------------------------------------------------------------------------------
    @main_process_writes
    def save_model(self, name: str, model: torch.nn.Module, info: dict | None = None) -> Path:
        d = self.model_dir(name)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(d / "config.json", model.config.to_json_string())
        meta = {"format": "pt", "dynastudio_model": name, "info": json.dumps(info or {})}
        atomic_save_tensors(d / "model.safetensors", model.state_dict(), meta)
        return d

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
    @main_process_writes
    def save_checkpoint(
        self,
        stage: str,
        step: int,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        extra: dict,
        rngs: list | None = None,
    ) -> Path:
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
        from . import runtime
        from .runtime import RngState

        d = self.checkpoint_dir(stage)
        if is_main_process():
            self._recover_checkpoint(stage)
        # under torchrun every rank calls this: none may look for trainer.json while rank 0 still finishes an
        # interrupted swap (rmtree, replace), or ranks would resume at different steps (a no-op in one process)
        runtime.barrier()
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
            raise ProjectError(
                f"{d}: torn checkpoint (trainer.json is at step {step}, "
                + ", ".join(f"{k} at step {v}" for k, v in torn.items())
                + f"): delete {d} to restart the {stage} stage"
            )
        rng = opt.pop("__rng_torch__", None)
        states: dict[int, RngState] = {}
        for key in [k for k in opt if k.startswith("__rng_torch__.")]:
            r = int(key.rsplit(".", 1)[1])
            states[r] = RngState(opt.pop(key), opt.pop(f"__rng_cuda__.{r}", None))
        return Checkpoint(info["step"], model_state, _unflatten_optimizer(opt, info["optimizer"]), rng, info, states)

    # ---- importance --------------------------------------------------------------------------
    @main_process_writes
    def save_importance(self, tensors: dict[str, torch.Tensor], info: dict) -> None:
        atomic_save_tensors(self.importance_path, tensors, {"info": json.dumps(info)})

    def load_importance(self) -> dict[str, torch.Tensor]:
        """The importance scores as tensors (the studio reads them as arrays: ProjectStore.importance_arrays)."""
        if not self.importance_path.is_file():
            raise ProjectError(
                f"{self.root}: no importance scores yet: run `dynastudio run {self.root} --until rewire`"
            )
        return load_tensors(self.importance_path, "the importance scores")


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
