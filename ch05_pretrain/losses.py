"""Losses and evaluation for language models.

A loss function here takes `(model, batch)` and returns a scalar tensor. The training loop in
`train.py` calls it without knowing what the batch holds, so chapter 6 (classification) and
chapter 7 (instruction tuning) reuse the same loop with their own loss or collate function.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from ch02_data.checks import positive_int

from .device import autocast, move_to_device

IGNORE_INDEX = -100  # targets equal to this are skipped by cross_entropy (padding, prompt tokens)

LossFn = Callable[[nn.Module, object], torch.Tensor]


class NoTargetsError(ValueError):
    """A batch in which every target is -100: its mean loss would be 0/0 = nan.

    Raised by `lm_loss` before the forward pass. `train` skips such a micro-batch and `evaluate`
    such a batch, so a prompt that fills the whole window (chapter 7) is not taken for
    divergence; a loss of your own can raise it for the same purpose.
    """


def split_lm_batch(batch, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of a language-model batch, or a ValueError naming what came instead.
    A bare (B, T) tensor would otherwise unpack into its first two rows and fail later as a
    'missing batch dimension'."""
    if isinstance(batch, torch.Tensor) or not isinstance(batch, (tuple, list)) or len(batch) != 2:
        if isinstance(batch, torch.Tensor):
            got = f"a bare tensor of shape {tuple(batch.shape)}"
        elif isinstance(batch, (tuple, list)):
            got = f"a {type(batch).__name__} of {len(batch)} items"
        else:
            got = f"a {type(batch).__name__}"
        raise ValueError(f"batch is {got}; {where} takes (inputs, targets), two (B, T) tensors, "
                         "as create_dataloader yields them")
    return batch[0], batch[1]


def lm_loss(model: nn.Module, batch) -> torch.Tensor:
    """Mean next-token cross-entropy.

    Args:
        model: maps token ids (B, T) to logits (B, T, V).
        batch: `(inputs, targets)`, both (B, T) int64; targets are the inputs shifted left by
            one token. Positions whose target is -100 do not count, so instruction tuning only
            changes how batches are collated, not the loss.
    Returns:
        A scalar tensor: the mean of -log p(target) over all counted positions.
    Raises:
        NoTargetsError: when no position is counted (every target is -100).
    """
    inputs, targets = split_lm_batch(batch, "lm_loss")
    # Checked before the forward pass, so a skipped batch costs no compute. On a GPU this reads
    # one bool back: a short wait, since `train`'s blocking copy of the batch to the device
    # has already waited for the work queued before it.
    if not bool((targets != IGNORE_INDEX).any()):
        raise NoTargetsError(
            f"the batch has no counted targets: all {targets.numel()} targets are "
            f"{IGNORE_INDEX}, so its mean loss is undefined (0/0)"
        )
    logits = model(inputs)  # (B, T, V)
    # cross_entropy wants (N, V) scores and (N,) classes: fold batch and time together.
    return F.cross_entropy(
        logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX
    )


@contextlib.contextmanager
def evaluation_batches(model: nn.Module, loader: Iterable, max_batches: int | None = None,
                       device: torch.device | str | None = None) -> Iterator[Iterator]:
    """The loop every evaluation shares: `with evaluation_batches(...) as batches:` puts the model
    in eval mode (no dropout) and gives the first `max_batches` batches of `loader` (None: all),
    moved to `device` (default: the model's); the model's train/eval mode is restored on exit.
    Reading a training loader never moves its order: a seeded loader's epoch
    (`ch02_data.SeededSampler`) is put back on exit, so a later training pass sees the batches it
    would have seen without the evaluation.
    `evaluate`, chapter 6's `accuracy` and the DPO bonus's `preference_stats` use it."""
    positive_int("max_batches", max_batches, none_means="all batches")
    if device is None:
        device = next(model.parameters()).device
    was_training = model.training
    sampler = getattr(loader, "sampler", None)
    epoch = getattr(sampler, "epoch", None)
    model.eval()
    try:
        yield (move_to_device(batch, device) for batch in itertools.islice(loader, max_batches))
    finally:
        model.train(was_training)
        if isinstance(epoch, int):
            sampler.epoch = epoch


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    loss_fn: LossFn = lm_loss,
    max_batches: int | None = None,
    device: torch.device | str | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> float:
    """Mean of `loss_fn` over the first `max_batches` batches of `loader` (all when None).

    The model runs in eval mode (no dropout) without gradients, and its previous train/eval
    mode is restored afterwards. Batches are moved to `device` (default: the model's device).
    Each batch counts equally; a batch without counted targets (`NoTargetsError`) is left out.
    Returns nan for an empty loader. Evaluating a training loader never moves its order: a seeded
    loader's epoch (`ch02_data.SeededSampler`) is put back afterwards, so the next training pass
    sees the batches it would have seen without the evaluation.

    Raises:
        NoTargetsError: when every batch looked at was left out, rather than returning nan.
    """
    if device is None:
        device = next(model.parameters()).device
    total, n, skipped = 0.0, 0, 0
    with evaluation_batches(model, loader, max_batches, device) as batches:
        for batch in batches:
            try:
                with autocast(device, autocast_dtype):
                    loss = loss_fn(model, batch)
            except NoTargetsError:
                skipped += 1
                continue
            total += loss.item()
            n += 1
    if skipped and not n:
        raise NoTargetsError(
            f"none of the {skipped} evaluated batches has a counted target (every target is "
            f"{IGNORE_INDEX}), so there is no loss to average; check how the batches are masked"
        )
    return total / n if n else float("nan")


def perplexity(loss: float) -> float:
    """exp(loss): the number of equally likely tokens the model is, on average, choosing among.

    A uniform guess over GPT-2's 50,257 tokens has loss ln(50257) = 10.8 and perplexity 50,257.
    """
    try:
        return math.exp(loss)
    except OverflowError:
        return float("inf")
