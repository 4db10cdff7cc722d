"""Distillation losses and the one training loop every stage uses (finetune, width, depth, sub-network finetune)."""

from __future__ import annotations

import contextlib
import math
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import runtime
from .data.batching import iterate_batches, num_batches, to_device
from .data.encoding import Encoded
from .dynamic import AnySpec, SubnetOutput, embed, forward_subnet, spec_targets
from .errors import Cancelled, ConfigError, InternalError
from .events import CheckpointSaved, LogMessage, StageStarted, StepEnded, StopToken
from .importance import task_loss


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the student against the teacher's soft labels (temperature 1)."""
    return (-F.softmax(teacher_logits, dim=-1) * F.log_softmax(student_logits, dim=-1)).sum(-1).mean()


def logits_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, is_regression: bool) -> torch.Tensor:
    if is_regression:
        return F.mse_loss(student_logits, teacher_logits)
    return soft_cross_entropy(student_logits, teacher_logits)


def masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error over real tokens only: padding would otherwise dilute the loss per batch.
    Computed in fp32 whatever precision the hidden states came in."""
    a, b = a.float(), b.float()
    if mask is None:
        return F.mse_loss(a, b)
    m = mask.to(a.dtype).unsqueeze(-1)
    return ((a - b).pow(2) * m).sum() / (m.sum() * a.shape[-1]).clamp_min(1.0)


def hidden_loss(student_hidden: Sequence[torch.Tensor], teacher_hidden: Sequence[torch.Tensor], mask) -> torch.Tensor:
    # sum() starts from the int 0: the first layer's loss is added to it, so the result is a tensor (both lists
    # are never empty: every sub-network keeps at least one layer)
    return cast(torch.Tensor, sum(masked_mse(s, t, mask) for s, t in zip(student_hidden, teacher_hidden)))


class SubnetRunner(nn.Module):
    """`forward_subnet` as a module's forward, so DistributedDataParallel sees every sub-network pass
    (its gradient hooks and no_sync work on a module's forward, not on a function)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids,
        attention_mask,
        token_type_ids,
        spec: AnySpec,
        depth_rule: str,
        need_hidden: bool,
        padded: bool | None = None,
        embedded: torch.Tensor | None = None,
        int8: bool = False,
    ):
        out = forward_subnet(
            self.model,
            input_ids,
            attention_mask,
            token_type_ids,
            spec=spec,
            depth_rule=depth_rule,
            need_hidden=need_hidden,
            padded=padded,
            embedded=embedded,
            int8=int8,
        )
        return out.logits, tuple(out.hidden_states)


@dataclass
class StepContext:
    """How one training step runs: the runner to call (plain, or wrapped in DDP), the precision, and this
    process's share of the global batch.

    Losses are weighted by the share (rows for per-row means, real tokens for per-token means) and the
    backward pass multiplies by the world size, so DDP's average over processes gives exactly the
    gradient of the global batch's loss, whatever the split. In one process every factor is 1.
    """

    runner: nn.Module
    device: torch.device = torch.device("cpu")
    precision: str = "fp32"
    scaler: torch.amp.GradScaler | None = None
    world: int = 1
    row_share: float = 1.0
    token_share: float = 1.0
    step: int = 0  # the optimizer steps done before this one (what a step's random draws are seeded with)

    @staticmethod
    def plain(model: nn.Module) -> StepContext:
        return StepContext(SubnetRunner(model), next(model.parameters()).device)

    def for_batch(self, batch: dict) -> StepContext:
        if "n_rows_global" not in batch:
            return self
        rows = batch["attention_mask"].shape[0]
        # counted on the CPU when batching: summing the mask on a GPU would wait for the device
        tokens = batch["n_tokens"] if "n_tokens" in batch else int(batch["attention_mask"].sum())
        return replace(self, row_share=rows / batch["n_rows_global"], token_share=tokens / batch["n_tokens_global"])

    def autocast(self):
        return runtime.autocast(self.device, self.precision)

    def forward(
        self,
        batch: dict,
        spec: AnySpec,
        depth_rule: str,
        need_hidden: bool = False,
        shared: SharedEmbedding | None = None,
        int8: bool = False,
    ) -> SubnetOutput:
        logits, hidden = self.runner(
            batch["input_ids"],
            batch["attention_mask"],
            batch.get("token_type_ids"),
            spec=spec,
            depth_rule=depth_rule,
            need_hidden=need_hidden,
            padded=batch.get("padded"),
            embedded=shared.leaf if shared is not None else None,
            int8=int8,
        )
        return SubnetOutput(logits, list(hidden), [])

    def share_embedding(self, batch: dict, passes: int, int8: bool = False) -> SharedEmbedding | None:
        """The step's embeddings computed once for its `passes` sub-network passes, or None to let each pass
        compute its own: with one pass, and under DDP, whose gradient sync only covers backward passes that go
        through its forward."""
        if passes < 2 or isinstance(self.runner, DistributedDataParallel):
            return None
        model = self.runner.model
        with self.autocast():
            output = embed(model, batch["input_ids"], batch.get("token_type_ids"), int8)
        return SharedEmbedding(output, output.detach().requires_grad_(True))

    def sync(self, last: bool):
        """DDP averages gradients over processes once per step, in the last backward pass: earlier passes
        accumulate locally (no_sync)."""
        if last or not isinstance(self.runner, DistributedDataParallel):
            return contextlib.nullcontext()
        return self.runner.no_sync()

    def backward(self, loss: torch.Tensor) -> None:
        loss = loss * self.world
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()


