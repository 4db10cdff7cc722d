"""How long the whole pipeline takes on this machine: each stage's steps counted as the training loop counts them,
times the costs of a few real training steps of the project's own model timed here (the `estimate` job).

The cost model, per padded token of a batch: a sub-network's forward+backward costs `overhead + (1 - overhead) * f`
of the full model's, f its share of the full model's FLOPs (core.dynamic.subnet_size), the overhead (embeddings,
the classifier, the per-layer bookkeeping that does not shrink) fitted from the smallest sub-network's timed steps
(and separately for inference). A distillation step is one teacher forward plus every sub-network's forward+backward
(with its hidden states and their loss, timed once as a factor) plus one optimizer step; an evaluation is every
sub-network's forward over dev; checkpoints, model loads and saves are timed once too.
"""

from __future__ import annotations

import shutil
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from . import runtime
from .augmentation import planned_distill_rows
from .data.batching import batch_order, iterate_batches, num_batches, row_lengths, to_device
from .data.encoding import Encoded
from .distill import total_steps
from .dynamic import SubnetSpec, subnet_grid, subnet_size
from .events import LogMessage, StopToken, null_sink
from .prepare import RunInputs, prepare_inputs
from .requests import EstimateRequest
from .store.estimate import (
    Estimate,
    StageEstimate,
    about,
    current_estimate,
    estimate_key,
    save_estimate,
    stages_to_run,
)

TIMED_STEPS = 3  # after one warm-up step: enough for a median, a few seconds for MiniLM on 2 CPU cores
DEFAULT_OVERHEAD = 0.1  # when the grid has no smaller sub-network to fit it from


@dataclass(frozen=True)
class StagePlan:
    """What a stage does, as core.stages runs it: its rows, the sub-networks each step trains, how many epochs."""

    stage: str
    data: Encoded | None  # the training rows (None: no training steps)
    epochs: float
    train_specs: tuple[SubnetSpec, ...]
    eval_specs: tuple[SubnetSpec, ...]
    teacher: bool = False  # a frozen teacher's forward each step (distillation)
    hidden_loss: bool = False  # the students' hidden states are matched to the teacher's (l2 > 0)
    loads: int = 1
    saves: int = 1
    skipped: bool = False


def sandwich_proxies(t) -> tuple[SubnetSpec, ...]:
    """What train.sandwich's random shapes cost, for timing: each as a uniform shape of the mean width and depth
    they are drawn from (a layer's width and the depth are drawn uniformly from the trained ones)."""
    if not t.sandwich:
        return ()
    w = sum(t.width_mults) / len(t.width_mults)
    d = sum(t.depth_mults) / len(t.depth_mults)
    return (SubnetSpec(w, d),) * t.sandwich


def teacher_epochs(inputs: RunInputs) -> float:
    """The finetune stage's epochs over the train rows: the teacher's own, or with train.teacher_lr null (and rows
    held out to choose on), the trial's short runs and a whole teacher for each rate of the race (stages._teacher_lr).
    The trial's first round only: a round that leaves every rate tied runs again longer, which cannot be foreseen
    (each longer round doubles the last, up to a quarter of the teacher's steps: at worst, across the four rates,
    under twice the teacher's steps more)."""
    from .config import TEACHER_LR_CANDIDATES, TEACHER_LR_RACE, teacher_lr_trial_steps

    t = inputs.cfg.train
    if t.teacher_lr is not None or t.importance_split != "heldout" or not len(inputs.heldout):
        return t.teacher_epochs
    total, per_epoch = total_steps(len(inputs.train), t.batch_size, t.teacher_epochs)
    trial = len(TEACHER_LR_CANDIDATES) * teacher_lr_trial_steps(total)
    return TEACHER_LR_RACE * t.teacher_epochs + trial / max(1, per_epoch)


