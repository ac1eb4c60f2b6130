"""LoRA: exact at zero, only the adapters learn, frozen weights stay put, merged == unmerged."""

import copy

import pytest
import torch
import torch.nn as nn

from ch04_gpt import GPTConfig, GPTModel
from ch06_classify.classifier import classification_loss, count_trainable, to_classifier
from ch06_classify.lora import LoRALinear, add_lora, merge_lora

V, T, C = 64, 16, 32
TINY = GPTConfig(vocab_size=V, context_length=T, emb_dim=C, n_heads=4, n_layers=2, drop_rate=0.0)


def make_model(seed=0):
    torch.manual_seed(seed)
    return GPTModel(TINY).eval()


def a_batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(0, V, (4, T), generator=g), "labels": torch.tensor([0, 1, 1, 0]),
            "lengths": torch.full((4,), T)}


def test_lora_linear_starts_equal_to_the_wrapped_layer():
    torch.manual_seed(0)
    linear = nn.Linear(8, 5)
    lora = LoRALinear(linear, rank=3, alpha=6)
    x = torch.randn(2, 4, 8)
    assert torch.equal(lora(x), linear(x))
    assert lora.A.shape == (3, 8) and lora.B.shape == (5, 3) and lora.scaling == 2.0
    assert torch.count_nonzero(lora.B) == 0 and torch.count_nonzero(lora.A) > 0
    assert not linear.weight.requires_grad and lora.A.requires_grad and lora.B.requires_grad


def test_lora_linear_computes_w_plus_scaled_ba():
    torch.manual_seed(0)
    linear = nn.Linear(8, 5)
    lora = LoRALinear(linear, rank=2, alpha=3)
    with torch.no_grad():
        lora.B.normal_()
    x = torch.randn(7, 8)
    expected = x @ (linear.weight + 1.5 * lora.B @ lora.A).T + linear.bias
    torch.testing.assert_close(lora(x), expected)
    torch.testing.assert_close(lora.weight, linear.weight + 1.5 * lora.B @ lora.A)


def test_add_lora_at_zero_equals_the_base_model_exactly():
    base = make_model()
    model = add_lora(copy.deepcopy(base), rank=4, alpha=8)
    idx = torch.randint(0, V, (3, T))
    with torch.no_grad():
        assert torch.equal(model(idx), base(idx))


def test_add_lora_wraps_every_block_linear_and_trains_only_the_adapters():
    model = add_lora(make_model(), rank=4, alpha=8)
    wrapped = [name for name, m in model.named_modules() if isinstance(m, LoRALinear)]
    # Per block: W_query, W_key, W_value, out_proj, fc1, fc2.
    assert len(wrapped) == 6 * TINY.n_layers
    assert not any(isinstance(m, nn.Linear) and not name.endswith(".linear")
                   for name, m in model.blocks.named_modules())
    assert isinstance(model.out_head, nn.Linear)  # outside the blocks: not wrapped
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.endswith((".A", ".B")) for name in trainable)
    # rank * (in + out) per layer: 4 square C x C projections, then C -> 4C and 4C -> C.
    per_block = 4 * 4 * (C + C) + 2 * 4 * (C + 4 * C)
    assert count_trainable(model) == TINY.n_layers * per_block


def test_only_lora_parameters_get_gradients_and_frozen_weights_do_not_move():
    model = to_classifier(make_model(), trainable="all")
    add_lora(model, rank=4, alpha=8)
    model.out_head.requires_grad_(True)  # the classifier's new head learns too
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    # AdamW over ALL parameters, with weight decay: a frozen weight must still not change.
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    model.train()
    classification_loss(model, a_batch()).backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {name for name in before
                         if name.endswith((".A", ".B")) or name.startswith("out_head")}
    opt.step()
    for name, p in model.named_parameters():
        changed = not torch.equal(p, before[name])
        assert changed == (name in with_grad), name
    assert any(name.endswith(".B") for name in with_grad)  # B left zero


def test_fused_qkv_fast_path_sees_the_adapted_weights():
    model = add_lora(make_model(), rank=4, alpha=8)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".B"):
                p.normal_(std=0.1)
    idx = torch.randint(0, V, (2, T))
    with torch.no_grad():
        readable = model(idx)
        fast = model.set_fast_path(True, fused_qkv=True)(idx)
    torch.testing.assert_close(fast, readable, rtol=1e-5, atol=1e-5)


def test_merge_lora_keeps_the_outputs_and_removes_the_adapters():
    model = add_lora(make_model(), rank=4, alpha=8)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".B"):
                p.normal_(std=0.1)
    idx = torch.randint(0, V, (2, T))
    with torch.no_grad():
        before = model(idx)
        merge_lora(model)
        after = model(idx)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs, error, words", [
    ({"rank": 0}, ValueError, "rank=0; use an integer >= 1"),
    ({"rank": 2.5}, ValueError, "rank=2.5"),
    ({"alpha": 0}, ValueError, "alpha=0; use a finite number > 0"),
    ({"alpha": float("nan")}, ValueError, "alpha=nan"),
])
def test_lora_rejects_bad_arguments(kwargs, error, words):
    with pytest.raises(error, match=words):
        LoRALinear(nn.Linear(4, 4), **kwargs)
    with pytest.raises(error, match=words):
        add_lora(make_model(), **kwargs)


def test_lora_rejects_wrong_modules_and_a_second_call():
    with pytest.raises(TypeError, match="wraps an nn.Linear"):
        LoRALinear(nn.Conv1d(4, 4, 1))
    with pytest.raises(ValueError, match="without .blocks"):
        add_lora(nn.Linear(4, 4))
    model = add_lora(make_model())
    with pytest.raises(ValueError, match="called twice"):
        add_lora(model)
