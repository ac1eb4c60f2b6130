"""The one training loop of this repository.

`train(model, optimizer, train_loader, loss_fn, ...)` is a single flat function. Pretraining
(chapter 5), classification fine-tuning (chapter 6), instruction tuning (chapter 7), DPO and
distillation all call it; they differ only in their batches and in `loss_fn(model, batch)`.

One optimizer step = `grad_accum_steps` micro-batches. Step numbers in the history, the learning-
rate schedule, evaluation and checkpoints all count optimizer steps.

The loop itself is `train`'s last screen; the helpers above it do one job each: the optimizer
step with its checks (`_optimizer_step`) and evaluation with logging (`_evaluate_and_log`).
Resuming exactly (the loop position, random states, replaying an epoch's shuffle, and what a
checkpoint must match) is `resume.py`'s job.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from tqdm import tqdm  # plain text bar: works in terminals, notebooks and CI logs

from .checkpoint import check_checkpoint_path, save_checkpoint
from .device import autocast, move_to_device
from .losses import NoTargetsError, evaluate
from .resume import (Position, epoch_batches, loader_generators, rng_state, set_rng_state,
                     start_position)


@dataclass
class History:
    """What happened during training, one entry per evaluation (all lists have equal length).

    `train_loss` is the mean training loss of the optimizer steps since the previous evaluation
    (nan if none of their micro-batches had a counted target); `val_loss` is None without a
    validation loader; `metrics` maps "val_<name>" and "train_<name>" to lists of floats.
    `history["val_acc"]` reads a field or a metric. Plain numbers only, so
    `json.dump(history.to_dict(), f)` works and `plt.plot(h.tokens_seen, h.val_loss)` too.
    """

    step: list[int] = field(default_factory=list)
    tokens_seen: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float | None] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    elapsed: list[float] = field(default_factory=list)  # seconds since training started
    metrics: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls(**{k: dict(v) if k == "metrics" else list(v) for k, v in d.items()})

    def __getitem__(self, key: str) -> list:
        return self.metrics[key] if key in self.metrics else getattr(self, key)


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


def _check_count(name: str, value, none_means: str | None = None) -> None:
    """Refuse anything but an integer >= 1 (or None, where `none_means` says what None does)."""
    if value is None and none_means is not None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        allowed = f"an integer >= 1, or None ({none_means})" if none_means else "an integer >= 1"
        raise ValueError(f"{name}={value!r}; use {allowed}")


def _check_settings(epochs, max_steps, eval_every, eval_batches, grad_accum_steps,
                    max_grad_norm, checkpoint_every, checkpoint_path, resume) -> None:
    """One sentence for each setting `train` cannot honour, before anything runs."""
    _check_count("epochs", epochs)
    _check_count("max_steps", max_steps, "train for `epochs`")
    _check_count("eval_every", eval_every, "evaluate after the last step only")
    _check_count("eval_batches", eval_batches, "all validation batches")
    _check_count("grad_accum_steps", grad_accum_steps)
    _check_count("checkpoint_every", checkpoint_every, "save after the last step only")
    if max_grad_norm is not None and not (
        isinstance(max_grad_norm, numbers.Real) and 0 < max_grad_norm < math.inf
    ):
        raise ValueError(f"max_grad_norm={max_grad_norm!r}; use a finite number > 0, or None "
                         "for no clipping")
    if checkpoint_path is None and checkpoint_every is not None:
        raise ValueError(f"checkpoint_every={checkpoint_every!r} without a checkpoint_path; give "
                         "the file to save to, or leave checkpoint_every None")
    if checkpoint_path is None and resume:
        raise ValueError("resume=True without a checkpoint_path; give the file to resume from")


def _batches_per_epoch(loader) -> int:
    """len(loader), refusing a loader without a length or without batches."""
    try:
        n = len(loader)
    except TypeError:
        raise TypeError(f"train_loader ({type(loader).__name__}) has no len(); give a sized "
                        "loader (a DataLoader over a map-style Dataset, or a list of batches), "
                        "since the schedule and resuming need the batches per epoch") from None
    if n == 0:
        raise ValueError("train_loader has no batches (len 0); a DataLoader with drop_last=True "
                         "and fewer samples than batch_size has none")
    return n


def _check_val_loader(loader) -> None:
    """Refuse a validation loader without batches: every val_loss would be nan."""
    try:
        n = len(loader) if loader is not None else None
    except TypeError:  # an iterable without len(): evaluate finds out
        return
    if n == 0:
        raise ValueError("val_loader has no batches (len 0), so every validation loss would be "
                         "nan; give a loader with at least one batch, or val_loader=None for none")


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


def _metric_value(name: str, value) -> float:
    """A metric's result as a plain float, so the History (and a checkpoint) holds no NumPy or
    tensor scalars, which weights_only loading would refuse."""
    if getattr(value, "ndim", None) == 0 or isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()  # a one-element tensor, a NumPy scalar or 0-d array
    if isinstance(value, numbers.Real):  # int, float, bool and their NumPy kin
        return float(value)
    raise TypeError(f"metric {name!r} returned {type(value).__name__} ({value!r:.60}); a metric "
                    "must return one number: a float, an int, a NumPy scalar or a 1-element tensor")


@contextlib.contextmanager
def _random_state_kept(loader, generators: list[torch.Generator]):
    """Run the block, then put back every random state training consumes (torch's, the
    accelerator's, the loader's generators) and the loader's sampler epoch: evaluation, metrics
    and `on_eval` then never change which batches or dropout masks training sees next."""
    saved, sampler = rng_state(generators), getattr(loader, "sampler", None)
    epoch = getattr(sampler, "epoch", None)
    try:
        yield
    finally:
        set_rng_state(saved, generators)
        if isinstance(epoch, int):
            sampler.epoch = epoch


def _evaluate_and_log(model, pos: Position, lr: float, elapsed: float, loss_fn, train_loader,
                      val_loader, eval_batches, device, autocast_dtype, metrics: dict,
                      on_eval, generators: list[torch.Generator]) -> float | None:
    """Append one History entry (mean training loss since the last one, validation loss, lr,
    metrics), then call `on_eval`; return the validation loss (None without a val_loader).
    The training loss is nan when no micro-batch of the interval had a counted target.
    Nothing here moves training's random states (`_random_state_kept`)."""
    with _random_state_kept(train_loader, generators):
        return _evaluate(model, pos, lr, elapsed, loss_fn, train_loader, val_loader,
                         eval_batches, device, autocast_dtype, metrics, on_eval)


