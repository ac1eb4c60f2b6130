"""How DPO is run on each kind of chapter-7 model: one recipe, read by the notebook, its
solutions and the tests, so a setting is written down once.

GPT-2 follows the book's run (GPT-2 355M: AdamW, lr 5e-6, weight decay 0.01, batches of 8, one
epoch, beta 0.1). The TinyStories fallback, 22 times smaller, was tuned on the validation prompts
(`benchmarks/sweep_dpo_fallback.py`, results in `benchmarks/results/dpo_fallback_sweep.csv`):
plain DPO made its answers politer but wrecked them, so it adds the SFT term (RPO, Pang et al.
2024) at weight 1 and trains at lr 3e-4. Both keep one epoch, as the book warns that more
overfits the pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ch02_data import fast_dev_run
from ch05_pretrain import Recipe, recipe_for

__all__ = ["DPORecipe", "DPO_RECIPES", "dpo_recipe"]


@dataclass(frozen=True)
class DPORecipe:
    """Chapter 5's fine-tuning `recipe` (optimizer, epochs, batch size, seed) plus DPO's two
    numbers: `beta` (the reward scale of `dpo_loss`) and `sft_weight` (the weight of the chosen
    answer's negative log-likelihood added to the loss; 0 is plain DPO)."""

    recipe: Recipe
    beta: float = 0.1
    sft_weight: float = 0.0


DPO_RECIPES = {
    "gpt2": DPORecipe(Recipe(lr=5e-6, epochs=1, weight_decay=0.01)),
    "fallback": DPORecipe(Recipe(lr=3e-4, epochs=1, weight_decay=0.01), sft_weight=1.0),
}
# Fast mode (FAST_DEV_RUN=1) swaps the fallback for a 1-layer stand-in that trains a few steps;
# at 3e-4 those steps would not move it, so the stand-in trains at 1e-3.
FAST_FALLBACK_LR = 1e-3


def dpo_recipe(base_key: str) -> DPORecipe:
    """The `DPO_RECIPES` entry for the chapter-7 model made from `base_key` (chapter 5's
    `recipe_for` tells the fallback from GPT-2), with fast mode's learning rate for the fallback's
    stand-in when FAST_DEV_RUN=1."""
    chosen = recipe_for(DPO_RECIPES, base_key)
    if fast_dev_run() and chosen is DPO_RECIPES["fallback"]:
        chosen = replace(chosen, recipe=replace(chosen.recipe, lr=FAST_FALLBACK_LR))
    return chosen