def stage_plans(inputs: RunInputs) -> list[StagePlan]:
    t, cfg = inputs.cfg.train, inputs.cfg
    full = (SubnetSpec(),)
    widths = tuple(SubnetSpec(w, 1.0) for w in sorted(set(t.width_mults), reverse=True))
    grid = tuple(subnet_grid(t.width_mults, t.depth_mults))
    rows = inputs.student_rows
    distilled = planned_distill_rows(inputs)  # with the augmented and unlabeled rows
    joint = t.stage_order == "joint"  # no width stage; the depth stage trains for both stages' epochs
    return [
        StagePlan("finetune", None if cfg.model_is_finetuned else inputs.train, teacher_epochs(inputs), full, full),
        StagePlan("rewire", None, 0.0, (), ()),
        StagePlan(
            "width",
            distilled,
            t.width_epochs,
            widths,
            widths,
            teacher=True,
            hidden_loss=t.width_l2 > 0,
            loads=2,
            skipped=joint,
        ),
        StagePlan(
            "depth",
            distilled,
            t.depth_epochs + (t.width_epochs if joint else 0.0),
            grid + sandwich_proxies(t),
            grid,
            teacher=True,
            hidden_loss=t.depth_l2 > 0,
            loads=2,
        ),
        StagePlan("finetune-subnets", rows, t.subnet_epochs, grid, grid, skipped=t.subnet_epochs <= 0),
        # a teacher pass per sub-network, in fp32, with the rounding emulated: timed as a distillation step, which
        # underestimates it
        StagePlan(
            "int8-aware",
            distilled,
            t.int8_epochs,
            grid,
            grid,
            teacher=True,
            hidden_loss=t.depth_l2 > 0,
            loads=2,
            skipped=t.int8_epochs <= 0,
        ),
        StagePlan("evaluate", None, 0.0, (), grid, saves=0),
    ]


def evaluations(total: int, per_epoch: int) -> int:
    """Dev evaluations train_loop runs: after every epoch's last step, and after the last step."""
    return total // per_epoch + (1 if total % per_epoch else 0) if per_epoch else 0


# ---- tokens: what a batch costs is its rows x its longest row -----------------------------------------------
def epoch_tokens(enc: Encoded, batch_size: int, seed: int, group_by_length: bool) -> int:
    lengths = row_lengths(enc)
    batches = batch_order(lengths, batch_size, shuffle=True, seed=seed, epoch=0, group_by_length=group_by_length)
    return int(sum(len(b) * lengths[b].max() for b in batches))


def ordered_tokens(enc: Encoded, batch_size: int, by_length: bool) -> int:
    """Padded tokens of `enc` in batches of `batch_size`, in file order (rewire) or sorted by length (predict)."""
    lengths = row_lengths(enc)
    if by_length:
        lengths = np.sort(lengths)
    return int(sum(len(c) * c.max() for c in np.array_split(lengths, num_batches(len(lengths), batch_size)) if len(c)))


def _rows(enc: Encoded, idx) -> Encoded:
    types = None if enc.token_type_ids is None else [enc.token_type_ids[i] for i in idx]
    return Encoded([enc.input_ids[i] for i in idx], types, [enc.labels[i] for i in idx], enc.is_regression)


def typical_batches(enc: Encoded, batch_size: int, seed: int, group_by_length: bool, n: int, pad_id: int) -> list:
    """`n` padded training batches of epoch 0 whose sizes are closest to the epoch's mean (as iterate_batches pads)."""
    lengths = row_lengths(enc)
    order = batch_order(lengths, batch_size, shuffle=True, seed=seed, epoch=0, group_by_length=group_by_length)
    sizes = np.array([len(b) * lengths[b].max() for b in order], dtype=np.float64)
    pick = np.argsort(np.abs(sizes - sizes.mean()), kind="stable")[:n]
    return [next(iterate_batches(_rows(enc, order[i]), len(order[i]), shuffle=False, pad_id=pad_id)) for i in pick]