@dataclass
class SharedEmbedding:
    """One embeddings pass shared by a step's sub-network passes.

    Every pass starts from `leaf` (the same values, cut from the graph), draws its own dropout on it and runs
    its own backward, which stops at `leaf` and adds its gradient there. `backward` then sends the sum through
    the embeddings once. The gradient is linear in what flows back, so the parameters get the same gradient
    as with one embeddings backward per pass, at 1/passes of the cost: that backward is dominated by a dense
    gradient of the whole word-embedding table (30,522 x 384 for MiniLM), zero-filled and added in each time.
    """

    output: torch.Tensor  # before dropout, in the graph of the embedding parameters
    leaf: torch.Tensor

    def backward(self) -> None:
        if self.leaf.grad is not None:
            self.output.backward(self.leaf.grad)


def sync_last(specs: Sequence[AnySpec]) -> list[AnySpec]:
    """The sub-networks in the order one step runs them: the full model last.

    DDP syncs gradients in the last backward pass of a step, and only for the parameters that pass used
    (pytorch issue 69031: parameters used only in earlier no_sync passes were left unsynced). The full
    model uses every parameter, so running it last makes the one sync cover all gradients accumulated
    by the smaller sub-networks before it.
    """
    full = [s for s in specs if s.is_full]
    return [s for s in specs if not s.is_full] + full


@dataclass
class Teacher:
    logits: torch.Tensor
    hidden: list[torch.Tensor]  # embedding output, then every layer's output


@torch.no_grad()
def teacher_forward(teacher: nn.Module, batch: dict) -> Teacher:
    out = forward_subnet(
        teacher,
        batch["input_ids"],
        batch["attention_mask"],
        batch.get("token_type_ids"),
        need_hidden=True,
        padded=batch.get("padded"),
    )
    return Teacher(out.logits, out.hidden_states)


def each_subnet(
    ctx: StepContext,
    batch: dict,
    specs: Sequence[AnySpec],
    loss_of: Callable[[AnySpec, SharedEmbedding | None], torch.Tensor],
    int8: bool = False,
) -> dict[str, torch.Tensor]:
    """The loop every step shares: each sub-network's loss (`loss_of`) and its backward, the full model last (its
    pass syncs DDP's gradients), the embeddings shared when they can be. Returns each sub-network's loss, detached,
    in `specs`' order."""
    losses: dict[str, torch.Tensor | None] = {spec.label: None for spec in specs}  # filled below, in specs' order
    order = sync_last(specs)
    shared = ctx.share_embedding(batch, len(order), int8)
    for i, spec in enumerate(order):
        with ctx.sync(last=i == len(order) - 1):
            loss = loss_of(spec, shared)
            ctx.backward(loss)
        losses[spec.label] = loss.detach()
    if shared is not None:
        shared.backward()
    return cast(dict[str, torch.Tensor], losses)  # every spec's entry is set above


