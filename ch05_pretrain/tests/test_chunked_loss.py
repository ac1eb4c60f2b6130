"""chunked_lm_loss / linear_cross_entropy: the same loss and gradients as lm_loss, without (N, V) logits."""

import dataclasses
import functools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from torch.utils._python_dispatch import TorchDispatchMode

from ch04_gpt import GPTConfig, GPTModel
from ch05_pretrain import NoTargetsError, chunked_lm_loss, linear_cross_entropy, lm_loss, train

V, T = 50, 8
TINY = GPTConfig(vocab_size=V, context_length=T, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)


def make_model(tie_weights=False, fast=False, seed=0):
    torch.manual_seed(seed)
    return GPTModel(TINY.replace(tie_weights=tie_weights)).set_fast_path(fast)


def make_batch(B=3, seed=1, ignored=0):
    """(inputs, targets) (B, T); the first `ignored` targets of every row are -100."""
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(0, V, (B, T + 1), generator=g)
    targets = seq[:, 1:].clone()
    targets[:, :ignored] = -100
    return seq[:, :-1], targets


def loss_and_grads(model, loss_fn, batch):
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model, batch)
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def assert_same_as_lm_loss(model, batch, chunk_size):
    loss_ref, grads_ref = loss_and_grads(model, lm_loss, batch)
    loss, grads = loss_and_grads(model, functools.partial(chunked_lm_loss, chunk_size=chunk_size), batch)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-6)
    assert grads.keys() == grads_ref.keys()  # every parameter got a gradient
    for name in grads:
        torch.testing.assert_close(grads[name], grads_ref[name], rtol=1e-5, atol=1e-6, msg=name)


# 24 positions, 12 or 18 of them counted: chunks that divide N, chunks that do not, one row per
# chunk, and a chunk larger than N.
@pytest.mark.parametrize("chunk_size", [1, 5, 7, 8, 24, 1000])
@pytest.mark.parametrize("ignored", [0, 2, 4])
@pytest.mark.parametrize("tie_weights", [False, True])
def test_loss_and_all_gradients_equal_lm_loss(chunk_size, ignored, tie_weights):
    assert_same_as_lm_loss(make_model(tie_weights), make_batch(ignored=ignored), chunk_size)


@pytest.mark.parametrize("chunk_size", [5, 24])
@pytest.mark.parametrize("layout", ["rows", "columns"])
def test_both_logit_layouts_equal_lm_loss(monkeypatch, layout, chunk_size):
    # The CPU computes each chunk's logits as (V, n) columns; other devices as (n, V) rows.
    # Both are checked here, on the CPU, with and without a last chunk shorter than the others.
    devices = ("cpu",) if layout == "columns" else ()
    monkeypatch.setattr("ch05_pretrain.chunked_loss.COLUMN_LAYOUT_DEVICES", devices)
    for tie_weights in (False, True):
        assert_same_as_lm_loss(make_model(tie_weights), make_batch(ignored=2), chunk_size)
    hidden = torch.randn(3, 7, 16, generator=torch.Generator().manual_seed(2))
    weight = torch.randn(V, 16, generator=torch.Generator().manual_seed(3))
    targets = make_batch(B=3)[1][:, :7]
    with torch.no_grad():  # the evaluation branch, which has no autograd.Function around it
        got = linear_cross_entropy(hidden, weight, targets, chunk_size=chunk_size)
    torch.testing.assert_close(got, F.cross_entropy((hidden @ weight.T).flatten(0, 1), targets.flatten()))


