"""The one training loop of this repository.

`train(model, optimizer, train_loader, loss_fn, ...)` is a single flat function. Pretraining
(chapter 5), classification fine-tuning (chapter 6), instruction tuning (chapter 7), DPO and
distillation all call it; they differ only in their batches and in `loss_fn(model, batch)`.

One optimizer step = `grad_accum_steps` micro-batches. Step numbers in the history, the learning-
rate schedule, evaluation and checkpoints all count optimizer steps.

The loop itself is `train`'s last screen; the helpers above it do one job each, such as the
optimizer step with its checks (`_optimizer_step`). Beside it: the argument checks
(`train_checks.py`), evaluation with logging (`train_eval.py`'s `evaluate_and_log`), what is
recorded (`history.py`'s `History`), and resuming exactly (the loop position, random states,
replaying an epoch's shuffle, and what a checkpoint must match: `resume.py`).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from tqdm import tqdm  # plain text bar: works in terminals, notebooks and CI logs

from .checkpoint import check_checkpoint_path, save_checkpoint
from .device import autocast, move_to_device
from .history import History
from .losses import NoTargetsError
from .resume import epoch_batches, loader_generators, rng_state, start_position
from .train_checks import batches_per_epoch, check_settings, check_val_loader
from .train_eval import evaluate_and_log


def lr_factor(
    step: int,
    total_steps: int,
    warmup_steps: int = 0,
    schedule: str = "cosine",
    min_lr_ratio: float = 0.1,
) -> float:
    """Multiplier of the base learning rate for optimizer step `step` (0-based).

    Linear warmup from 1/warmup_steps to 1 over the first `warmup_steps` steps, then either
    constant ("constant") or a half cosine from 1 down to `min_lr_ratio` at `total_steps`
    ("cosine", Loshchilov & Hutter 2017). Warmup keeps the first, large Adam updates small while
    its moment estimates are still noisy. A warmup longer than the run is allowed (the rate
    then never reaches its peak); a negative one, or a `min_lr_ratio` outside [0, 1] (a
    negative rate climbs the loss, a ratio above 1 raises the rate), is refused.
    """
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"lr_schedule={schedule!r}; choose 'cosine' or 'constant'")
    if not 0.0 <= min_lr_ratio <= 1.0:  # also refuses nan
        raise ValueError(f"min_lr_ratio={min_lr_ratio!r}; use a number in [0, 1] (the final "
                         "learning rate as a fraction of the peak)")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps={warmup_steps!r}; use an integer >= 0")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def default_count_tokens(batch) -> int:
    """Tokens in a batch: numel of `batch["input_ids"]`, else of the first tensor found."""
    if isinstance(batch, dict):
        batch = batch["input_ids"] if "input_ids" in batch else list(batch.values())
    if isinstance(batch, torch.Tensor):
        return batch.numel()
    for item in batch:
        n = default_count_tokens(item)
        if n:
            return n
    return 0


def _placement(model: nn.Module, device) -> tuple[torch.device, int, bool]:
    """(device, number of ranks, whether this is rank 0): the model is moved to `device` if
    given, else the device is where its parameters are. Without torch.distributed: 1 rank."""
    if device is not None:
        device = torch.device(device)
        model.to(device)
    else:
        device = next(model.parameters()).device
    if dist.is_available() and dist.is_initialized():
        return device, dist.get_world_size(), dist.get_rank() == 0
    return device, 1, True


def _forward_backward(model, loss_fn, batch, group_size: int, last_micro: bool, device,
                      autocast_dtype, distributed: bool) -> torch.Tensor | NoTargetsError:
    """Add one micro-batch's share of the step's gradient; return its loss / group_size,
    detached, as a float32 tensor that stays on the device (no sync). The `NoTargetsError`,
    and no gradient, when the batch has no counted targets (its message says why)."""
    # DDP all-reduces gradients in backward; skip that on all but the last micro-batch.
    sync = contextlib.nullcontext()
    if not last_micro and hasattr(model, "no_sync"):
        sync = model.no_sync()
    with sync:
        try:
            with autocast(device, autocast_dtype):
                loss = loss_fn(model, batch)
        except NoTargetsError as e:
            if distributed:  # one rank skipping alone would leave the others waiting for it
                raise NoTargetsError(f"{e}; in a distributed run no rank can skip a batch "
                                     "alone, so leave such batches out of the data") from e
            return e
        (loss / group_size).backward()
    return loss.detach().float() / group_size


def _grad_norm(params: list[torch.Tensor], max_grad_norm: float | None) -> torch.Tensor:
    """The gradients' global L2 norm (one fused reduction), clipping them to `max_grad_norm`."""
    if max_grad_norm is not None:
        return torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    if hasattr(torch.nn.utils, "get_total_norm"):  # PyTorch >= 2.6
        return torch.nn.utils.get_total_norm([p.grad for p in params])
    return torch.nn.utils.clip_grad_norm_(params, math.inf)  # scales by 1: the norm, no clipping


