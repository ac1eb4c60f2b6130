"""The GPT-2 path of the chapter, offline: a transformers-written checkpoint of random weights goes
through load_gpt2(dir), prepare_classifier and chapter 5's fine_tune with the default recipe,
accuracy and classify."""

from dataclasses import replace
from functools import partial

import pytest
import torch

from ch02_data import gpt2_encoding
from ch05_pretrain import fine_tune, load_gpt2, recipe_for
from ch06_classify import RECIPES, SpamDataset, accuracy, classification_loss, classify, make_loader, prepare_classifier

TEXTS = ["WINNER! Claim your free prize now, call 0900", "See you at lunch?"] * 8
LABELS = ["spam", "ham"] * 8


def test_gpt2_checkpoint_fine_tunes_with_the_default_recipe(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64, vocab_size=50257)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path, safe_serialization=True)
    model = load_gpt2(tmp_path)
    assert recipe_for(RECIPES, "gpt2 from somewhere") == RECIPES["gpt2"]
    tok = gpt2_encoding()
    ds = SpamDataset(TEXTS, LABELS, tok)
    loader = make_loader(ds, batch_size=4, shuffle=True)
    prepare_classifier(model)
    history = fine_tune(model, loader, loader, recipe=replace(RECIPES["gpt2"], lr=1e-2, epochs=4),
                        loss_fn=classification_loss, eval_every=4, eval_batches=2,
                        metrics={"acc": partial(accuracy, max_batches=2)}, progress=False)
    assert history.train_loss[-1] < history.train_loss[0]
    assert accuracy(model, make_loader(ds, batch_size=4)) == 1.0
    label, p = classify("Claim your free prize now", model, tok, max_length=ds.max_length)
    assert label in ("ham", "spam") and 0.5 <= p <= 1.0