def test_frozen_head_gets_no_gradient_and_the_rest_equal_lm_loss():
    model = make_model(tie_weights=False)
    model.out_head.requires_grad_(False)  # as LoRA leaves it
    batch = make_batch(ignored=2)
    loss_ref, grads_ref = loss_and_grads(model, lm_loss, batch)
    loss, grads = loss_and_grads(model, functools.partial(chunked_lm_loss, chunk_size=5), batch)
    assert model.out_head.weight.grad is None and "out_head.weight" not in grads_ref
    torch.testing.assert_close(loss, loss_ref)
    assert grads.keys() == grads_ref.keys()
    for name in grads_ref:
        torch.testing.assert_close(grads[name], grads_ref[name], rtol=1e-5, atol=1e-6, msg=name)
    # No (V, C) gradient buffer is made for the frozen weight: the largest tensor is a chunk of logits.
    hidden = torch.randn(12, 64, requires_grad=True)
    weight = torch.randn(500, 64)  # (V, C) = 32,000 values, frozen
    with LargestTensor() as seen:
        linear_cross_entropy(hidden, weight, torch.randint(0, 500, (12,)), chunk_size=4).backward()
    assert hidden.grad is not None and seen.largest == 4 * 500


def test_fast_path_and_scattered_ignored_targets():
    inputs, targets = make_batch(B=4, seed=5)
    targets[torch.rand(targets.shape, generator=torch.Generator().manual_seed(0)) < 0.4] = -100
    assert_same_as_lm_loss(make_model(tie_weights=True, fast=True), (inputs, targets), chunk_size=3)


def test_head_with_bias_equals_cross_entropy():
    torch.manual_seed(0)
    hidden = torch.randn(2, 5, 6, requires_grad=True)
    head = nn.Linear(6, V)  # with bias, unlike GPT-2's head
    targets = torch.randint(0, V, (2, 5))
    targets[1, 3] = -100
    ref = F.cross_entropy(head(hidden).flatten(0, 1), targets.flatten(), ignore_index=-100)
    ref_grads = torch.autograd.grad(ref, [hidden, head.weight, head.bias])
    loss = linear_cross_entropy(hidden, head.weight, targets, head.bias, chunk_size=4)
    grads = torch.autograd.grad(loss, [hidden, head.weight, head.bias])
    torch.testing.assert_close(loss, ref)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)


def test_scaled_loss_scales_gradients():
    # train divides the loss by the accumulation steps before backward: grad_output != 1.
    model = make_model()
    batch = make_batch()
    _, grads = loss_and_grads(model, chunked_lm_loss, batch)
    _, grads_scaled = loss_and_grads(model, lambda m, b: chunked_lm_loss(m, b) * 0.25, batch)
    for name in grads:
        torch.testing.assert_close(grads_scaled[name], grads[name] * 0.25)


def test_no_grad_gives_the_loss_only():
    model = make_model(tie_weights=True)
    batch = make_batch(ignored=3)
    with torch.no_grad():
        loss = chunked_lm_loss(model, batch, chunk_size=5)
        ref = lm_loss(model, batch)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)


def test_all_targets_ignored_raises_before_the_forward_pass():
    model = make_model()
    calls = []
    model.register_forward_pre_hook(lambda *a: calls.append(1))
    inputs, targets = make_batch()
    with pytest.raises(NoTargetsError, match="no counted targets"):
        chunked_lm_loss(model, (inputs, torch.full_like(targets, -100)))
    assert calls == []


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, None, "64"])
def test_bad_chunk_size_is_one_sentence(bad):
    with pytest.raises(ValueError, match=r"chunk_size=.*; use an integer >= 1"):
        chunked_lm_loss(make_model(), make_batch(), chunk_size=bad)


def test_target_outside_the_vocabulary_is_refused():
    inputs, targets = make_batch()
    targets[0, 0] = V
    with pytest.raises(ValueError, match=rf"target {V} is not a class.*\[0, {V - 1}\]"):
        chunked_lm_loss(make_model(), (inputs, targets))


def test_wrappers_compile_unwrapped_ddp_refused():
    model = make_model()
    compiled = torch.compile(model, backend="eager")
    batch = make_batch()
    torch.testing.assert_close(chunked_lm_loss(compiled, batch), chunked_lm_loss(model, batch))
    with pytest.raises(ValueError, match="DataParallel.*use lm_loss"):
        chunked_lm_loss(nn.DataParallel(model), batch)
    with pytest.raises(TypeError, match="hidden_states"):
        chunked_lm_loss(nn.Linear(2, 2), batch)


