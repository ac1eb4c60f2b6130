"""Instruction fine-tuning with chapter 5's `train`: the recipe per base model, in one call."""

from __future__ import annotations

from dataclasses import dataclass

from ch04_gpt import GPTModel
from ch05_pretrain import History, fast_adamw, lm_loss, train


@dataclass(frozen=True)
class Recipe:
    """How to fine-tune one kind of base model (AdamW, batches of 8, gradients clipped at 1)."""

    lr: float
    epochs: int = 2
    lr_schedule: str = "constant"  # or "cosine": ch05's half cosine down to 10% of lr
    weight_decay: float = 0.1
    batch_size: int = 8


# GPT-2 (124M or 355M): the book's recipe, a constant 5e-5 for 2 epochs.
# The TinyStories fallback (16M parameters, never saw an instruction): larger steps, decayed;
# measured on the validation loss, see the chapter notebook's section 7.5.
RECIPES = {
    "gpt2": Recipe(lr=5e-5),
    "fallback": Recipe(lr=1e-3, lr_schedule="cosine"),
}


def fine_tune(
    model: GPTModel,
    train_loader,
    val_loader=None,
    *,
    recipe: Recipe = RECIPES["gpt2"],
    epochs: int | None = None,
    eval_every: int | None = None,
    eval_batches: int | None = None,
    seed: int = 123,
    progress: bool = True,
) -> History:
    """Fine-tune `model` in place on (inputs, targets) batches with `lm_loss`; return the History.

    The trainable parameters (all of them, or only LoRA adapters after `add_lora`) get an AdamW
    with the recipe's learning rate, schedule and weight decay; the model trains on its fast
    path (the same function, fused kernels) and is switched back afterwards. `epochs` overrides
    the recipe's. With `eval_every`, the validation loss is recorded every that many steps.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters; unfreeze some (requires_grad=True) before fine-tuning")
    optimizer = fast_adamw(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    model.set_fast_path(True)
    try:
        return train(model, optimizer, train_loader, lm_loss, val_loader=val_loader,
                     epochs=recipe.epochs if epochs is None else epochs, eval_every=eval_every,
                     eval_batches=eval_batches, lr_schedule=recipe.lr_schedule, seed=seed,
                     progress=progress)
    finally:
        model.set_fast_path(False)