def _optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, step_loss, counted: int,
                    group_size: int, lr_scale: float, max_grad_norm: float | None,
                    where: str) -> float | None:
    """Set the scheduled learning rate, clip, check, step; return the step's mean loss.

    `step_loss` sums loss / group_size over the `counted` micro-batches that had targets; the
    others added nothing, so loss and gradient are rescaled to a mean over the counted ones.
    Returns None, without stepping, when none counted. Raises FloatingPointError before the
    weights change when the loss or the gradient norm is not finite; `where` ("optimizer step
    3 (epoch 1, batch 6)") goes into that message.
    """
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * lr_scale
    if counted == 0:
        return None
    params = [p for p in model.parameters() if p.grad is not None]
    if counted < group_size:
        for p in params:
            p.grad.mul_(group_size / counted)
        step_loss = step_loss * (group_size / counted)
    # The norm is measured whether or not we clip: a NaN gradient can come with a finite loss
    # (sqrt or log at 0), and would otherwise reach the weights and the next checkpoint.
    norm = _grad_norm(params, max_grad_norm).to(step_loss.device)
    loss, norm = torch.stack([step_loss, norm.float()]).tolist()  # the step's one device sync
    if not math.isfinite(loss):
        raise FloatingPointError(
            f"loss is {loss} at {where}; training diverged. Try a lower learning rate (now "
            f"{optimizer.param_groups[0]['lr']:.2e}), a longer warmup, or gradient clipping "
            "(max_grad_norm)."
        )
    if not math.isfinite(norm):
        raise FloatingPointError(
            f"gradient norm is {norm} at {where} although the loss is finite ({loss:.4g}), so "
            "the step was not taken: an operation in loss_fn has no finite gradient here (sqrt "
            "or log at 0, say) or the gradients overflowed; check loss_fn, or try a lower "
            f"learning rate (now {optimizer.param_groups[0]['lr']:.2e})."
        )
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


def _due(step: int, every: int | None, total_steps: int) -> bool:
    """Whether something done every `every` steps (None: never) and after the last step is due."""
    return (every is not None and step % every == 0) or step == total_steps


def _show_progress(bar: tqdm, postfix: dict, values: dict[str, str], tick: bool = False) -> None:
    """Show `values` after the progress bar; `tick`: count one more step done."""
    postfix.update(values)
    bar.set_postfix(postfix, refresh=not tick)
    if tick:
        bar.update(1)  # redraws the bar, postfix included


