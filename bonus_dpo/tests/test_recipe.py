"""The DPO recipe: the book's settings for GPT-2, the tuned ones for the fallback, fast mode's lr."""

from bonus_dpo import DPO_RECIPES, dpo_recipe


def test_gpt2_follows_the_book_and_the_fallback_adds_the_sft_term(monkeypatch):
    monkeypatch.delenv("FAST_DEV_RUN", raising=False)
    gpt2, fallback = dpo_recipe("gpt2-medium (355M)"), dpo_recipe("tinystories-fallback")
    assert (gpt2.recipe.lr, gpt2.recipe.epochs, gpt2.recipe.weight_decay, gpt2.recipe.batch_size) == (5e-6, 1, 0.01, 8)
    assert (gpt2.beta, gpt2.sft_weight) == (0.1, 0.0)
    assert (fallback.recipe.lr, fallback.recipe.epochs, fallback.beta, fallback.sft_weight) == (3e-4, 1, 0.1, 1.0)


def test_fast_mode_changes_only_the_fallbacks_learning_rate(monkeypatch):
    monkeypatch.setenv("FAST_DEV_RUN", "1")
    fast = dpo_recipe("tinystories-fallback-fast")
    assert fast.recipe.lr == 1e-3
    assert fast.recipe.epochs == DPO_RECIPES["fallback"].recipe.epochs and fast.sft_weight == 1.0
    assert dpo_recipe("gpt2") == DPO_RECIPES["gpt2"]
    assert DPO_RECIPES["fallback"].recipe.lr == 3e-4  # the table itself is left as it was
