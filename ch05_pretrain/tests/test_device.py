"""Device helper: override order, autocast no-op on CPU, unwrap, moving nested batches."""

import contextlib
from collections import namedtuple

import pytest
import torch
import torch.nn as nn

from ch05_pretrain.device import autocast, get_device, maybe_compile, move_to_device, unwrap


def test_get_device_honours_argument_and_env(monkeypatch, capsys):
    assert get_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("DEVICE", "cpu")
    assert get_device() == torch.device("cpu")
    assert get_device(verbose=False) == torch.device("cpu")
    out = capsys.readouterr().out
    assert out.count("Using device: cpu") <= 1  # printed once per process


def test_get_device_auto_picks_an_available_device(monkeypatch):
    monkeypatch.delenv("DEVICE", raising=False)
    dev = get_device(verbose=False)
    expected = "cuda" if torch.cuda.is_available() else None
    assert dev.type in ("cuda", "mps", "cpu")
    if expected:
        assert dev.type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_get_device_missing_cuda_raises():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        get_device("cuda", verbose=False)


def test_autocast_is_noop_on_cpu():
    ctx = autocast("cpu", torch.bfloat16)
    assert isinstance(ctx, contextlib.nullcontext)
    a = torch.randn(4, 4)
    with ctx:
        assert (a @ a).dtype == torch.float32
    assert isinstance(autocast("cuda", None), contextlib.nullcontext)


def test_unwrap_and_maybe_compile():
    model = nn.Linear(2, 2)
    assert maybe_compile(model) is model
    compiled = torch.compile(model, backend="eager")
    assert unwrap(compiled) is model
    assert unwrap(nn.DataParallel(model)) is model
    assert unwrap(model) is model


def test_move_to_device_nested():
    Pair = namedtuple("Pair", "x y")
    batch = {"a": (torch.ones(1), [torch.zeros(2)]), "b": Pair(torch.ones(1), 3), "c": "text"}
    moved = move_to_device(batch, "cpu")
    assert isinstance(moved["a"], tuple) and isinstance(moved["a"][1], list)
    assert isinstance(moved["b"], Pair) and moved["b"].y == 3 and moved["c"] == "text"
    assert torch.equal(moved["a"][1][0], torch.zeros(2))


def test_fast_adamw_matches_default_adamw():
    from ch05_pretrain import fast_adamw

    torch.manual_seed(0)
    a = torch.nn.Linear(8, 4)
    b = torch.nn.Linear(8, 4)
    b.load_state_dict(a.state_dict())
    opt_a = torch.optim.AdamW(a.parameters(), lr=1e-2, weight_decay=0.1)
    opt_b = fast_adamw(b.parameters(), lr=1e-2, weight_decay=0.1)
    assert opt_b.defaults.get("fused") or opt_b.defaults.get("foreach")
    x = torch.randn(16, 8)
    for _ in range(3):
        for m, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            m(x).pow(2).mean().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


@pytest.mark.parametrize("name", ["meta", "xpu", "xpu:0"])
def test_get_device_refuses_devices_this_code_does_not_run_on(name, monkeypatch):
    with pytest.raises(RuntimeError, match=rf"device='{name}' is a .* device.*use cuda, mps or cpu"):
        get_device(name, verbose=False)
    monkeypatch.setenv("DEVICE", name)
    with pytest.raises(RuntimeError, match=rf"DEVICE='{name}'"):
        get_device(verbose=False)
