"""The pipeline's stage jobs (finetune, rewire, width, depth, finetune-subnets, int8-aware, evaluate) and `run`, which chains them."""

from __future__ import annotations

import functools
import json
import shutil
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from . import runtime, tracking
from .augmentation import distill_rows
from .config import (
    INT8_EMULATION,
    STAGE_MODEL,
    STAGES,
    TEACHER_LR_CANDIDATES,
    TEACHER_LR_RACE,
    teacher_lr_trial_longer,
    teacher_lr_trial_steps,
    warmup_for,
)
from .data.batching import iterate_batches, to_device
from .distill import LoopSettings, distill_step, int8_step, task_step, total_steps, train_loop
from .dynamic import SubnetSpec, forward_subnet, subnet_grid
from .errors import ConfigError, InternalError, ProjectError
from .evaluate import (
    chance_score,
    eval_batch_size,
    evaluate_grid,
    evaluate_specs,
    keep_scores,
    paired_lower_bound,
    predict,
    teacher_check,
)
from .events import (
    EvalEnded,
    ImportanceReady,
    LogMessage,
    StageEnded,
    StageProgress,
    StageStarted,
    StepEnded,
    StopToken,
    TeacherChecked,
)
from .importance import compute_importance, rewire
from .metrics import compute_metric
from .models import load_base_model
from .prepare import RunInputs, prepare_inputs
from .project import Project
from .requests import RunRequest, RunResult, StageRequest, StageRunRequest
from .store import atomic_write_text, final_model_name
from .store.estimate import stages_to_run


@dataclass(frozen=True)
class StageResult:
    """What a finished stage leaves in state.json."""

    stage: str
    seconds: float
    skipped: bool = False
    steps: int = 0
    metrics: dict[str, float] = field(default_factory=dict)  # finetune: the teacher's dev metrics
    teacher_check: dict | None = None  # finetune: the teacher against the constant prediction (evaluate.teacher_check)
    emulation: str | None = None  # int8-aware: the INT8 method it trained through (config.INT8_EMULATION)
    teacher_kept: dict | None = None  # finetune: the checkpoint kept by its held-out score (_BestTeacher.restore)
    teacher_lr_trial: dict | None = None  # finetune with teacher_lr null: the trial's scores and choice (_teacher_lr)
    augment: dict | None = None  # distilling stages: the augmented rows they also learned from (augmentation.py)
    sandwich: int = 0  # depth: the random per-layer shapes each step distilled beside the cells (train.sandwich)

    def record(self) -> dict:
        return asdict(self)


def _finish(project: Project, stage: str, t0: float, events, **fields) -> StageResult:
    result = StageResult(stage, time.perf_counter() - t0, **fields)
    project.mark_done(stage, result.record())
    runtime.barrier()  # under torchrun: the next stage reads what the main process just wrote
    events(StageEnded(stage, result.seconds, skipped=result.skipped))
    return result


def _skip(project: Project, stage: str, t0: float, events, why: str) -> StageResult:
    events(StageStarted(stage, 0))
    events(LogMessage(f"{stage}: skipped ({why})"))
    return _finish(project, stage, t0, events, skipped=True)


# ---- training stages ----------------------------------------------------------------------------
def recording(project: Project, events):
    """`events`, with every step's losses and every evaluation also appended to metrics.jsonl on the way.

    The StepEnded and EvalEnded events are the one source of these facts. run/events.jsonl carries them live
    for the current run only (a new run replaces it); metrics.jsonl is the training's history across runs and
    resumes (the Train page redraws it when a project is reopened), and this sink is its only writer."""
    last_epoch = [0]

    def sink(event) -> None:
        events(event)
        if isinstance(event, StepEnded):
            last_epoch[0] = event.epoch
            project.append_metrics(
                {
                    "time": event.at,
                    "kind": "step",
                    "stage": event.stage,
                    "step": event.step,
                    "epoch": event.epoch,
                    "lr": event.lr,
                    "losses": event.losses,
                }
            )
        elif isinstance(event, EvalEnded):
            project.append_metrics(
                {
                    "time": time.time(),
                    "kind": "eval",
                    "stage": event.stage,
                    "step": event.step,
                    "epoch": last_epoch[0],
                    "metric": event.metric_name,
                    "results": event.results,
                    "chance": event.chance,
                }
            )

    return sink


def _tracked(job):
    """`job`, with the trackers `train.report_to` names (TensorBoard, MLflow: core.tracking) subscribed to its events
    beside metrics.jsonl's sink. `run` subscribes them once for all its stages, so their packages are checked (and
    their runs opened) before the first stage trains, and the evaluate stage's final grid reaches them too."""

    @functools.wraps(job)
    def tracked(project: Project, request, events, stop: StopToken):
        with tracking.subscribed(project, events) as sink:
            return job(project, request, sink, stop)

    return tracked


