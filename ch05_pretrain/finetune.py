"""Fine-tuning a pretrained model with chapter 5's `train`: one recipe type and one `fine_tune`.

Chapter 6 (classification), chapter 7 (instruction tuning) and the bonuses differ only in what
they hand in: the model prepared for the task (a new head, frozen layers, LoRA adapters), the
batches, the loss, and their `Recipe` per base model, kept as data in their own chapter
(`ch06_classify.RECIPES`, `ch07_instruct.RECIPES`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.nn as nn

from .chunked_loss import chunked_lm_loss
from .device import fast_adamw
from .history import History
from .train import train


@dataclass(frozen=True)
class Recipe:
    """How to fine-tune one kind of base model: AdamW (fused where available) over the trainable
    parameters, gradients clipped at norm 1, batches of `batch_size` in an order drawn from `seed`."""

    lr: float  # the peak learning rate
    epochs: int  # passes over the training set
    lr_schedule: str = "constant"  # or "cosine": ch05's half cosine down to 10% of lr
    warmup_steps: int = 0  # linear warmup before the schedule (see `lr_factor`)
    weight_decay: float = 0.1  # AdamW's decoupled weight decay
    batch_size: int = 8  # examples per batch (the loaders read it)
    seed: int = 123  # seeds torch before training (dropout) and the loaders' shuffle


def set_dropout(model: nn.Module, p: float) -> nn.Module:
    """Set every dropout probability of `model` to `p`, and its config's drop_rate with it.

    The book fine-tunes without dropout (chapter 6 and 7), and DPO needs it off: a policy with
    dropout in train mode would be a random perturbation of its eval-mode reference, so its
    rewards at step 0 would be noise instead of 0."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = p
    cfg = getattr(model, "cfg", None)
    if hasattr(cfg, "replace") and getattr(cfg, "drop_rate", p) != p:
        model.cfg = cfg.replace(drop_rate=p)
    return model


R = TypeVar("R")  # whatever a table of recipes holds


def recipe_for(recipes: dict[str, R], base_key: str) -> R:
    """`recipes["fallback"]` for chapter 5's TinyStories fallback model (a base key that starts
    with "tinystories"), else `recipes["gpt2"]` (any GPT-2 size). The entries may be any kind of
    recipe: chapter 7's masking flags and the DPO bonus's `DPORecipe` are chosen the same way."""
    return recipes["fallback" if base_key.startswith("tinystories") else "gpt2"]


def fine_tune(
    model: nn.Module,
    train_loader,
    val_loader=None,
    *,
    recipe: Recipe,
    loss_fn: Callable[[nn.Module, object], torch.Tensor] = chunked_lm_loss,
    epochs: int | None = None,
    eval_every: int | None = None,
    eval_batches: int | None = None,
    metrics: dict[str, Callable[[nn.Module, object], float]] | None = None,
    count_tokens: Callable[[object], int] | None = None,
    device: torch.device | str | None = None,
    seed: int | None = None,
    progress: bool = True,
) -> History:
    """Fine-tune `model`'s trainable parameters in place with `recipe`; return the History.

    The parameters with `requires_grad` (all of them, or only a new head or LoRA adapters after
    the caller froze the rest) get `fast_adamw` with the recipe's learning rate and weight
    decay; chapter 5's `train` runs the recipe's schedule and warmup with gradients clipped at
    norm 1. The model trains on its fast path (fused kernels, tested equal to the readable path
    in chapter 4) and is handed back on the readable path, also when training fails.

    loss_fn: `(model, batch) -> loss`; by default chapter 5's `chunked_lm_loss`, which is
        `lm_loss` (same value and gradients) without the (B, T, V) logits, skipping the
        positions whose target is -100 (prompt and padding in chapter 7).
    epochs, seed: override the recipe's. With `eval_every`, the validation loss (on
    `eval_batches` batches of `val_loader`) and `metrics` are recorded every that many steps;
    else only after the last one. `device` and `count_tokens` are passed on to `train`.

    Raises ValueError when no parameter is trainable.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters; unfreeze some (requires_grad=True) before fine-tuning")
    optimizer = fast_adamw(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    model.set_fast_path(True)
    try:
        return train(model, optimizer, train_loader, loss_fn, val_loader=val_loader,
                     epochs=recipe.epochs if epochs is None else epochs, eval_every=eval_every,
                     eval_batches=eval_batches, lr_schedule=recipe.lr_schedule,
                     warmup_steps=recipe.warmup_steps, metrics=metrics, device=device,
                     count_tokens=count_tokens, seed=recipe.seed if seed is None else seed,
                     progress=progress)
    finally:
        model.set_fast_path(False)