def _report_skipped(skipped: int, seen: int, is_main: bool, reason: str | None = None) -> None:
    """Say how many micro-batches had no counted target; refuse a run in which none had one.
    `reason`: the first skipped batch's NoTargetsError message, which may say what to change."""
    if skipped and skipped == seen:
        said = f" The first one said: {reason}" if reason else ""
        raise NoTargetsError(f"none of the {seen} micro-batches of this run had a counted target "
                             "(every target was -100), so nothing was learned; check how the "
                             f"batches are masked.{said}")
    if skipped and is_main:
        print(f"train: skipped {skipped} micro-batch{'es' if skipped > 1 else ''} of {seen} "
              "with no counted targets (every target -100); they added no loss, gradient or "
              "tokens.")


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_loader,
    loss_fn: Callable[[nn.Module, object], torch.Tensor],
    *,
    val_loader=None,
    epochs: int = 1,
    max_steps: int | None = None,
    eval_every: int | None = 100,
    eval_batches: int | None = None,
    grad_accum_steps: int = 1,
    max_grad_norm: float | None = 1.0,
    warmup_steps: int = 0,
    lr_schedule: str = "cosine",
    min_lr_ratio: float = 0.1,
    metrics: dict[str, Callable[[nn.Module, object], float]] | None = None,
    on_eval: Callable[[nn.Module, int], None] | None = None,
    checkpoint_every: int | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    device: torch.device | str | None = None,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = True,
    count_tokens: Callable[[object], int] | None = None,
    seed: int | None = None,
) -> History:
    """Train `model` by minimising `loss_fn(model, batch)` and return its `History`.

    Longer than our ~60-line guide on purpose: it is the one flat loop every chapter reads
    (STYLE 7), set up and run top to bottom; each step's work is a named helper above it.

    Args:
        model: any module; may be wrapped by DDP or torch.compile.
        optimizer: built on the model's parameters; each param group's lr at the first call is
            its base lr (stored as "initial_lr"), scaled every step by the schedule.
        train_loader: a sized iterable (usually a DataLoader) of batches: tensors, or tuples,
            lists or dicts of tensors, which are moved to `device`.
        loss_fn: `(model, batch) -> scalar tensor`, e.g. `losses.lm_loss`.
        val_loader: evaluated with `loss_fn` (first `eval_batches` batches) at each evaluation.
        epochs: passes over `train_loader`; ignored when `max_steps` is given.
        max_steps: total optimizer steps (the loader is cycled as often as needed).
        eval_every: evaluate every this many optimizer steps (and always after the last step).
        grad_accum_steps: micro-batches per optimizer step; each loss is divided by the number
            of micro-batches in its step, so k micro-batches of size b act like one batch of k*b.
            An epoch's last step takes the leftover micro-batches when the count does not divide.
        max_grad_norm: clip the gradients' global L2 norm to this (None: no clipping). The
            norm is measured and checked for nan/inf at every step either way.
        warmup_steps, lr_schedule, min_lr_ratio: see `lr_factor`.
        metrics: name -> fn(model, loader) -> float, run in eval mode without gradients on
            `val_loader` and on `train_loader` at each evaluation (recorded as "val_<name>",
            "train_<name>"); a metric decides itself how many batches to look at. Evaluation,
            metrics and `on_eval` leave every random state as they found it, so neither they
            nor `eval_every` change the batches or dropout masks training sees.
        on_eval: fn(model, step) called after each evaluation, in eval mode, without gradients.
        checkpoint_every: save a checkpoint to `checkpoint_path` every this many steps; one is
            always saved after the last step when `checkpoint_path` is set.
        resume: continue from `checkpoint_path` if it exists. The continued run reproduces the
            uninterrupted run's losses exactly (same shuffle order, same dropout masks). The
            checkpoint must come from `train` with the same optimizer type, batches per epoch
            and grad_accum_steps, else it is refused before anything is loaded; more steps than
            it had are allowed (the schedule then spans the new total). The optimizer's lr
            given here stays the base lr, also when the checkpoint's was another (printed).
        device: move the model and batches here (default: where the model's parameters are).
        autocast_dtype: e.g. torch.bfloat16 for mixed precision on CUDA; ignored on CPU/MPS.
        progress: show a tqdm bar (loss, learning rate, tokens/s); set False on DDP ranks != 0.
        count_tokens: batch -> number of tokens (default: `default_count_tokens`).
        seed: if given, seeds torch once before a run that does not continue a checkpoint
            (also with resume=True when there is no checkpoint yet).

    A micro-batch whose loss_fn raises `NoTargetsError` (every target -100) is skipped: it adds
    no loss, gradient or tokens, the step averages over the other micro-batches, and one line
    at the end says how many were skipped.

    Raises:
        ValueError: for a setting outside its range, before anything runs (one sentence each).
        IsADirectoryError, NotADirectoryError, PermissionError: before the first step, when no
            checkpoint could be written to `checkpoint_path`.
        FloatingPointError: at the first optimizer step whose loss or gradient norm is NaN/inf,
            before the step changes the weights (so the last checkpoint stays good).
        NoTargetsError: when no micro-batch of the run had a counted target.
    """
    check_settings(epochs, max_steps, eval_every, eval_batches, grad_accum_steps, max_grad_norm,
                   checkpoint_every, checkpoint_path, resume)
    device, world_size, is_main = _placement(model, device)
    count_tokens = count_tokens or default_count_tokens
    n_batches = batches_per_epoch(train_loader)
    check_val_loader(val_loader)
    steps_per_epoch = math.ceil(n_batches / grad_accum_steps)
    total_steps = max_steps if max_steps is not None else epochs * steps_per_epoch
    lr_factor(0, total_steps, warmup_steps, lr_schedule, min_lr_ratio)  # a bad schedule fails now
    if checkpoint_path is not None and is_main:
        check_checkpoint_path(checkpoint_path)  # now, not after the last step
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])  # the same key PyTorch's LR schedulers use
    generators = loader_generators(train_loader)
    setup = {"n_batches": n_batches, "grad_accum_steps": grad_accum_steps,
             "total_steps": total_steps, "optimizer": type(optimizer).__name__}

    # resumed: the checkpoint's train_state (None for a fresh run), until its epoch is replayed
    pos, resumed = start_position(model, optimizer, checkpoint_path if resume else None, seed,
                                  setup, is_main)

    was_training = model.training
    model.train()
    optimizer.zero_grad(set_to_none=True)
    bar = tqdm(total=total_steps, initial=pos.step, desc="train", unit="step",
               disable=not (progress and is_main))
    t_start, tokens_at_start, postfix = time.perf_counter(), pos.tokens_seen, {}
    seen, skipped = 0, 0  # micro-batches in this call, and those without counted targets
    skip_reason = None  # the first skipped micro-batch's NoTargetsError message
    try:
        while pos.step < total_steps:
            epoch_rng, batches = epoch_batches(train_loader, n_batches, pos, resumed, generators)
            resumed, step_loss, counted, step_tokens = None, 0.0, 0, 0
            for i, batch in batches:
                batch = move_to_device(batch, device)
                group_start = i - i % grad_accum_steps  # an epoch's last group may be shorter
                group_size = min(grad_accum_steps, n_batches - group_start)
                last_micro = i == group_start + group_size - 1
                loss = _forward_backward(model, loss_fn, batch, group_size, last_micro, device,
                                         autocast_dtype, world_size > 1)
                seen += 1
                if isinstance(loss, NoTargetsError):  # adds no loss, gradient or tokens
                    skipped += 1
                    skip_reason = skip_reason or str(loss)
                else:
                    step_loss, counted = step_loss + loss, counted + 1
                    step_tokens += count_tokens(batch)
                if not last_micro:
                    continue

                lr_scale = lr_factor(pos.step, total_steps, warmup_steps, lr_schedule, min_lr_ratio)
                where = f"optimizer step {pos.step + 1} (epoch {pos.epoch + 1}, batch {i + 1})"
                loss = _optimizer_step(model, optimizer, step_loss, counted, group_size, lr_scale,
                                       max_grad_norm, where)
                pos.advance(i + 1, n_batches, step_tokens * world_size, loss)
                step_loss, counted, step_tokens = 0.0, 0, 0
                lr, seconds = optimizer.param_groups[0]["lr"], time.perf_counter() - t_start
                rate = (pos.tokens_seen - tokens_at_start) / max(seconds, 1e-9)
                _show_progress(bar, postfix, {"loss": "-" if loss is None else f"{loss:.3f}",
                                              "lr": f"{lr:.1e}", "tok/s": f"{rate:.0f}"}, tick=True)

                if _due(pos.step, eval_every, total_steps):
                    val_loss = evaluate_and_log(model, pos, lr, pos.elapsed + seconds, loss_fn,
                                                train_loader, val_loader, eval_batches, device,
                                                autocast_dtype, metrics or {}, on_eval,
                                                generators)
                    if val_loss is not None:
                        _show_progress(bar, postfix, {"val": f"{val_loss:.3f}"})
                if checkpoint_path is not None and is_main and _due(pos.step, checkpoint_every,
                                                                    total_steps):
                    elapsed = pos.elapsed + time.perf_counter() - t_start
                    save_checkpoint(checkpoint_path, model, optimizer, train_state=pos.train_state(
                        elapsed, epoch_rng, rng_state(generators), setup))
                if pos.step >= total_steps:
                    break
    finally:
        bar.close()
        model.train(was_training)
    _report_skipped(skipped, seen, is_main, skip_reason)
    return pos.history