def _eval_hook(inputs: RunInputs, stage: str, model: nn.Module, specs, events):
    int8 = stage == "int8-aware"  # that stage's curve: its sub-networks as their INT8 files compute them

    def on_epoch_end(step: int, epoch: int) -> None:
        scores = evaluate_specs(inputs, model, specs, int8=int8)
        if not int8:
            keep_scores(inputs, model, scores)
        results = {k: v["score"] for k, v in scores.items()}
        events(EvalEnded(stage, step, inputs.task.metric, results, chance_score(inputs)))
        model.train()

    return on_epoch_end


def _train(
    inputs: RunInputs,
    stage: str,
    model,
    step_fn,
    epochs: float,
    lr: float,
    eval_specs,
    events,
    stop,
    precision=None,
    after_eval=None,
    data=None,
) -> dict:
    p, t = inputs.project, inputs.cfg.train
    # the teacher never sees the importance rows; the stages after rewiring may (train.reuse_importance_rows); the
    # distilling stages pass their rows (augmentation.distill_rows)
    if data is None:
        data = inputs.train if stage == "finetune" else inputs.student_rows

    def save_ckpt(step, total, m, opt, extra, rngs):
        return str(
            p.save_checkpoint(
                stage, step, m, opt, {"stage": stage, "total_steps": total, "rows": len(data), **extra}, rngs
            )
        )

    resume = p.load_checkpoint(stage)
    if resume is not None and resume.extra.get("rows", len(data)) != len(data):
        # the data order and the schedule depend on the row count: resuming would silently train another run
        raise ProjectError(
            f"{p.checkpoint_dir(stage)}: this checkpoint was written for {resume.extra['rows']} training "
            f"rows and the {stage} stage now has {len(data)} (the data settings changed): delete it to "
            "restart the stage, or restore the settings"
        )
    events = recording(p, events)
    warmup = warmup_for(t, getattr(getattr(model, "config", None), "model_type", None))
    settings = LoopSettings(
        stage,
        epochs,
        lr,
        t.batch_size,
        t.seed,
        t.weight_decay,
        warmup,
        t.max_grad_norm,
        t.checkpoint_every,
        t.checkpoint_minutes * 60,
        t.group_by_length,
        precision or inputs.precision,
        TEACHER_EVAL_STEPS if after_eval is not None else 0,
    )
    hook = _eval_hook(inputs, stage, model, eval_specs, events)
    if after_eval is not None:
        dev_hook = hook

        def hook(step: int, epoch: int) -> None:
            dev_hook(step, epoch)
            after_eval(step)
            model.train()

    return train_loop(
        model.to(inputs.device),
        data,
        step_fn,
        settings,
        events=events,
        stop=stop,
        device=inputs.device,
        pad_id=inputs.pad_id,
        resume=resume,
        save_checkpoint=save_ckpt,
        on_epoch_end=hook,
    )


@_tracked
def finetune_job(project: Project, request: StageRequest, events, stop: StopToken) -> StageResult:
    """Fine-tune the base model on the task: the teacher (models/teacher)."""
    t0 = time.perf_counter()
    inputs = prepare_inputs(project, events)
    cfg = project.config
    model = load_base_model(cfg.model, inputs.task, cfg.model_is_finetuned, cfg.train.seed).to(inputs.device)
    full = SubnetSpec()
    if cfg.model_is_finetuned:
        events(StageStarted("finetune", 0))
        events(LogMessage("model is already fine-tuned: using it as the teacher as-is"))
        metrics, check = _check_teacher(inputs, model, events)
        project.save_model("teacher", model)
        return _finish(project, "finetune", t0, events, skipped=True, metrics=metrics, teacher_check=check)
    t = cfg.train
    step_fn = lambda m, b, ctx: task_step(
        m, b, [full], depth_rule=t.depth_rule, is_regression=inputs.task.is_regression, ctx=ctx
    )
    lrs, trial = _teacher_lr(inputs, model, step_fn, events, stop)
    if trial is None or len(lrs) == 1:
        best, info, kept = _train_teacher(inputs, model, step_fn, lrs[0], events, stop)
        best.clear()
        lr, steps = lrs[0], info["steps"]
    else:
        lr, kept, steps = _teacher_race(inputs, model, step_fn, lrs, trial, events, stop)
    metrics, check = _check_teacher(inputs, model, events, lr)
    project.save_model("teacher", model)
    _clear_model_folder(project, LR_TRIAL)
    return _finish(
        project,
        "finetune",
        t0,
        events,
        steps=steps,
        metrics=metrics,
        teacher_check=check,
        teacher_kept=kept,
        teacher_lr_trial=trial,
    )


LR_TRIAL = "teacher-lr-trial"  # models/ folder holding the trial's outcome while the finetune stage runs


def _clear_model_folder(project: Project, name: str) -> None:
    runtime.barrier()
    if runtime.is_main():
        shutil.rmtree(project.model_dir(name), ignore_errors=True)