def distill_step(
    student: nn.Module,
    teacher: nn.Module,
    batch: dict,
    specs: Sequence[AnySpec],
    *,
    l1: float,
    l2: float,
    depth_rule: str,
    is_regression: bool,
    ctx: StepContext | None = None,
) -> dict[str, torch.Tensor]:
    """One teacher forward, then each sub-network: loss, backward (gradients add up). No optimizer step here.

    Each kept student layer is matched to the teacher layer it stands for (see `layer_targets`);
    the embedding output is always matched. Returns each sub-network's loss (detached, this process's
    weighted share: summed over processes it is the global batch's loss).
    """
    ctx = (ctx or StepContext.plain(student)).for_batch(batch)
    with ctx.autocast():
        t = teacher_forward(teacher, batch)
    mask = batch["attention_mask"]
    L = student.config.num_hidden_layers

    def loss_of(spec: AnySpec, shared: SharedEmbedding | None) -> torch.Tensor:
        with ctx.autocast():
            out = ctx.forward(batch, spec, depth_rule, need_hidden=l2 > 0, shared=shared)
            loss = (l1 * ctx.row_share) * logits_loss(out.logits.float(), t.logits.float(), is_regression)
            if l2 > 0:
                targets = [t.hidden[0]] + [t.hidden[j + 1] for j in spec_targets(spec, L, depth_rule)]
                loss = loss + (l2 * ctx.token_share) * hidden_loss(out.hidden_states, targets, mask)
        return loss

    return each_subnet(ctx, batch, specs, loss_of)


def int8_step(
    student: nn.Module,
    teacher: nn.Module,
    batch: dict,
    specs: Sequence[AnySpec],
    *,
    l1: float,
    l2: float,
    depth_rule: str,
    is_regression: bool,
    ctx: StepContext | None = None,
) -> dict[str, torch.Tensor]:
    """Quantization-aware distillation: each sub-network, computed as its INT8 file computes it (fake-quantized
    weights and activations, see quantaware.py), learns the outputs and hidden states of the same sub-network of
    the frozen full-precision `teacher`, the model the INT8 file's agreement is measured against. The same losses
    as the depth stage; every layer is matched to itself (both keep the same layers). Runs in fp32: the rounding
    it emulates is finer than bf16's."""
    ctx = (ctx or StepContext.plain(student)).for_batch(batch)
    if ctx.precision != "fp32":
        raise InternalError(f"the INT8-aware step runs in fp32, not {ctx.precision}: the stage sets it")
    mask = batch["attention_mask"]

    def loss_of(spec: AnySpec, shared: SharedEmbedding | None) -> torch.Tensor:
        with torch.no_grad():
            t = forward_subnet(
                teacher,
                batch["input_ids"],
                mask,
                batch.get("token_type_ids"),
                spec=spec,
                depth_rule=depth_rule,
                need_hidden=l2 > 0,
                padded=batch.get("padded"),
            )
        out = ctx.forward(batch, spec, depth_rule, need_hidden=l2 > 0, shared=shared, int8=True)
        loss = (l1 * ctx.row_share) * logits_loss(out.logits, t.logits, is_regression)
        if l2 > 0:
            loss = loss + (l2 * ctx.token_share) * hidden_loss(out.hidden_states, t.hidden_states, mask)
        return loss

    return each_subnet(ctx, batch, specs, loss_of, int8=True)


def task_step(
    model: nn.Module,
    batch: dict,
    specs: Sequence[AnySpec],
    *,
    depth_rule: str,
    is_regression: bool,
    ctx: StepContext | None = None,
) -> dict[str, torch.Tensor]:
    """Plain task-loss training of each sub-network (fine-tuning the teacher is the single full spec)."""
    ctx = (ctx or StepContext.plain(model)).for_batch(batch)

    def loss_of(spec: AnySpec, shared: SharedEmbedding | None) -> torch.Tensor:
        with ctx.autocast():
            out = ctx.forward(batch, spec, depth_rule, shared=shared)
            return ctx.row_share * task_loss(out.logits.float(), batch["labels"], is_regression)

    return each_subnet(ctx, batch, specs, loss_of)


def get_lr(step: int, total: int, base_lr: float, warmup: int) -> float:
    """Linear warm-up then linear decay to zero, as in BERT fine-tuning."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    return base_lr * max(0.0, (total - step) / max(1, total - warmup))


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name or name.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # torch's fused AdamW: one kernel over all parameters. On a CPU the default is a Python loop over them, 74 ms
    # a step for MiniLM on 2 cores against 8 ms fused (measured here); on CUDA it replaces the foreach default
    devices = {p.device.type for p in decay + no_decay}
    return torch.optim.AdamW(groups, lr=lr, fused=devices <= {"cpu", "cuda"} or None)


@dataclass
class LoopSettings:
    stage: str
    epochs: float
    lr: float
    batch_size: int  # the global batch: split across processes under torchrun
    seed: int
    weight_decay: float = 0.01
    warmup_frac: float = 0.0
    max_grad_norm: float = 1.0
    checkpoint_every: int = 200
    checkpoint_seconds: float = 600.0  # a checkpoint at least this often, whatever the step count
    group_by_length: bool = False
    precision: str = "fp32"  # resolved: fp32, bf16 or fp16
    eval_every: int = 0  # also call on_epoch_end every this many steps (0: at epoch ends only)


def _wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The runner the steps call: wrapped in DDP when this process is one of several (torchrun)."""
    runner = SubnetRunner(model)
    if not runtime.initialized():
        return runner
    # every parameter is used in the full model's pass, which each step runs last (see `sync_last`), so
    # DDP need not search the graph for unused parameters; there are no buffers to broadcast
    return DistributedDataParallel(
        runner,
        device_ids=[device.index] if device.type == "cuda" else None,
        broadcast_buffers=False,
        find_unused_parameters=False,
    )


