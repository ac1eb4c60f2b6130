"""The one training loop of this repository.

`train(model, optimizer, train_loader, loss_fn, ...)` is a single flat function. Pretraining
(chapter 5), classification fine-tuning (chapter 6), instruction tuning (chapter 7), DPO and
distillation all call it; they differ only in their batches and in `loss_fn(model, batch)`.

One optimizer step = `grad_accum_steps` micro-batches. Step numbers in the history, the learning-
rate schedule, evaluation and checkpoints all count optimizer steps.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from tqdm import tqdm  # plain text bar: works in terminals, notebooks and CI logs

from .checkpoint import load_checkpoint, save_checkpoint
from .device import autocast, move_to_device, unwrap
from .losses import evaluate


@dataclass
class History:
    """What happened during training, one entry per evaluation (all lists have equal length).

    `train_loss` is the mean training loss of the optimizer steps since the previous evaluation;
    `val_loss` is None without a validation loader; `metrics` maps "val_<name>" and
    "train_<name>" to lists. `history["val_acc"]` reads a field or a metric. Plain numbers only,
    so `json.dump(history.to_dict(), f)` works and `plt.plot(h.tokens_seen, h.val_loss)` too.
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
    its moment estimates are still noisy.
    """
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"lr_schedule={schedule!r}; choose 'cosine' or 'constant'")
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


def _loader_generators(loader) -> list[torch.Generator]:
    """The random generators that decide a DataLoader's shuffle order (if any are its own)."""
    found = []
    for owner in (loader, getattr(loader, "sampler", None)):
        g = getattr(owner, "generator", None)
        if isinstance(g, torch.Generator) and all(g is not f for f in found):
            found.append(g)
    return found


def _rng_state(generators: list[torch.Generator]) -> dict:
    """Every random state training consumes: torch's global RNG (dropout, and shuffling when the
    loader has no generator), the accelerator's RNG, and the loader's generators."""
    state = {"torch": torch.get_rng_state(), "loader": [g.get_state() for g in generators]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, generators: list[torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    for g, s in zip(generators, state["loader"]):
        g.set_state(s)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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


@dataclass
class _Position:
    """Where the loop stands and what it has recorded. With the RNG states, this is what a
    checkpoint's `train_state` holds, so a resumed run continues exactly where it stopped."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # micro-batches of the current epoch already consumed
    tokens_seen: int = 0  # over all ranks
    elapsed: float = 0.0  # seconds trained before this call (by the run a checkpoint resumes)
    interval_losses: list[float] = field(default_factory=list)  # step losses since last evaluation
    history: History = field(default_factory=History)

    def advance(self, next_batch: int, n_batches: int, tokens: int, loss: float) -> None:
        """Count one optimizer step that ended just before micro-batch `next_batch` of the epoch."""
        self.step += 1
        self.tokens_seen += tokens
        self.interval_losses.append(loss)
        if next_batch < n_batches:
            self.batch_in_epoch = next_batch
        else:  # the epoch is done; the next step starts a new one
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0

    def train_state(self, elapsed: float, rng_epoch_start: dict, rng_now: dict) -> dict:
        """The loop position as a checkpoint stores it (plain numbers, lists and tensors)."""
        return {
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "tokens_seen": self.tokens_seen, "elapsed": elapsed,
            "interval_losses": list(self.interval_losses), "history": self.history.to_dict(),
            "rng_epoch_start": rng_epoch_start, "rng_now": rng_now,
        }

    @classmethod
    def from_train_state(cls, state: dict) -> "_Position":
        return cls(state["step"], state["epoch"], state["batch_in_epoch"], state["tokens_seen"],
                   state["elapsed"], list(state["interval_losses"]),
                   History.from_dict(state["history"]))


def _resume(path, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[_Position, dict]:
    """Load a checkpoint written by `train` into `model` and `optimizer`; return the loop
    position and the checkpoint's train_state, whose RNG states the first epoch replays."""
    ckpt = load_checkpoint(path, "cpu")  # RNG states must stay on the CPU
    unwrap(model).load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])  # moves the state to the params' device
    return _Position.from_train_state(ckpt["train_state"]), ckpt["train_state"]