def _trial_settings(inputs: RunInputs) -> dict:
    """What a saved trial depends on: a trial saved under other settings is not reused."""
    t = inputs.cfg.train
    return {
        "candidates": [float(x) for x in TEACHER_LR_CANDIDATES],
        "race": TEACHER_LR_RACE,
        "train_rows": len(inputs.train),
        "heldout_rows": len(inputs.heldout),
        "teacher_epochs": float(t.teacher_epochs),
        "batch_size": t.batch_size,
        "seed": t.seed,
    }


def _save_trial(project: Project, trial: dict) -> None:
    if runtime.is_main():
        project.model_dir(LR_TRIAL).mkdir(parents=True, exist_ok=True)
        atomic_write_text(project.model_dir(LR_TRIAL) / "trial.json", json.dumps(trial))


def _teacher_lr(inputs: RunInputs, model, step_fn, events, stop: StopToken) -> tuple[list[float], dict | None]:
    """The teacher's learning rates to train: [train.teacher_lr] when set (a user's value wins). When null, a
    successive-halving trial whose last rung is the teacher's own budget. First each of TEACHER_LR_CANDIDATES trains
    a copy of the untrained teacher on the same train rows for the same few steps (TEACHER_LR_TRIAL_STEPS at most, a
    tenth of the teacher's own steps when fewer), with the stage's schedule, and is scored on the held-out train
    rows; when every rate scores the same, the round runs again with twice the steps while that stays within a
    quarter of the teacher's steps (config.teacher_lr_trial_longer). The TEACHER_LR_RACE best then each train a
    whole teacher (`_teacher_race`), and `race_winner` keeps one: the lower rate, unless the higher is clearly
    better on the held-out rows. The short rung alone favours large rates: few steps reward fast early progress, not
    where a run ends (on SST-2 it chose 2e-4, whose teacher ended 1.95 dev points below 1e-4's; see
    bench/results/teacher_lr_*.md). Dev is not used. The trial is saved while the stage runs, so a resumed stage
    neither repeats it nor retrains a candidate that finished."""
    p, t = inputs.project, inputs.cfg.train
    if t.teacher_lr is not None:
        return [float(t.teacher_lr)], None
    saved = p.model_dir(LR_TRIAL) / "trial.json"
    if saved.is_file():
        try:
            trial = json.loads(saved.read_text(encoding="utf-8"))
            if trial.get("settings") == _trial_settings(inputs):
                lrs = [float(x) for x in trial["race_rates"]]
                events(
                    LogMessage(
                        f"teacher_lr: the trial before this run was stopped chose {', '.join(f'{x:g}' for x in lrs)}"
                    )
                )
                return lrs, trial
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable: run the trial again
    _clear_model_folder(p, LR_TRIAL)  # what an older trial left
    if t.importance_split != "heldout" or not len(inputs.heldout):
        lr = TEACHER_LR_CANDIDATES[1]
        events(
            LogMessage(
                f"teacher_lr {lr:g}: no held-out train rows to run the learning-rate trial on (importance_split is "
                f"{t.importance_split!r}); set train.teacher_lr in project.json to choose it yourself",
                "warning",
            )
        )
        return [lr], {"chosen": lr, "candidates": {}, "reason": "no held-out train rows"}
    t0 = time.perf_counter()
    total, _ = total_steps(len(inputs.train), t.batch_size, t.teacher_epochs)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    steps: int | None = teacher_lr_trial_steps(total)
    rounds: list[dict] = []
    while steps is not None:
        rows = min(len(inputs.train), steps * t.batch_size)
        scores, losses = _trial_round(inputs, model, step_fn, start, steps, rows, events, stop)
        rounds.append({"steps": steps, "rows": rows, "scores": scores, "losses": losses})
        if len(set(scores.values())) > 1:
            break
        longer = teacher_lr_trial_longer(steps, total)
        events(
            LogMessage(
                f"teacher_lr trial: every rate scored {next(iter(scores.values())):.4f} after {steps} steps, so the "
                "score cannot rank them; "
                + (
                    f"the trial runs again with {longer} steps each"
                    if longer
                    else "a longer trial would pass a quarter of the teacher's steps, so the held-out loss ranks them"
                )
            )
        )
        steps = longer
    model.load_state_dict(start)  # every whole teacher starts from the same weights as every candidate
    model.train()
    # a tie of the metric (after so few steps every copy may still predict the majority class: Matthews 0 for all on
    # CoLA) is broken by the held-out loss, which still shows which copy learned most; then the lower rate
    ranked = sorted(TEACHER_LR_CANDIDATES, key=lambda lr: (-scores[f"{lr:g}"], losses[f"{lr:g}"], lr))
    race = ranked[:TEACHER_LR_RACE]
    trial = {
        "chosen": race[0],  # until the race says otherwise
        "candidates": scores,
        "losses": losses,
        "steps_each": rounds[-1]["steps"],
        "rows": rows,
        "rounds": [{k: r[k] for k in ("steps", "scores")} for r in rounds[:-1]],  # those that left every rate tied
        "heldout_rows": len(inputs.heldout),
        "race_rates": race,
        "race": {},
        "trial_seconds": round(time.perf_counter() - t0, 1),
        "seconds": round(time.perf_counter() - t0, 1),
        "settings": _trial_settings(inputs),
    }
    _save_trial(p, trial)
    events(
        LogMessage(
            f"teacher_lr trial: {', '.join(f'{x:g}' for x in race)} scored best after {trial['steps_each']} steps "
            f"each on {rows} train rows ({trial['trial_seconds']:.0f} s); each now trains a whole teacher, and the "
            "lower rate is kept unless the higher is clearly better on the held-out rows. Set train.teacher_lr to "
            "choose the rate yourself"
        )
    )
    return race, trial


