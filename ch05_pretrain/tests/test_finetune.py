"""finetune: Recipe, recipe_for, and fine_tune's fast-path handling (train on it, hand back without)."""

import pytest
import torch

from ch04_gpt import GPTConfig, GPTModel
from ch05_pretrain import Recipe, fine_tune, lm_loss, recipe_for

CFG = GPTConfig(vocab_size=32, context_length=8, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)


def batches(n=4):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 32, (n, 2, 9), generator=g)
    return [(x[:, :-1], x[:, 1:]) for x in ids]


def is_fast(model):
    return any(getattr(m, "use_sdpa", False) or getattr(m, "fast", False) for m in model.modules())


def test_recipe_for_picks_the_fallback_by_its_key():
    recipes = {"gpt2": Recipe(lr=1.0, epochs=1), "fallback": Recipe(lr=2.0, epochs=1)}
    assert recipe_for(recipes, "tinystories-fallback") is recipes["fallback"]
    assert recipe_for(recipes, "gpt2-medium") is recipes["gpt2"]


def test_fine_tune_trains_on_the_fast_path_and_hands_the_model_back_without_it():
    torch.manual_seed(0)
    model, seen = GPTModel(CFG), []

    def loss_fn(m, batch):
        seen.append(is_fast(m))
        return lm_loss(m, batch)

    history = fine_tune(model, batches(), batches(), recipe=Recipe(lr=1e-2, epochs=2), loss_fn=loss_fn,
                        progress=False)
    assert seen and all(seen) and not is_fast(model)
    assert history.step[-1] == 8


def test_fine_tune_hands_the_model_back_on_the_readable_path_when_training_fails():
    model = GPTModel(CFG)
    with pytest.raises(RuntimeError, match="boom"):
        fine_tune(model, batches(), recipe=Recipe(lr=1e-2, epochs=1),
                  loss_fn=lambda m, b: (_ for _ in ()).throw(RuntimeError("boom")), progress=False)
    assert not is_fast(model)
