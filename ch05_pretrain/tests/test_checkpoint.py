"""Checkpoints: weights_only round trip rebuilds the same model; foreign objects are refused."""

import pickle

import pytest
import torch

from ch04_gpt import GPTConfig, GPTModel
from ch05_pretrain.checkpoint import load_checkpoint, load_model, save_checkpoint

TINY = GPTConfig(vocab_size=30, context_length=8, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.1,
                 norm="rmsnorm", activation="swiglu")


class NotAllowed:
    """Any class outside torch's allowlist: unpickling it could run code."""


def test_round_trip_rebuilds_identical_model(tmp_path):
    torch.manual_seed(0)
    model = GPTModel(TINY)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.zeros(1, 4, dtype=torch.long)).sum().backward()
    opt.step()
    path = save_checkpoint(tmp_path / "sub" / "m.pt", model, opt, step=1, note="hi", hist=[1.5, None])
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["m.pt"]  # no temp files left

    ckpt = load_checkpoint(path)
    assert ckpt["config"] == TINY.to_dict() and ckpt["step"] == 1 and ckpt["hist"] == [1.5, None]
    assert ckpt["optimizer"]["state"]  # Adam moments are stored

    loaded = load_model(path)
    assert loaded.cfg == TINY and not loaded.training
    idx = torch.randint(0, 30, (2, 8))
    with torch.no_grad():
        torch.testing.assert_close(loaded(idx), model.eval()(idx), rtol=0, atol=0)
    assert loaded.out_head.weight is loaded.tok_emb.weight  # tying survives


def test_compiled_model_is_saved_without_prefix(tmp_path):
    model = GPTModel(TINY)
    save_checkpoint(tmp_path / "c.pt", torch.compile(model, backend="eager"))
    assert load_checkpoint(tmp_path / "c.pt")["model"].keys() == model.state_dict().keys()


def test_load_refuses_non_allowlisted_objects(tmp_path):
    model = GPTModel(TINY)
    bad = {"model": model.state_dict(), "config": TINY.to_dict(), "extra": NotAllowed()}
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_model(tmp_path / "bad.pt")


def test_load_model_needs_config(tmp_path):
    save_checkpoint(tmp_path / "n.pt", torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="no model config"):
        load_model(tmp_path / "n.pt")