def _trial_round(inputs: RunInputs, model, step_fn, start: dict, steps: int, rows: int, events, stop: StopToken):
    """One round of the learning-rate trial: each of TEACHER_LR_CANDIDATES trains a copy of the untrained teacher
    (`start`) for `steps` steps on the same `rows` train rows, with the stage's schedule; returns each rate's score
    and task loss on the held-out train rows ({rate: value}, the rate written as f"{lr:g}")."""
    t = inputs.cfg.train
    sample = inputs.train.sample(rows, t.seed)
    scores: dict[str, float] = {}
    losses: dict[str, float] = {}
    labels = np.asarray(inputs.heldout.labels)
    for i, lr in enumerate(TEACHER_LR_CANDIDATES):
        model.load_state_dict(start)
        settings = LoopSettings(
            "finetune-lr-trial",
            1.0,
            lr,
            t.batch_size,
            t.seed,
            t.weight_decay,
            warmup_for(t, getattr(getattr(model, "config", None), "model_type", None)),
            t.max_grad_norm,
            0,
            float("inf"),  # no checkpoints: a stopped trial starts again
            t.group_by_length,
            inputs.precision,
        )
        train_loop(
            model.to(inputs.device),
            sample,
            step_fn,
            settings,
            events=lambda e: None,  # its steps are not the teacher's curve
            stop=stop,
            device=inputs.device,
            pad_id=inputs.pad_id,
        )
        logits = _full_model_logits(inputs, model, inputs.heldout)
        scores[f"{lr:g}"] = float(compute_metric(inputs.task.metric, logits, labels)["score"])
        losses[f"{lr:g}"] = _task_loss(logits, labels, inputs.task.is_regression)
        events(
            LogMessage(
                f"teacher_lr trial {i + 1}/{len(TEACHER_LR_CANDIDATES)}: {lr:g} scores {scores[f'{lr:g}']:.4f} "
                f"{inputs.task.metric} (loss {losses[f'{lr:g}']:.4f}) on {len(inputs.heldout)} held-out train rows after {steps} steps"
            )
        )
    return scores, losses


def _train_teacher(inputs: RunInputs, model, step_fn, lr: float, events, stop: StopToken):
    """One whole teacher at `lr` (resumed from the stage's checkpoint when there is one), its best checkpoint on the
    held-out rows restored into `model`. Returns (the _BestTeacher, the loop's info, what was kept)."""
    best = _BestTeacher(inputs, model, events)
    info = _train(
        inputs,
        "finetune",
        model,
        step_fn,
        inputs.cfg.train.teacher_epochs,
        lr,
        [SubnetSpec()],
        events,
        stop,
        after_eval=best.consider if best.enabled else None,
    )
    return best, info, best.restore()


