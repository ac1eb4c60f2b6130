"""The evaluations `train` makes when one is due: validation loss, metrics and `on_eval`,
recorded in the History, without moving any random state training consumes."""

from __future__ import annotations

import numbers

import torch

from .losses import evaluate
from .resume import Position, random_state_kept


def evaluate_and_log(model, pos: Position, lr: float, elapsed: float, loss_fn, train_loader,
                     val_loader, eval_batches, device, autocast_dtype, metrics: dict,
                     on_eval, generators: list[torch.Generator]) -> float | None:
    """Append one History entry (mean training loss since the last one, validation loss, lr,
    metrics), then call `on_eval`; return the validation loss (None without a val_loader).
    The training loss is nan when no micro-batch of the interval had a counted target.
    Nothing here moves training's random states (`resume.random_state_kept`)."""
    with random_state_kept(train_loader, generators):
        return _record(model, pos, lr, elapsed, loss_fn, train_loader, val_loader,
                       eval_batches, device, autocast_dtype, metrics, on_eval)


def _record(model, pos: Position, lr: float, elapsed: float, loss_fn, train_loader,
            val_loader, eval_batches, device, autocast_dtype, metrics: dict,
            on_eval) -> float | None:
    """`evaluate_and_log`'s work, which may consume random states."""
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
                value = metric_value(name, fn(model, val_loader))
                h.metrics.setdefault(f"val_{name}", []).append(value)
            value = metric_value(name, fn(model, train_loader))
            h.metrics.setdefault(f"train_{name}", []).append(value)
        if on_eval is not None:
            on_eval(model, pos.step)
    model.train()
    return val_loss


def metric_value(name: str, value) -> float:
    """A metric's result as a plain float, so the History (and a checkpoint) holds no NumPy or
    tensor scalars, which weights_only loading would refuse."""
    if getattr(value, "ndim", None) == 0 or isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()  # a one-element tensor, a NumPy scalar or 0-d array
    if isinstance(value, numbers.Real):  # int, float, bool and their NumPy kin
        return float(value)
    raise TypeError(f"metric {name!r} returned {type(value).__name__} ({value!r:.60}); a metric "
                    "must return one number: a float, an int, a NumPy scalar or a 1-element tensor")