def _global_losses(losses: dict[str, torch.Tensor], *flags: bool) -> tuple[dict[str, float], list[bool]]:
    """Per-sub-network losses as floats, summed over processes (the global batch's loss), and each flag set in any
    process (a stop request, a checkpoint due by the clock): one collective and one transfer per step."""
    labels = list(losses)
    values = torch.stack([losses[k].float() for k in labels])
    if flags:
        values = torch.cat([values, torch.tensor([float(f) for f in flags]).to(values.device, non_blocking=True)])
    runtime.all_reduce_sum(values)
    out = values.tolist()
    return dict(zip(labels, out)), [v > 0 for v in out[len(labels) :]]


OVERFLOW_WARN_STEPS = 10  # fp16: warn after this many optimizer steps in a row skipped for inf/NaN gradients


def total_steps(rows: int, batch_size: int, epochs: float) -> tuple[int, int]:
    """(optimizer steps, steps per epoch) of a stage: train_loop counts by this, and so does the time estimate."""
    per_epoch = num_batches(rows, batch_size)
    return max(1, math.ceil(epochs * per_epoch)), per_epoch


def train_loop(
    model: nn.Module,
    data: Encoded,
    step_fn: Callable[[nn.Module, dict, StepContext], dict[str, torch.Tensor]],
    s: LoopSettings,
    *,
    events: Callable,
    stop: StopToken,
    device: torch.device | str,
    pad_id: int,
    resume=None,
    save_checkpoint: Callable[..., str] | None = None,  # (step, total, model, optimizer, extra, rngs), main process
    on_epoch_end: Callable[[int, int], None] | None = None,  # (step, epoch): also every s.eval_every steps
) -> dict:
    """lr -> (stop?) -> batch -> losses/backward -> clip -> step -> zero_grad -> StepEnded -> checkpoint, until done.

    `resume` is a Checkpoint from the project: weights, optimizer, loss scale, RNG and step are restored
    and the data order continues where it stopped. When `stop` is set (in any process), a checkpoint is
    written before `Cancelled` is raised, so no finished step is lost. Under torchrun every process runs
    this loop on its share of each global batch; only the main one writes.
    """
    device = torch.device(device)
    world, rank = runtime.world(), runtime.rank()
    if s.batch_size < world:
        raise ConfigError(
            f"train.batch_size {s.batch_size} is smaller than the {world} processes: "
            f"each needs rows: use a batch size of at least {world}"
        )
    total, per_epoch = total_steps(len(data), s.batch_size, s.epochs)
    warmup = int(s.warmup_frac * total)
    optimizer = make_optimizer(model, s.lr, s.weight_decay)
    scaler = runtime.make_scaler(device, s.precision)
    step = 0
    if resume is None:
        # dropout draws from a stream that depends only on (seed, stage, rank), not on what the process did
        # before (a studio session, a library seeding itself), so a run is repeatable and ranks differ
        torch.manual_seed(zlib.crc32(f"{s.seed}:{s.stage}:{rank}".encode()))
    else:
        model.load_state_dict(resume.model_state)
        optimizer.load_state_dict(resume.optimizer_state)
        _restore_rng(resume, s, device, world, rank, events)
        if scaler is not None and resume.extra.get("scaler"):
            scaler.load_state_dict(resume.extra["scaler"])
        step = resume.step
    runner = _wrap(model, device)
    base_ctx = StepContext(runner, device, s.precision, scaler, world)

    def checkpoint() -> None:
        rngs = runtime.all_gather_objects(runtime.get_rng(device))  # every process's, for an exact resume
        if runtime.is_main() and save_checkpoint is not None:
            extra = {"world_size": world, "precision": s.precision, "group_by_length": s.group_by_length}
            if scaler is not None:
                extra["scaler"] = scaler.state_dict()
            path = save_checkpoint(step, total, model, optimizer, extra, rngs)
            events(CheckpointSaved(s.stage, step, path))
        runtime.barrier()  # the others wait until the checkpoint is on disk

    events(StageStarted(s.stage, total, step))
    model.train()
    t0 = last_checkpoint = time.perf_counter()
    last_losses: dict[str, float] = {}
    pin = device.type == "cuda"
    skipped = 0  # fp16: optimizer steps skipped in a row
    # under torchrun the stop and clock flags travel in each step's one collective (with its losses); this check
    # covers a stop asked before the first step
    shared = runtime.initialized()
    if shared and runtime.any_process(stop.is_set()):
        checkpoint()
        raise Cancelled("stopped by request")
    while step < total:
        epoch, skip = divmod(step, per_epoch)
        for batch in iterate_batches(
            data,
            s.batch_size,
            shuffle=True,
            seed=s.seed,
            epoch=epoch,
            skip=skip,
            pad_id=pad_id,
            group_by_length=s.group_by_length,
            rank=rank,
            world=world,
            pin_memory=pin,
        ):
            if not shared and stop.is_set():
                checkpoint()
                raise Cancelled("stopped by request")
            lr = get_lr(step, total, s.lr, warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = to_device(batch, device)
            base_ctx.step = step
            losses = step_fn(model, batch, base_ctx)
            if shared:  # the flags as they stand now, agreed by every process in the losses' collective
                clock = time.perf_counter() - last_checkpoint >= s.checkpoint_seconds
                last_losses, (stop_now, by_clock) = _global_losses(losses, stop.is_set(), clock)
            else:
                last_losses, _ = _global_losses(losses)
            if scaler is not None:
                scaler.unscale_(optimizer)
            if s.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), s.max_grad_norm)
            if scaler is not None:
                scale = scaler.get_scale()
                scaler.step(optimizer)  # skipped when fp16 overflowed; the scale then shrinks
                scaler.update()
                skipped = skipped + 1 if scaler.get_scale() < scale else 0
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            events(StepEnded(s.stage, step, total, last_losses, lr, epoch))  # the one record of the step's losses
            if skipped == OVERFLOW_WARN_STEPS and runtime.is_main():
                events(LogMessage(_overflow_warning(s.stage, skipped, scaler), "warning"))
            if not shared:  # one process: the clock as it stands after the step's event
                by_clock = time.perf_counter() - last_checkpoint >= s.checkpoint_seconds
            if step < total and ((s.checkpoint_every > 0 and step % s.checkpoint_every == 0) or by_clock):
                checkpoint()
                last_checkpoint = time.perf_counter()
            if step % per_epoch == 0 or step == total or (s.eval_every > 0 and step % s.eval_every == 0):
                if on_epoch_end is not None:
                    on_epoch_end(step, epoch)
            if step >= total:
                break
            if shared and stop_now:  # (one process checks its stop token at the top of the next step)
                checkpoint()
                raise Cancelled("stopped by request")
    model.eval()
    return {"steps": total, "seconds": time.perf_counter() - t0, "final_losses": last_losses}


def _overflow_warning(stage: str, steps: int, scaler) -> str:
    return (
        f"{stage}: fp16 overflowed in the last {steps} steps in a row: the optimizer skipped them and the loss "
        f"scale fell to {scaler.get_scale():g}, so the weights are not learning: use bf16 (GPUs from Ampere on) or "
        "fp32 (train.precision, or --precision on `dynastudio run`), or a lower learning rate"
    )


def _restore_rng(resume, s: LoopSettings, device, world: int, rank: int, events) -> None:
    """Each process continues its own random stream (dropout) when the checkpoint has it."""
    saved_world = resume.extra.get("world_size", 1)
    states = resume.rng_states
    if rank in states and saved_world == world:
        runtime.set_rng(states[rank], device)
        return
    if rank == 0 and resume.rng_state is not None and saved_world == world:
        torch.set_rng_state(resume.rng_state)  # a checkpoint from before per-process states were kept
        return
    torch.manual_seed(hash((s.seed, resume.step, rank)) % (2**31))
    if rank == 0:
        events(
            LogMessage(
                f"{s.stage}: resumed with {world} process(es) where the checkpoint had {saved_world}: the "
                f"data order is the same, dropout draws new random numbers"
            )
        )