def _teacher_race(inputs: RunInputs, model, step_fn, lrs: list[float], trial: dict, events, stop):
    """Train a whole teacher at each of `lrs`, one after the other from the same start, each keeping its best
    checkpoint on the held-out rows; leave the best of them in `model`. Each finished candidate is saved under
    models/teacher-lr-trial with its held-out score, so a stopped stage resumes at the candidate it was training.
    Returns (the chosen rate, what was kept of it, its steps); `trial` gains every candidate's outcome."""
    p = inputs.project
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for i, lr in enumerate(lrs):
        key = f"{lr:g}"
        if key in trial["race"] and (p.model_dir(LR_TRIAL) / key).is_dir():
            continue
        t_lr = time.perf_counter()
        if p.checkpoint_progress("finetune") is None:
            model.load_state_dict(start)
        events(LogMessage(f"teacher candidate {i + 1}/{len(lrs)}: learning rate {key}"))
        best, info, kept = _train_teacher(inputs, model, step_fn, lr, events, stop)
        p.save_model(f"{LR_TRIAL}/{key}", model)
        logits = _full_model_logits(inputs, model, inputs.heldout)  # for its score, and the comparison at the end
        if runtime.is_main():
            np.save(p.model_dir(f"{LR_TRIAL}/{key}") / "heldout_logits.npy", logits)
        trial["race"][key] = {
            "heldout_score": float(
                compute_metric(inputs.task.metric, logits, np.asarray(inputs.heldout.labels))["score"]
            ),
            "kept": kept,
            "steps": info["steps"],
            "seconds": round(time.perf_counter() - t_lr, 1),
        }
        _save_trial(p, trial)
        best.clear()
        p.clear_checkpoint("finetune")  # the next candidate starts its own run
        runtime.barrier()
    runtime.barrier()
    predicted = {lr: np.load(p.model_dir(f"{LR_TRIAL}/{lr:g}") / "heldout_logits.npy") for lr in lrs}
    chosen, lows = race_winner(inputs.task.metric, np.asarray(inputs.heldout.labels), predicted)
    for lr, low in lows.items():
        trial["race"][f"{lr:g}"]["margin_low"] = low
    won = trial["race"][f"{chosen:g}"]
    model.load_state_dict(p.load_model(f"{LR_TRIAL}/{chosen:g}", inputs.device).state_dict())
    trial["chosen"] = chosen
    trial["seconds"] = round(trial["trial_seconds"] + sum(r["seconds"] for r in trial["race"].values()), 1)
    others = ", ".join(f"{k}: {v['heldout_score']:.4f}" for k, v in trial["race"].items() if k != f"{chosen:g}")
    events(
        LogMessage(
            f"teacher_lr {chosen:g} kept: {inputs.task.metric} {won['heldout_score']:.4f} on the held-out train rows "
            f"(against {others}; a higher rate is kept only when it is ahead at the 95 % lower bound); the trial "
            f"and the candidates took {trial['seconds']:.0f} s"
        )
    )
    return chosen, won["kept"], won["steps"]


def _task_loss(logits: np.ndarray, labels: np.ndarray, regression: bool) -> float:
    """The task's loss of `logits` on `labels`: mean squared error for regression, cross-entropy otherwise."""
    x = torch.from_numpy(np.asarray(logits, dtype=np.float32))
    if regression:
        y = torch.from_numpy(np.asarray(labels, dtype=np.float32))
        return float(nn.functional.mse_loss(x.reshape(len(y), -1)[:, 0], y))
    return float(nn.functional.cross_entropy(x, torch.from_numpy(np.asarray(labels, dtype=np.int64))))


def race_winner(metric: str, labels: np.ndarray, logits: dict[float, np.ndarray]) -> tuple[float, dict[float, float]]:
    """The race's teacher from each candidate rate's held-out predictions. The lowest rate stands unless a higher
    one is clearly better: ahead at the one-sided 95 % lower bound of a paired bootstrap over the held-out rows
    (evaluate.paired_lower_bound). A difference within that noise is no evidence, and the short trial that
    put the rates in the race favours large ones, so then the lower rate, the more stable fine-tuning, is kept.
    Returns (the rate, {each higher rate: the lower bound of its lead over the rate it was compared with})."""
    rates = sorted(logits)

    def score(lr: float, idx) -> float:
        return float(compute_metric(metric, logits[lr][idx], labels[idx])["score"])

    chosen, lows = rates[0], {}
    for lr in rates[1:]:
        lows[lr] = paired_lower_bound(len(labels), lambda idx, a=lr, b=chosen: score(a, idx) - score(b, idx))
        if lows[lr] > 0:
            chosen = lr
    return chosen, lows


TEACHER_EVAL_STEPS = 1000  # a teacher epoch longer than this is also scored on the held-out rows every this many steps
BEST_TEACHER = "teacher-best"  # models/ folder of the best teacher so far, while the finetune stage runs


