"""Instruction fine-tuning: this chapter's recipe per base model (`RECIPES`, for chapter 5's
`fine_tune`, whose default loss is the language-model loss this chapter needs), and the chapter-7
model cached for the chapters after it (`get_instruction_model`)."""

from __future__ import annotations

import re
from pathlib import Path

from ch02_data import fast_dev_run
from ch04_gpt import GPTModel
from ch05_pretrain import (
    Recipe,
    chunked_lm_loss,
    fine_tune,
    load_base_model,
    load_model,
    recipe_for,
    run_cost,
    save_checkpoint,
)
from ch05_pretrain.checkpoint import unwritable_reason
from ch05_pretrain.fallback import checkpoint_dir, shown


# GPT-2 (124M or 355M): the book's recipe, a constant 5e-5 for 2 epochs, on the whole text.
# The TinyStories fallback (16M parameters, never saw an instruction): larger steps, decayed, and
# many more of them, on the response only. Measured over 2 epochs (validation loss / ROUGE-L on
# the 55 validation entries): cosine from 5e-4 2.062 / 0.153, from 1e-3 1.931 / 0.145, from 2e-3
# 2.105 / 0.128. Then with the prompt masked, at 1e-3 for 8 epochs (one seed), validation
# ROUGE-L after 2, 4, 6 and 8 epochs: 0.212, 0.329, 0.383, 0.426 (test 0.380); without masking
# 0.238 after 2 epochs, at twice the time per step (the loss then covers every prompt token).
# Echoing the input back (no model at all) scores 0.512 on the same entries.
RECIPES = {
    "gpt2": Recipe(lr=5e-5, epochs=2),
    "fallback": Recipe(lr=1e-3, epochs=8, lr_schedule="cosine"),
}
# Whether the loss skips the prompt's tokens (`make_loader(..., mask_prompt=...)`), per base model.
MASK_PROMPT = {"gpt2": False, "fallback": True}

__all__ = ["MASK_PROMPT", "RECIPES", "Recipe", "fine_tune", "get_instruction_model",
           "instruction_checkpoint_path",
           "save_instruction_model"]  # Recipe and fine_tune are chapter 5's, named here too


# --- The chapter-7 model, for the chapters after it -----------------------------------------


def instruction_checkpoint_path(base_key: str) -> Path:
    """Where the instruction-tuned model made from base model `base_key` is cached:
    `<checkpoint folder>/ch07-instruct-<base_key>.pt` (chapter 5's folder, git-ignored)."""
    slug = re.sub(r"[^a-z0-9.]+", "-", base_key.lower()).strip("-")
    return checkpoint_dir() / f"ch07-instruct-{slug}.pt"


def save_instruction_model(model: GPTModel, base_key: str, **info) -> Path | None:
    """Cache the fine-tuned `model` (with its config, `base_key` and `info`) for the DPO and
    distillation bonuses; return the path, or None with one printed line when it cannot be written
    (the model in memory is never lost over a cache)."""
    path = instruction_checkpoint_path(base_key)
    problem = unwritable_reason(path)
    if problem is None:
        try:
            return save_checkpoint(path, model, base=base_key, **info)
        except (OSError, TypeError) as e:
            problem = str(e).splitlines()[0]
    print(f"the instruction-tuned model could not be cached at {shown(path)} ({problem})")
    return None


def get_instruction_model(device="cpu", name: str = "gpt2-medium", progress: bool = True) -> tuple[GPTModel, str]:
    """(the chapter-7 instruction-tuned model in eval mode, its base_key).

    The base model is chapter 5's `load_base_model(name)` (GPT-2 `name`, else 124M, else the
    TinyStories fallback; dropout off). Loaded from the checkpoint the chapter 7 notebook saves
    (`save_instruction_model`) when one exists for that base model; otherwise one line says so,
    the base model is fine-tuned now on the 935 training entries with the recipe of `RECIPES`
    and `MASK_PROMPT` (2 epochs for GPT-2, 8 for the fallback: several minutes for the fallback
    model on a CPU, much longer for GPT-2 355M; the estimate is printed first) and cached.
    """
    from .data import InstructionDataset, load_instruction_data, make_loader, split_entries

    chosen = load_base_model(name, device)
    base, base_key = chosen.model, chosen.key
    path = instruction_checkpoint_path(base_key)
    if path.is_file():
        try:
            model = load_model(path, device)
        except Exception as e:  # unreadable: fine-tune again
            print(f"cannot read {shown(path)} ({str(e).splitlines()[0][:80]}); fine-tuning again")
        else:
            if model.cfg == base.cfg:
                print(f"Loaded the chapter-7 model ({base_key}, instruction-tuned) from {shown(path)}.")
                return model, base_key
            print(f"{shown(path)} was made from another configuration of {base_key}; fine-tuning again")
    recipe = recipe_for(RECIPES, base_key)
    print(f"No chapter-7 checkpoint for {base_key} at {shown(path)}: instruction fine-tuning it now "
          f"({recipe.epochs} epochs, lr {recipe.lr:g}).")
    train_entries = split_entries(load_instruction_data())[0]
    if fast_dev_run():
        train_entries = train_entries[:40]
    ds = InstructionDataset(train_entries, max_length=base.cfg.context_length)
    loader = make_loader(ds, recipe.batch_size, shuffle=True, drop_last=True, seed=123,
                         mask_prompt=recipe_for(MASK_PROMPT, base_key))
    epochs = 1 if fast_dev_run() else recipe.epochs
    if progress:  # one step measured on a batch of the first entries (the loader's order untouched)
        base.set_fast_path(True)
        run_cost(base, loader.collate_fn([ds[i] for i in range(recipe.batch_size)]), chunked_lm_loss,
                 epochs * len(loader))
        base.set_fast_path(False)
    history = fine_tune(base, loader, recipe=recipe, epochs=epochs, progress=progress)
    save_instruction_model(base, base_key, train_loss=history.train_loss[-1])
    return base.eval(), base_key