def test_second_backward_is_refused():
    loss = chunked_lm_loss(make_model(), make_batch())
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()


def test_bf16_autocast_is_close_and_gradients_stay_float32():
    model = make_model(tie_weights=True)
    batch = make_batch(ignored=2)
    ref = lm_loss(model, batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = chunked_lm_loss(model, batch, chunk_size=5)
    loss.backward()
    assert loss.dtype == torch.float32
    assert abs(loss.item() - ref.item()) < 0.05  # bf16 matmuls: about 3 significant digits
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())


class LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an operation returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_no_tensor_larger_than_a_chunk_of_logits():
    # N = 128 positions, V = 500 classes, C = 8: the full logits have N*V = 64,000 elements;
    # the head's weight V*C = 4,000; a chunk of 16 rows of logits 8,000.
    torch.manual_seed(0)
    N, C, Vb, chunk = 128, 8, 500, 16
    hidden = torch.randn(N, C, requires_grad=True)
    weight = torch.randn(Vb, C, requires_grad=True)
    targets = torch.randint(0, Vb, (N,))
    with LargestTensor() as seen_ref:
        F.cross_entropy(hidden @ weight.T, targets).backward()
    with LargestTensor() as seen:
        linear_cross_entropy(hidden, weight, targets, chunk_size=chunk).backward()
    assert seen_ref.largest == N * Vb  # the proxy sees the (N, V) logits where they exist
    assert seen.largest == chunk * Vb


def test_train_history_equals_lm_loss():
    g = torch.Generator().manual_seed(0)
    seq = torch.randint(0, V, (12, T + 1), generator=g)
    targets = seq[:, 1:].clone()
    targets[::3, :4] = -100  # some rows with masked prompts
    data = TensorDataset(seq[:, :-1], targets)
    histories = []
    for loss_fn in (lm_loss, functools.partial(chunked_lm_loss, chunk_size=7)):
        model = make_model(tie_weights=True, fast=True)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        loader = DataLoader(data, batch_size=4, shuffle=False)
        histories.append(train(model, opt, loader, loss_fn, val_loader=loader, epochs=3,
                               eval_every=1, progress=False, seed=0))
    ref, ours = histories
    assert ours.step == ref.step == list(range(1, 10))
    for key in ("train_loss", "val_loss"):
        torch.testing.assert_close(torch.tensor(ours[key]), torch.tensor(ref[key]), rtol=1e-4, atol=1e-5)


def test_fallback_pretraining_with_chunked_loss_equals_lm_loss():
    # train_fallback trains with chunked_lm_loss; the fast recipe, shortened, gives lm_loss's history.
    from ch05_pretrain import fallback

    recipe = dataclasses.replace(fallback.FAST, max_steps=6, eval_every=3, text_chars=12_000)
    ref = fallback.train_fallback(recipe, torch.device("cpu"), verbose=False, loss_fn=lm_loss)[1]["history"]
    ours = fallback.train_fallback(recipe, torch.device("cpu"), verbose=False)[1]["history"]
    assert ours["step"] == ref["step"] == [3, 6]
    for key in ("train_loss", "val_loss"):
        torch.testing.assert_close(torch.tensor(ours[key]), torch.tensor(ref[key]), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_bf16_autocast_close_to_lm_loss():
    model = make_model(tie_weights=True, fast=True).cuda()
    batch = tuple(t.cuda() for t in make_batch(B=8, ignored=2))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        ref, grads_ref = loss_and_grads(model, lm_loss, batch)
        loss, grads = loss_and_grads(model, functools.partial(chunked_lm_loss, chunk_size=5), batch)
    assert abs(loss.item() - ref.item()) < 0.05
    for name in grads:
        assert grads[name].dtype == torch.float32
        torch.testing.assert_close(grads[name], grads_ref[name], rtol=0.1, atol=2e-3, msg=name)