class _BestTeacher:
    """The teacher's best checkpoint by its score on the held-out importance rows, which it never trains on (the
    paper's released code also keeps the best epoch). Scored at each epoch's end, and every TEACHER_EVAL_STEPS
    steps of a longer epoch; the best so far is saved to models/teacher-best with its step and score, so a resumed
    run still knows it. Dev only reports. Without held-out train rows (importance_split "dev", or none) the last
    weights are kept, as before."""

    def __init__(self, inputs: RunInputs, model, events):
        self.inputs, self.model, self.events = inputs, model, events
        self.project = inputs.project
        t = inputs.cfg.train
        self.enabled = t.importance_split == "heldout" and len(inputs.heldout) > 0
        self.folder = self.project.model_dir(BEST_TEACHER)
        self.best: dict | None = None
        self.last: dict | None = None
        if not self.enabled:
            return
        if self.project.checkpoint_progress("finetune") is None:
            self.clear()  # a fresh stage: a best of an earlier teacher run is not this one's
        elif (self.folder / "best.json").is_file():
            try:
                self.best = json.loads((self.folder / "best.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self.best = None  # unreadable: the next evaluation starts the race again

    def score(self) -> float:
        return _full_model_score(self.inputs, self.model, self.inputs.heldout)

    def consider(self, step: int) -> None:
        score = self.score()
        self.last = {"step": step, "score": score}
        if self.best is None or score > self.best["score"]:
            self.best = dict(self.last)
            self.project.save_model(BEST_TEACHER, self.model)
            if runtime.is_main():  # (save_model writes from the main process only, too)
                atomic_write_text(self.folder / "best.json", json.dumps(self.best))
        self.events(
            LogMessage(
                f"teacher at step {step}: {self.inputs.task.metric} {score:.4f} on {len(self.inputs.heldout)} "
                f"held-out train rows (best {self.best['score']:.4f}, step {self.best['step']})"
            )
        )

    def restore(self) -> dict | None:
        """Load the best weights into the model when they beat the last; what was kept, for state.json."""
        if not self.enabled or self.best is None or self.last is None:
            return None
        kept = self.best["step"] != self.last["step"] and self.best["score"] > self.last["score"]
        if kept:
            best = self.project.load_model(BEST_TEACHER, self.inputs.device)
            self.model.load_state_dict(best.state_dict())
            self.events(
                LogMessage(
                    f"kept the teacher of step {self.best['step']} ({self.inputs.task.metric} "
                    f"{self.best['score']:.4f} on the held-out train rows), not the last ({self.last['score']:.4f})"
                )
            )
        return {
            "step": self.best["step"] if kept else self.last["step"],
            "heldout_score": self.best["score"] if kept else self.last["score"],
            "last_step": self.last["step"],
            "last_heldout_score": self.last["score"],
            "heldout_rows": len(self.inputs.heldout),
        }

    def clear(self) -> None:
        runtime.barrier()  # under torchrun: every process has read the best weights before they go
        if runtime.is_main():
            shutil.rmtree(self.folder, ignore_errors=True)


def _full_model_logits(inputs: RunInputs, model, rows) -> np.ndarray:
    """The full model's logits on `rows`, in fp32 as every evaluation."""
    return predict(
        model,
        rows,
        SubnetSpec(),
        inputs.cfg.train.depth_rule,
        eval_batch_size(inputs.cfg, inputs.device),
        inputs.pad_id,
        inputs.device,
    )


def _full_model_score(inputs: RunInputs, model, rows) -> float:
    """The task metric of the full model on `rows` (the held-out train rows, for the teacher's choices)."""
    logits = _full_model_logits(inputs, model, rows)
    return float(compute_metric(inputs.task.metric, logits, np.asarray(rows.labels))["score"])


def _check_teacher(inputs: RunInputs, model, events, lr: float | None = None) -> tuple[dict, dict]:
    """The teacher's dev metrics, and whether it is clearly better than the constant prediction: when it is not,
    a warning (the CLI prints it, the studio shows a banner) before any distillation time is spent on it."""
    logits = _full_model_logits(inputs, model, inputs.dev)
    metrics = compute_metric(inputs.task.metric, logits, np.asarray(inputs.dev.labels))
    check = teacher_check(inputs, logits, lr)
    events(
        TeacherChecked(
            inputs.task.metric,
            check["score"],
            check["constant"],
            check["margin_low"],
            check["clearly_better"],
            check["advice"],
        )
    )
    if not check["clearly_better"]:
        events(LogMessage(check["advice"], "warning"))
    return metrics, check


@_tracked
def rewire_job(project: Project, request: StageRequest, events, stop: StopToken) -> StageResult:
    """Score heads and neurons on the importance rows, reorder them most important first (models/rewired)."""
    t0 = time.perf_counter()
    inputs = prepare_inputs(project, events)
    model = project.load_model("teacher", inputs.device)
    batches = list(
        iterate_batches(inputs.heldout, project.config.train.batch_size, shuffle=False, pad_id=inputs.pad_id)
    )
    events(StageStarted("rewire", len(batches)))
    runtime.check_stop(stop)
    # under torchrun each process scores every world-th batch; the sums are added up across processes
    mine = list(range(runtime.rank(), len(batches), runtime.world()))

    def feed():
        for i in mine:
            yield to_device(batches[i], inputs.device)
            events(StageProgress("rewire", i + 1, len(batches)))

    imp = compute_importance(model, feed(), inputs.task.is_regression)
    runtime.check_stop(stop)
    events(ImportanceReady(imp.head.tolist(), imp.neuron.tolist()))
    probe = next(iterate_batches(inputs.dev, min(16, len(inputs.dev)), shuffle=False, pad_id=inputs.pad_id))
    probe = to_device(probe, inputs.device)
    with torch.inference_mode():
        before = forward_subnet(model, probe["input_ids"], probe["attention_mask"], probe.get("token_type_ids")).logits
    after_imp = rewire(model, imp)
    with torch.inference_mode():
        after = forward_subnet(model, probe["input_ids"], probe["attention_mask"], probe.get("token_type_ids")).logits
    diff = float((before - after).abs().max())
    if diff > 1e-3:
        raise InternalError(f"rewiring changed the model's logits by {diff:.2e}: this is a bug, please report it")
    project.save_importance(
        {"head": imp.head, "neuron": imp.neuron, "head_rewired": after_imp.head, "neuron_rewired": after_imp.neuron},
        {
            "batches": imp.batches,
            "examples": len(inputs.heldout),
            "split": project.config.train.importance_split,
            "rewire_max_logit_diff": diff,
        },
    )
    project.save_model("rewired", model)
    return _finish(project, "rewire", t0, events, steps=imp.batches)


def _distill(project: Project, stage: str, source: str, specs, l1, l2, epochs, lr, events, stop) -> StageResult:
    """Distil the frozen `source` model at full size into a copy of itself trained at every spec."""
    t0 = time.perf_counter()
    inputs = prepare_inputs(project, events)
    t = project.config.train
    teacher = project.load_model(source, inputs.device)
    student = project.load_model(source, inputs.device)
    rows, augment = distill_rows(inputs, events, stop)
    k = t.sandwich if stage == "depth" else 0
    sample = SandwichSampler(student.config, t, k) if k else None

    def step_fn(m, b, ctx):
        extra = sample(ctx.step) if sample is not None else []
        losses = distill_step(
            m,
            teacher,
            b,
            [*specs, *extra],
            l1=l1,
            l2=l2,
            depth_rule=t.depth_rule,
            is_regression=inputs.task.is_regression,
            ctx=ctx,
        )
        if extra:  # one curve for the sampled shapes (each step's are new): their mean loss
            losses["sampled"] = torch.stack([losses.pop(a.label) for a in extra]).mean()
        return losses

    info = _train(inputs, stage, student, step_fn, epochs, lr, specs, events, stop, data=rows)
    project.save_model(STAGE_MODEL[stage], student)
    extra_info = {"sandwich": k} if k else {}
    return _finish(project, stage, t0, events, steps=info["steps"], augment=augment, **extra_info)


class SandwichSampler:
    """The random shapes of one depth-stage step: `k` distinct shapes of the search space (search.Space: a trained
    depth, per layer a trained width's heads and neurons), drawn from a generator seeded by (seed, step), so every
    process of a torchrun run draws the same ones and a resumed stage draws what it would have."""

    def __init__(self, config, train, k: int):
        from .search import Space

        self.space, self.seed, self.k = Space.of(config, train), train.seed, k

    def __call__(self, step: int) -> list:
        rng = np.random.default_rng([self.seed, step, 0x5A4D])
        out: dict = {}
        for _ in range(20 * self.k):
            a = self.space.random(rng)
            out.setdefault(a.label, a)
            if len(out) == self.k:
                break
        return list(out.values())


@_tracked
def width_job(project: Project, request: StageRequest, events, stop: StopToken) -> StageResult:
    """Stage 1: distil the rewired teacher into every width at full depth (models/width)."""
    t = project.config.train
    if t.stage_order == "joint":
        why = "stage_order is joint: the depth stage distils the rewired teacher into every width and depth at once"
        return _skip(project, "width", time.perf_counter(), events, why)
    specs = [SubnetSpec(w, 1.0) for w in sorted(set(t.width_mults), reverse=True)]
    return _distill(
        project, "width", "rewired", specs, t.width_l1, t.width_l2, t.width_epochs, t.width_lr, events, stop
    )


@_tracked
def depth_job(project: Project, request: StageRequest, events, stop: StopToken) -> StageResult:
    """Stage 2: the width model at full size teaches every width x depth (models/depth); with stage_order joint, the
    rewired teacher does, for the epochs of both stages."""
    t = project.config.train
    specs = subnet_grid(t.width_mults, t.depth_mults)
    if t.stage_order == "joint":  # one stage from the rewired teacher, as many updates as the two stages make
        epochs = t.width_epochs + t.depth_epochs
        return _distill(project, "depth", "rewired", specs, t.depth_l1, t.depth_l2, epochs, t.depth_lr, events, stop)
    return _distill(project, "depth", "width", specs, t.depth_l1, t.depth_l2, t.depth_epochs, t.depth_lr, events, stop)


@_tracked
def finetune_subnets_job(project: Project, request: StageRequest, events, stop: StopToken) -> StageResult:
    """Optional: plain task-loss fine-tuning of every sub-network (models/subnets)."""
    t0 = time.perf_counter()
    t = project.config.train
    if t.subnet_epochs <= 0:
        return _skip(project, "finetune-subnets", t0, events, "subnet_epochs is 0")
    inputs = prepare_inputs(project, events)
    model = project.load_model("depth", inputs.device)
    specs = subnet_grid(t.width_mults, t.depth_mults)
    step_fn = lambda m, b, ctx: task_step(
        m, b, specs, depth_rule=t.depth_rule, is_regression=inputs.task.is_regression, ctx=ctx
    )
    info = _train(inputs, "finetune-subnets", model, step_fn, t.subnet_epochs, t.subnet_lr, specs, events, stop)
    project.save_model("subnets", model)
    return _finish(project, "finetune-subnets", t0, events, steps=info["steps"])


@_tracked
def int8_aware_job(project: Project, request: StageRequest, events, stop: StopToken) -> StageResult:
    """Optional: quantization-aware distillation (models/int8). Every sub-network, computed as its INT8 export
    computes it, learns from the same sub-network of the full-precision model (distill.int8_step), in fp32. The INT8
    exports quantize this model's weights; the fp32 exports and results.json keep the model before it."""
    t0 = time.perf_counter()
    t = project.config.train
    if t.int8_epochs <= 0:
        return _skip(project, "int8-aware", t0, events, "int8_epochs is 0")
    inputs = prepare_inputs(project, events)
    source = final_model_name(project)
    teacher = project.load_model(source, inputs.device).eval()
    student = project.load_model(source, inputs.device)
    specs = subnet_grid(t.width_mults, t.depth_mults)
    step_fn = lambda m, b, ctx: int8_step(
        m,
        teacher,
        b,
        specs,
        l1=t.depth_l1,
        l2=t.depth_l2,
        depth_rule=t.depth_rule,
        is_regression=inputs.task.is_regression,
        ctx=ctx,
    )
    rows, augment = distill_rows(inputs, events, stop)
    info = _train(
        inputs, "int8-aware", student, step_fn, t.int8_epochs, t.int8_lr, specs, events, stop, "fp32", data=rows
    )
    project.save_model("int8", student)
    return _finish(project, "int8-aware", t0, events, steps=info["steps"], emulation=INT8_EMULATION, augment=augment)


@_tracked
def evaluate_job(project: Project, request: StageRequest, events, stop: StopToken) -> StageResult:
    """Score every sub-network of the most trained model on dev: results.json (its only writer)."""
    t0 = time.perf_counter()
    inputs = prepare_inputs(project, events)
    name = final_model_name(project)
    model = project.load_model(name, inputs.device)
    info = project.stage_info("finetune")
    teacher = info.get("metrics") or info.get("dev") or {}  # "dev": projects made before 0.2
    results = evaluate_grid(inputs, model, name, teacher, events, stop)
    project.save_evaluation(results)
    return _finish(project, "evaluate", t0, events, steps=len(results["rows"]))


STAGE_JOBS = {
    "finetune": finetune_job,
    "rewire": rewire_job,
    "width": width_job,
    "depth": depth_job,
    "finetune-subnets": finetune_subnets_job,
    "int8-aware": int8_aware_job,
    "evaluate": evaluate_job,
}
assert tuple(STAGE_JOBS) == STAGES


def pending_stages(project: Project, until: str | None = None) -> list[str]:
    """The stages `run` would run, in order (what the studio shows as "next")."""
    if until is not None and until not in STAGES:
        raise ConfigError(f"unknown stage '{until}': choose one of {', '.join(STAGES)}")
    return stages_to_run(project, until)  # the store's rule (torch-free), which the studio reads too


# the stages a run starts in a child process of their own (core/stageproc.py): the long trainings that follow
# other stages. The teacher's fine-tuning comes first (its process is still fresh), rewiring and the final
# evaluation are short: they run in the run's own process and spare a process start (about 5-7 s) each.
CHILD_STAGES = ("width", "depth", "finetune-subnets", "int8-aware")


def _in_child(project: Project, stage: str) -> bool:
    """Whether a run with stage processes starts `stage` in a child: one of CHILD_STAGES that trains (an optional
    stage its settings turn off only records its skip)."""
    t = project.config.train
    skips = (stage == "finetune-subnets" and t.subnet_epochs <= 0) or (stage == "int8-aware" and t.int8_epochs <= 0)
    return stage in CHILD_STAGES and not skips


@_tracked
def run_job(project: Project, request: RunRequest, events, stop: StopToken) -> RunResult:
    """Run every unfinished stage in order, each resuming mid-stage from its checkpoint, up to `request.until`."""
    ran: list[str] = []
    in_children = request.stage_processes and not runtime.initialized()
    for stage in pending_stages(project, request.until):
        runtime.check_stop(stop)
        if ran:
            runtime.release_memory()
        if in_children and _in_child(project, stage):
            from .stageproc import run_stage_in_child

            try:
                run_stage_in_child(project.root, stage, events, stop)
            finally:
                project.reload_state()  # the child recorded the stage in state.json
        else:
            STAGE_JOBS[stage](project, StageRequest(), events, stop)
        ran.append(stage)
    return RunResult(tuple(ran))


def run_stage_job(project: Project, request: StageRunRequest, events, stop: StopToken) -> StageResult:
    """One stage of a run, in the child process the run started for it (core.stageproc). No lock of its own (the
    run holds it), and no trackers: the run's process relays these events to its own (train.report_to)."""
    from dataclasses import replace

    if request.stage not in STAGE_JOBS:
        raise InternalError(f"run-stage: unknown stage {request.stage!r}")
    project.config = replace(project.config, train=replace(project.config.train, report_to="none"))
    return STAGE_JOBS[request.stage](project, StageRequest(), events, stop)
