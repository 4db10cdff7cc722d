"""Distillation losses and the one training loop every stage uses (finetune, width, depth, sub-network finetune)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .data import Encoded, iterate_batches, num_batches
from .dynamic import SubnetSpec, forward_subnet, layer_targets
from .events import CheckpointSaved, StageStarted, StepEnded, StopToken
from .importance import task_loss


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the student against the teacher's soft labels (temperature 1)."""
    return (-F.softmax(teacher_logits, dim=-1) * F.log_softmax(student_logits, dim=-1)).sum(-1).mean()


def logits_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, is_regression: bool) -> torch.Tensor:
    if is_regression:
        return F.mse_loss(student_logits, teacher_logits)
    return soft_cross_entropy(student_logits, teacher_logits)


def masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error over real tokens only: padding would otherwise dilute the loss per batch."""
    if mask is None:
        return F.mse_loss(a, b)
    m = mask.to(a.dtype).unsqueeze(-1)
    return ((a - b).pow(2) * m).sum() / (m.sum() * a.shape[-1]).clamp_min(1.0)


def hidden_loss(student_hidden: Sequence[torch.Tensor], teacher_hidden: Sequence[torch.Tensor], mask) -> torch.Tensor:
    return sum(masked_mse(s, t, mask) for s, t in zip(student_hidden, teacher_hidden))


@dataclass
class Teacher:
    logits: torch.Tensor
    hidden: list[torch.Tensor]  # embedding output, then every layer's output


@torch.no_grad()
def teacher_forward(teacher: nn.Module, batch: dict) -> Teacher:
    out = forward_subnet(
        teacher, batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), need_hidden=True
    )
    return Teacher(out.logits, out.hidden_states)


def distill_step(
    student: nn.Module,
    teacher: nn.Module,
    batch: dict,
    specs: Sequence[SubnetSpec],
    *,
    l1: float,
    l2: float,
    depth_rule: str,
    is_regression: bool,
) -> dict[str, float]:
    """One teacher forward, then each sub-network: loss, backward (gradients add up). No optimizer step here.

    Each kept student layer is matched to the teacher layer it stands for (see `layer_targets`);
    the embedding output is always matched.
    """
    t = teacher_forward(teacher, batch)
    mask = batch["attention_mask"]
    L = student.config.num_hidden_layers
    losses: dict[str, float] = {}
    for spec in specs:
        out = forward_subnet(
            student, batch["input_ids"], mask, batch.get("token_type_ids"),
            spec=spec, depth_rule=depth_rule, need_hidden=l2 > 0,
        )
        loss = l1 * logits_loss(out.logits, t.logits, is_regression)
        if l2 > 0:
            targets = [t.hidden[0]] + [t.hidden[j + 1] for j in layer_targets(L, spec.depth_mult, depth_rule)]
            loss = loss + l2 * hidden_loss(out.hidden_states, targets, mask)
        loss.backward()
        losses[spec.label] = float(loss.detach())
    return losses


def task_step(model: nn.Module, batch: dict, specs: Sequence[SubnetSpec], *, depth_rule: str, is_regression: bool) -> dict[str, float]:
    """Plain task-loss training of each sub-network (fine-tuning the teacher is the single full spec)."""
    losses = {}
    for spec in specs:
        out = forward_subnet(
            model, batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"),
            spec=spec, depth_rule=depth_rule,
        )
        loss = task_loss(out.logits, batch["labels"], is_regression)
        loss.backward()
        losses[spec.label] = float(loss.detach())
    return losses


def get_lr(step: int, total: int, base_lr: float, warmup: int) -> float:
    """Linear warm-up then linear decay to zero, as in BERT fine-tuning."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    return base_lr * max(0.0, (total - step) / max(1, total - warmup))


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name or name.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


@dataclass
class LoopSettings:
    stage: str
    epochs: float
    lr: float
    batch_size: int
    seed: int
    weight_decay: float = 0.01
    warmup_frac: float = 0.0
    max_grad_norm: float = 1.0
    checkpoint_every: int = 200


def train_loop(
    model: nn.Module,
    data: Encoded,
    step_fn: Callable[[nn.Module, dict], dict[str, float]],
    s: LoopSettings,
    *,
    events: Callable,
    stop: StopToken,
    device: torch.device,
    pad_id: int,
    resume=None,
    save_checkpoint: Callable[[int, int, nn.Module, torch.optim.Optimizer], str] | None = None,  # (step, total, ...)
    on_epoch_end: Callable[[int, int], None] | None = None,
    log: Callable[[dict], None] | None = None,
) -> dict:
    """lr -> (stop?) -> batch -> losses/backward -> clip -> step -> zero_grad -> log -> checkpoint, until done.

    `resume` is a Checkpoint from the project: weights, optimizer, RNG and step are restored and the
    data order continues where it stopped. When `stop` is set, a checkpoint is written before
    `Cancelled` is raised, so no finished step is lost.
    """
    per_epoch = num_batches(len(data), s.batch_size)
    total = max(1, math.ceil(s.epochs * per_epoch))
    warmup = int(s.warmup_frac * total)
    optimizer = make_optimizer(model, s.lr, s.weight_decay)
    step = 0
    if resume is not None:
        model.load_state_dict(resume.model_state)
        optimizer.load_state_dict(resume.optimizer_state)
        if resume.rng_state is not None:
            torch.set_rng_state(resume.rng_state)
        step = resume.step
    events(StageStarted(s.stage, total, step))
    model.train()
    t0 = time.perf_counter()
    last_losses: dict[str, float] = {}
    while step < total:
        epoch, skip = divmod(step, per_epoch)
        for batch in iterate_batches(data, s.batch_size, shuffle=True, seed=s.seed, epoch=epoch, skip=skip, pad_id=pad_id):
            if stop.is_set():
                if save_checkpoint is not None:
                    path = save_checkpoint(step, total, model, optimizer)
                    events(CheckpointSaved(s.stage, step, path))
                stop.check()
            lr = get_lr(step, total, s.lr, warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = {k: v.to(device) for k, v in batch.items()}
            last_losses = step_fn(model, batch)
            if s.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), s.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            events(StepEnded(s.stage, step, total, last_losses, lr, epoch))
            if log is not None:
                log({"kind": "step", "stage": s.stage, "step": step, "epoch": epoch, "lr": lr, "losses": last_losses})
            if save_checkpoint is not None and s.checkpoint_every > 0 and step % s.checkpoint_every == 0 and step < total:
                path = save_checkpoint(step, total, model, optimizer)
                events(CheckpointSaved(s.stage, step, path))
            if step % per_epoch == 0 or step == total:
                if on_epoch_end is not None:
                    on_epoch_end(step, epoch)
            if step >= total:
                break
    model.eval()
    return {"steps": total, "seconds": time.perf_counter() - t0, "final_losses": last_losses}