def _epoch_batches(loader, pos: _Position, resumed: dict | None, generators: list) -> tuple:
    """Start epoch `pos.epoch` at micro-batch `pos.batch_in_epoch` (0 unless resuming).

    Returns the RNG states at the epoch's start (a checkpoint stores them) and an iterator over
    the loader's batches, positioned at that micro-batch.
    """
    # The shuffle order of an epoch is drawn from the RNGs when the loader's iterator is
    # created. To resume mid-epoch, rewind the RNGs to the epoch start, replay the shuffle,
    # skip the consumed batches without computing anything, then restore the RNGs of the
    # checkpoint moment (so dropout masks continue identically).
    skip = pos.batch_in_epoch
    if resumed is not None:
        _set_rng_state(resumed["rng_epoch_start" if skip else "rng_now"], generators)
    epoch_rng = _rng_state(generators)
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(pos.epoch)  # DistributedSampler reshuffles per epoch
    batches = iter(loader)
    for _ in range(skip):
        next(batches)
    if resumed is not None and skip:
        _set_rng_state(resumed["rng_now"], generators)
    return epoch_rng, batches


def _forward_backward(model, loss_fn, batch, group_size: int, last_micro: bool, device,
                      autocast_dtype) -> torch.Tensor:
    """Add one micro-batch's share of the step's gradient; return its loss / group_size,
    detached, as a float32 tensor that stays on the device (no sync)."""
    # DDP all-reduces gradients in backward; skip that on all but the last micro-batch.
    sync = contextlib.nullcontext()
    if not last_micro and hasattr(model, "no_sync"):
        sync = model.no_sync()
    with sync:
        with autocast(device, autocast_dtype):
            loss = loss_fn(model, batch)
        (loss / group_size).backward()
    return loss.detach().float() / group_size


def _optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, step_loss: torch.Tensor,
                    lr_scale: float, max_grad_norm: float | None, where: str) -> float:
    """Set the scheduled learning rate, clip, check, step; return the step's loss as a float.

    Raises FloatingPointError, before the weights change, when the loss or the gradient norm is
    not finite. `where` ("optimizer step 3 (epoch 1, batch 6)") goes into that message.
    """
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * lr_scale
    checks = [step_loss]
    if max_grad_norm is not None:
        checks.append(torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm))
    loss_value, *norm = torch.stack([c.float() for c in checks]).tolist()  # one sync
    if not math.isfinite(loss_value) or not all(math.isfinite(x) for x in norm):
        what = "loss" if not math.isfinite(loss_value) else "gradient norm"
        raise FloatingPointError(
            f"{what} is {loss_value if what == 'loss' else norm[0]} at {where}; training "
            f"diverged. Try a lower learning rate (now {optimizer.param_groups[0]['lr']:.2e}), "
            "a longer warmup, or gradient clipping (max_grad_norm)."
        )
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_value


def _show(bar: tqdm, postfix: dict, values: dict[str, str], tick: bool = False) -> None:
    """Show `values` after the progress bar; `tick`: count one more step done."""
    postfix.update(values)
    bar.set_postfix(postfix, refresh=not tick)
    if tick:
        bar.update(1)  # redraws the bar, postfix included