def _evaluate(model, pos: Position, lr: float, elapsed: float, loss_fn, train_loader,
              val_loader, eval_batches, device, autocast_dtype, metrics: dict,
              on_eval) -> float | None:
    """`_evaluate_and_log`'s work, which may consume random states."""
    val_loss = None
    if val_loader is not None:
        val_loss = evaluate(model, val_loader, loss_fn, eval_batches, device, autocast_dtype)
    h, losses = pos.history, pos.interval_losses
    h.step.append(pos.step)
    h.tokens_seen.append(pos.tokens_seen)
    h.train_loss.append(sum(losses) / len(losses) if losses else float("nan"))
    h.val_loss.append(val_loss)
    h.lr.append(lr)
    h.elapsed.append(elapsed)
    pos.interval_losses = []
    model.eval()
    with torch.no_grad():
        for name, fn in metrics.items():
            if val_loader is not None:
                value = _metric_value(name, fn(model, val_loader))
                h.metrics.setdefault(f"val_{name}", []).append(value)
            value = _metric_value(name, fn(model, train_loader))
            h.metrics.setdefault(f"train_{name}", []).append(value)
        if on_eval is not None:
            on_eval(model, pos.step)
    model.train()
    return val_loss


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
    _check_settings(epochs, max_steps, eval_every, eval_batches, grad_accum_steps, max_grad_norm,
                    checkpoint_every, checkpoint_path, resume)
    device, world_size, is_main = _placement(model, device)
    count_tokens = count_tokens or default_count_tokens
    n_batches = _batches_per_epoch(train_loader)
    _check_val_loader(val_loader)
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
                                  setup, is_main, History)

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
                    val_loss = _evaluate_and_log(model, pos, lr, pos.elapsed + seconds, loss_fn,
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
