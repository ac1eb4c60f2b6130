"""The TinyStories fallback model: fast mode trains, caches, and a second call only loads."""

import dataclasses
from pathlib import Path

import pytest
import torch

from ch05_pretrain import fallback
from ch05_pretrain.checkpoint import load_checkpoint


def test_recipes_share_gpt2_vocab_and_never_share_a_file():
    assert fallback.FULL.cfg.vocab_size == fallback.FAST.cfg.vocab_size == 50257
    assert fallback.FULL.file_name != fallback.FAST.file_name


def test_split_text_cuts_at_a_story_boundary():
    text = "a" * 50 + "<|endoftext|>" + "b" * 40 + "<|endoftext|>" + "c" * 10
    train_text, val_text = fallback.split_text(text, val_fraction=0.1)  # cut near char 113
    assert train_text + val_text == text
    assert val_text == "<|endoftext|>" + "c" * 10  # moved back to the boundary at char 103


def test_fast_mode_trains_caches_then_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("FAST_DEV_RUN", "1")
    monkeypatch.setenv("CHECKPOINT_DIR", str(tmp_path))
    model, info = fallback.get_fallback_model(verbose=False)
    path = tmp_path / fallback.FAST.file_name
    assert path.exists() and not info["from_cache"] and info["fast"]
    assert info["steps"] == fallback.FAST.max_steps
    assert info["val_loss"] < 10.0 < torch.log(torch.tensor(50257.0)).item()  # learned something
    assert load_checkpoint(path)["config"] == fallback.FAST.cfg.to_dict()

    def no_training(*args, **kwargs):
        raise AssertionError("the cached model should be loaded, not trained")

    monkeypatch.setattr(fallback, "train_fallback", no_training)
    again, info2 = fallback.get_fallback_model(verbose=False)
    assert info2["from_cache"] and info2["val_loss"] == info["val_loss"]
    assert not again.training
    idx = torch.randint(0, 50257, (1, 16))
    with torch.no_grad():
        torch.testing.assert_close(again(idx), model(idx), rtol=0, atol=0)

    # A cache made by another recipe is not reused.
    monkeypatch.setattr(fallback, "FAST", dataclasses.replace(fallback.FAST, max_steps=21))
    with pytest.raises(AssertionError, match="cached model should be loaded"):
        fallback.get_fallback_model(verbose=False)

    monkeypatch.delenv("FAST_DEV_RUN")  # full mode looks for its own file and would train
    with pytest.raises(AssertionError, match="cached model should be loaded"):
        fallback.get_fallback_model(verbose=False)


def test_messages_show_paths_inside_the_repository_relative():
    from ch05_pretrain.fallback import REPO_ROOT, shown

    assert shown(REPO_ROOT / "checkpoints" / "x.pt") == "checkpoints/x.pt"
    assert shown(Path("/elsewhere/x.pt")) == "/elsewhere/x.pt"