# ---- timing ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Timing:
    """This machine's unit costs, in seconds."""

    load: float  # loading the model
    save: float  # writing its weights
    fb_token: float  # full model forward + backward, per padded token
    optimizer: float  # gradient clipping + AdamW step + zeroing, per step
    teacher_token: float  # full model forward without gradients (hidden states kept), per padded token
    eval_token: float  # full model inference as evaluation runs it, per padded token
    overhead: float  # the share of a forward+backward that does not shrink with the sub-network
    eval_overhead: float  # the same for inference, where the per-layer bookkeeping weighs more
    hidden: float  # a distillation pass (hidden states out, their loss) against a plain one, both forward+backward
    prepare: float  # reading the encoded task

    def share(self, f: float, inference: bool = False) -> float:
        o = self.eval_overhead if inference else self.overhead
        return o + (1.0 - o) * f


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clock(fn, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _tokens(batch: dict) -> int:
    return int(batch["input_ids"].numel())


def measure(inputs: RunInputs, events=null_sink, stop: StopToken | None = None, prepare_s: float = 0.0) -> Timing:
    """Time the project's model on a few real training batches of this machine, with the run's device and precision."""
    from .distill import StepContext, SubnetRunner, distill_step, make_optimizer, task_step, teacher_forward
    from .evaluate import eval_batch_size, predict
    from .models import load_base_model
    from .tensorfiles import atomic_save_tensors

    cfg, t, device = inputs.cfg, inputs.cfg.train, inputs.device
    stop = stop or StopToken()
    t0 = time.perf_counter()
    model = load_base_model(cfg.model, inputs.task, cfg.model_is_finetuned, t.seed)
    model = model.to(device)
    load_s = time.perf_counter() - t0
    # on the project's own disk (a temporary folder may be in memory), under one name a killed estimate cannot multiply
    tmp = Path(inputs.project.root) / ".estimate-timing.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_s = _clock(lambda: atomic_save_tensors(tmp / "model.safetensors", model.state_dict()), device)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stop.check()

    batches = [
        to_device(b, device)
        for b in typical_batches(inputs.train, t.batch_size, t.seed, t.group_by_length, TIMED_STEPS + 1, inputs.pad_id)
    ]
    warm, timed = batches[0], batches[1:] or batches
    ctx = StepContext(SubnetRunner(model), device, inputs.precision)
    optimizer = make_optimizer(model, 1e-6, t.weight_decay)  # a tiny lr: the weights barely move, and are not kept
    regression = inputs.task.is_regression
    full, grid = SubnetSpec(), subnet_grid(t.width_mults, t.depth_mults)
    smallest = min(grid, key=lambda s: (s.width_mult * s.depth_mult, s.width_mult))

    def fb(batch, spec):
        return lambda: task_step(model, batch, [spec], depth_rule=t.depth_rule, is_regression=regression, ctx=ctx)

    def opt_step():
        if t.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    model.train()
    fb(warm, full)()
    opt_step()  # the first AdamW step allocates its state: not a typical step
    events(LogMessage(f"timing {len(timed)} training steps of the model on {device.type}"))
    fb_full, opt, fb_small = [], [], []
    for b in timed:
        stop.check()
        fb_full.append(_clock(fb(b, full), device) / _tokens(b))
        opt.append(_clock(opt_step, device))
    for b in timed:
        stop.check()
        fb_small.append(_clock(fb(b, smallest), device) / _tokens(b))
        optimizer.zero_grad(set_to_none=True)
    small_f = _flops_share(model.config, smallest, t.depth_rule, _mean_len(timed))
    overhead = _overhead(statistics.median(fb_small) / statistics.median(fb_full), small_f)
    teacher, distilled = [], []
    for b in timed:
        stop.check()
        with runtime.autocast(device, inputs.precision):
            teacher.append(_clock(lambda b=b: teacher_forward(model, b), device) / _tokens(b))
        # the model is its own teacher here: one teacher forward, one student pass with hidden states and their loss
        step = lambda b=b: distill_step(  # noqa: E731
            model, model, b, [full], l1=1.0, l2=1.0, depth_rule=t.depth_rule, is_regression=regression, ctx=ctx
        )
        distilled.append(_clock(step, device) / _tokens(b))
        optimizer.zero_grad(set_to_none=True)
    hidden = (statistics.median(distilled) - statistics.median(teacher)) / statistics.median(fb_full)
    stop.check()
    rule, rows = t.depth_rule, eval_batch_size(cfg, device)
    sample = np.random.default_rng(0).permutation(len(inputs.dev))[: max(16, min(len(inputs.dev), 2 * rows))]
    dev = _rows(inputs.dev, sample)

    def infer(spec):
        return lambda: predict(model, dev, spec, rule, rows, inputs.pad_id, device)  # fp32, as evaluation runs

    predict(model, _rows(dev, range(min(8, len(dev)))), full, rule, rows, inputs.pad_id, device)
    eval_full, eval_small = _clock(infer(full), device), _clock(infer(smallest), device)
    eval_f = _flops_share(model.config, smallest, t.depth_rule, max(1, round(float(np.mean(row_lengths(dev))))))
    return Timing(
        load=load_s,
        save=save_s,
        fb_token=statistics.median(fb_full),
        optimizer=statistics.median(opt),
        teacher_token=statistics.median(teacher),
        eval_token=eval_full / max(1, ordered_tokens(dev, rows, by_length=True)),
        overhead=overhead,
        eval_overhead=_overhead(eval_small / eval_full, eval_f),
        hidden=min(2.0, max(1.0, hidden)),
        prepare=prepare_s,
    )


def _overhead(ratio: float, f: float) -> float:
    """The fixed share o in `cost(f) = o + (1 - o) * f`, from the smallest sub-network's cost ratio to the full one."""
    if f >= 1.0:
        return DEFAULT_OVERHEAD  # the grid has no smaller sub-network to tell
    return min(0.9, max(0.0, (ratio - f) / (1.0 - f)))


def _flops_share(config, spec: SubnetSpec, rule: str, seq: int) -> float:
    return subnet_size(config, spec, rule, seq)["flops"] / subnet_size(config, SubnetSpec(), rule, seq)["flops"]


def _mean_len(batches: list) -> int:
    return max(1, round(statistics.mean(b["input_ids"].shape[1] for b in batches)))


# ---- the estimate ---------------------------------------------------------------------------------------------
def estimate_pipeline(project, events=null_sink, *, timing: bool = True, stop: StopToken | None = None) -> Estimate:
    """Every stage's steps, evaluations and checkpoints, and (with `timing`) its predicted seconds on this machine.
    Without `timing` only the counting is done (seconds 0, measured_at None): quick, and what the tests compare with
    a real run's step counts."""
    t0 = time.perf_counter()
    inputs = prepare_inputs(project, events)
    prepare_s = time.perf_counter() - t0
    unit = measure(inputs, events, stop, prepare_s) if timing else None
    fractions = _fractions(inputs, unit)
    stages = [_stage(inputs, plan, unit, fractions) for plan in stage_plans(inputs)]
    return Estimate(
        key=estimate_key(project),
        stages=tuple(stages),
        measured_at=time.time() if timing else None,
        threads=torch.get_num_threads() if inputs.device.type == "cpu" else None,
        device=str(inputs.device),
        precision=inputs.precision,
        startup_seconds=unit.prepare if unit else 0.0,
        timing={k: float(v) for k, v in vars(unit).items()} if unit else {},
    )


def _fractions(inputs: RunInputs, unit: Timing | None) -> dict[SubnetSpec, float]:
    """Each sub-network's share of the full model's FLOPs at the training rows' mean length (1.0 when not timing)."""
    t = inputs.cfg.train
    specs = set(subnet_grid(t.width_mults, t.depth_mults)) | {SubnetSpec(w, 1.0) for w in t.width_mults}
    specs |= set(sandwich_proxies(t))
    if unit is None:
        return {s: 1.0 for s in specs}
    from .models import load_model_config

    config = load_model_config(inputs.cfg.model)
    seq = max(1, round(float(np.mean(row_lengths(inputs.train)))) if len(inputs.train) else t.max_seq_length)
    return {s: _flops_share(config, s, t.depth_rule, seq) for s in specs}


def _stage(inputs: RunInputs, plan: StagePlan, unit: Timing | None, flops: dict[SubnetSpec, float]) -> StageEstimate:
    t = inputs.cfg.train
    dev_tokens = ordered_tokens(inputs.dev, _eval_rows(inputs), by_length=True)
    eval_s = 0.0
    if unit is not None:
        eval_s = sum(unit.share(flops.get(s, 1.0), inference=True) for s in plan.eval_specs) * dev_tokens
        eval_s *= unit.eval_token
    fixed = (plan.loads * unit.load + plan.saves * unit.save) if unit else 0.0
    out = StageEstimate(plan.stage, skipped=plan.skipped)
    if plan.skipped:
        return out
    if plan.stage == "rewire":
        n = num_batches(len(inputs.heldout), t.batch_size)
        tokens = ordered_tokens(inputs.heldout, t.batch_size, by_length=False)
        per = unit.fb_token * tokens / max(1, n) if unit else 0.0
        return replace(out, steps=n, step_seconds=per, fixed_seconds=fixed)
    if plan.stage == "evaluate":
        return replace(out, evals=1, eval_seconds=eval_s, fixed_seconds=fixed)
    if plan.data is None:  # finetune of a model given as fine-tuned: the teacher's check only
        return replace(out, evals=1, eval_seconds=eval_s, fixed_seconds=fixed, skipped=True)
    steps, per_epoch = total_steps(len(plan.data), t.batch_size, plan.epochs)
    evals = evaluations(steps, per_epoch) + (1 if plan.stage == "finetune" else 0)  # + the teacher's check
    checkpoints = (steps - 1) // t.checkpoint_every if t.checkpoint_every > 0 else 0
    per = 0.0
    if unit is not None:
        batch_tokens = epoch_tokens(plan.data, t.batch_size, t.seed, t.group_by_length) / max(1, per_epoch)
        work = sum(unit.share(flops.get(s, 1.0)) for s in plan.train_specs) * unit.fb_token
        if plan.hidden_loss:
            work *= unit.hidden
        per = batch_tokens * (work + (unit.teacher_token if plan.teacher else 0.0)) + unit.optimizer
        # and by the clock: at least every checkpoint_minutes, whatever the step count
        checkpoints = max(checkpoints, int(steps * per // (t.checkpoint_minutes * 60)))
    return replace(
        out,
        steps=steps,
        steps_per_epoch=per_epoch,
        evals=evals,
        checkpoints=checkpoints,
        checkpoint_every=t.checkpoint_every,
        step_seconds=per,
        eval_seconds=eval_s,
        checkpoint_seconds=3 * unit.save if unit else 0.0,  # the weights and AdamW's two moments
        fixed_seconds=fixed,
    )


def _eval_rows(inputs: RunInputs) -> int:
    from .evaluate import eval_batch_size

    return eval_batch_size(inputs.cfg, inputs.device)


# ---- the job ------------------------------------------------------------------------------------------------
def estimate_job(project, request: EstimateRequest, events, stop: StopToken) -> dict:
    """The saved estimate when it still fits the settings; else time this machine (refused while a run trains: it
    would time a busy machine and slow the run) and save it as estimate.json."""
    from . import runs

    stop.check()
    if not request.again:
        cached = current_estimate(project)
        if cached is not None:
            return cached.to_dict()
    runs.check_not_running(project.root, "time this machine for an estimate while a run trains (it waits)")
    est = estimate_pipeline(project, events, stop=stop)
    save_estimate(project, est)
    events(LogMessage(f"whole pipeline: {about(est.seconds(stages_to_run(project)))} on this machine"))
    return est.to_dict()