def _evaluate_and_log(model, pos: _Position, lr: float, elapsed: float, loss_fn, train_loader,
                      val_loader, eval_batches, device, autocast_dtype, metrics: dict,
                      on_eval) -> float | None:
    """Append one History entry (mean training loss since the last one, validation loss, lr,
    metrics), then call `on_eval`; return the validation loss (None without a val_loader)."""
    val_loss = None
    if val_loader is not None:
        val_loss = evaluate(model, val_loader, loss_fn, eval_batches, device, autocast_dtype)
    h = pos.history
    h.step.append(pos.step)
    h.tokens_seen.append(pos.tokens_seen)
    h.train_loss.append(sum(pos.interval_losses) / len(pos.interval_losses))
    h.val_loss.append(val_loss)
    h.lr.append(lr)
    h.elapsed.append(elapsed)
    pos.interval_losses = []
    model.eval()
    with torch.no_grad():
        for name, fn in metrics.items():
            if val_loader is not None:
                h.metrics.setdefault(f"val_{name}", []).append(fn(model, val_loader))
            h.metrics.setdefault(f"train_{name}", []).append(fn(model, train_loader))
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
        max_grad_norm: clip the gradients' global L2 norm to this (None: no clipping).
        warmup_steps, lr_schedule, min_lr_ratio: see `lr_factor`.
        metrics: name -> fn(model, loader) -> float, run in eval mode without gradients on
            `val_loader` and on `train_loader` at each evaluation (recorded as "val_<name>",
            "train_<name>"); a metric decides itself how many batches to look at.
        on_eval: fn(model, step) called after each evaluation, in eval mode, without gradients.
        checkpoint_every: save a checkpoint to `checkpoint_path` every this many steps; one is
            always saved after the last step when `checkpoint_path` is set.
        resume: continue from `checkpoint_path` if it exists. The continued run reproduces the
            uninterrupted run's losses exactly (same shuffle order, same dropout masks).
        device: move the model and batches here (default: where the model's parameters are).
        autocast_dtype: e.g. torch.bfloat16 for mixed precision on CUDA; ignored on CPU/MPS.
        progress: show a tqdm bar (loss, learning rate, tokens/s); set False on DDP ranks != 0.
        count_tokens: batch -> number of tokens (default: `default_count_tokens`).
        seed: if given, seeds torch once before a fresh (not resumed) run.
    Raises:
        FloatingPointError: at the first optimizer step whose loss or gradient norm is NaN/inf,
            before the step corrupts the weights.
    """
    if grad_accum_steps < 1:
        raise ValueError("grad_accum_steps must be >= 1")
    if resume and checkpoint_path is None:
        raise ValueError("resume=True needs a checkpoint_path")
    device, world_size, is_main = _placement(model, device)
    count_tokens = count_tokens or default_count_tokens
    n_batches = len(train_loader)
    steps_per_epoch = math.ceil(n_batches / grad_accum_steps)
    total_steps = max_steps if max_steps is not None else epochs * steps_per_epoch
    if n_batches == 0 or total_steps <= 0:
        raise ValueError(f"nothing to train: {n_batches} batches, {total_steps} steps")
    lr_factor(0, total_steps, warmup_steps, lr_schedule, min_lr_ratio)  # fail early on a typo
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])  # the same key PyTorch's LR schedulers use
    generators = _loader_generators(train_loader)

    pos, resumed = _Position(), None  # resumed: the checkpoint's train_state, until replayed
    if resume and Path(checkpoint_path).exists():
        pos, resumed = _resume(checkpoint_path, model, optimizer)
    elif resume and is_main:
        print(f"No checkpoint at {checkpoint_path}; starting from scratch.")
    elif seed is not None:
        torch.manual_seed(seed)

    was_training = model.training
    model.train()
    optimizer.zero_grad(set_to_none=True)
    bar = tqdm(total=total_steps, initial=pos.step, desc="train", unit="step",
               disable=not (progress and is_main))
    t_start, tokens_at_start, postfix = time.perf_counter(), pos.tokens_seen, {}
    try:
        while pos.step < total_steps:
            epoch_rng, batches = _epoch_batches(train_loader, pos, resumed, generators)
            resumed, step_loss, step_tokens = None, 0.0, 0
            for i in range(pos.batch_in_epoch, n_batches):
                batch = move_to_device(next(batches), device)
                group_start = i - i % grad_accum_steps  # an epoch's last group may be shorter
                group_size = min(grad_accum_steps, n_batches - group_start)
                last_micro = i == group_start + group_size - 1
                step_loss = step_loss + _forward_backward(model, loss_fn, batch, group_size,
                                                          last_micro, device, autocast_dtype)
                step_tokens += count_tokens(batch)
                if not last_micro:
                    continue

                lr_scale = lr_factor(pos.step, total_steps, warmup_steps, lr_schedule, min_lr_ratio)
                where = f"optimizer step {pos.step + 1} (epoch {pos.epoch + 1}, batch {i + 1})"
                loss = _optimizer_step(model, optimizer, step_loss, lr_scale, max_grad_norm, where)
                pos.advance(i + 1, n_batches, step_tokens * world_size, loss)
                step_loss, step_tokens = 0.0, 0
                lr, seconds = optimizer.param_groups[0]["lr"], time.perf_counter() - t_start
                rate = (pos.tokens_seen - tokens_at_start) / max(seconds, 1e-9)
                _show(bar, postfix, {"loss": f"{loss:.3f}", "lr": f"{lr:.1e}",
                                     "tok/s": f"{rate:.0f}"}, tick=True)

                if (eval_every and pos.step % eval_every == 0) or pos.step == total_steps:
                    val_loss = _evaluate_and_log(model, pos, lr, pos.elapsed + seconds, loss_fn,
                                                 train_loader, val_loader, eval_batches, device,
                                                 autocast_dtype, metrics or {}, on_eval)
                    if val_loss is not None:
                        _show(bar, postfix, {"val": f"{val_loss:.3f}"})
                if checkpoint_path is not None and is_main and (
                    (checkpoint_every and pos.step % checkpoint_every == 0)
                    or pos.step == total_steps
                ):
                    elapsed = pos.elapsed + time.perf_counter() - t_start
                    save_checkpoint(checkpoint_path, model, optimizer, train_state=pos.train_state(
                        elapsed, epoch_rng, _rng_state(generators)))
                if pos.step >= total_steps:
                    break
    finally:
        bar.close()
        model.train(was_training)
    return pos.history
