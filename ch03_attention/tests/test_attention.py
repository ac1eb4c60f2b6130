"""Tests for ch03_attention: shapes, causality, readable == fast path, mask buffer, KV cache, dropout."""

import copy

import pytest
import torch

from ch03_attention import KVCache, MultiHeadAttention

CTX = 8  # context_length of the tiny test modules


def make_mha(d_in=6, d_out=8, num_heads=2, qkv_bias=False, dropout=0.0, seed=0) -> MultiHeadAttention:
    torch.manual_seed(seed)
    return MultiHeadAttention(d_in, d_out, CTX, dropout, num_heads, qkv_bias=qkv_bias).eval()


def set_fast(m: MultiHeadAttention, sdpa: bool, fused: bool) -> MultiHeadAttention:
    m.use_sdpa, m.fused_qkv = sdpa, fused
    return m


PATHS = [(False, False), (True, False), (False, True), (True, True)]  # (use_sdpa, fused_qkv)


@pytest.mark.parametrize("T", [1, 5, CTX])
def test_output_shape(T):
    m = make_mha()
    x = torch.randn(3, T, 6)
    assert m(x).shape == (3, T, 8)


def test_longer_than_context_raises():
    m = make_mha()
    with pytest.raises(ValueError, match="context_length"):
        m(torch.randn(1, CTX + 1, 6))


def test_d_out_not_divisible_by_heads_raises():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(6, 10, CTX, 0.0, num_heads=3)


@pytest.mark.parametrize("sdpa,fused", PATHS)
def test_causal_future_tokens_do_not_change_past(sdpa, fused):
    m = set_fast(make_mha(), sdpa, fused)
    torch.manual_seed(1)
    x = torch.randn(2, CTX, 6)
    x2 = x.clone()
    x2[:, 5:] = torch.randn(2, CTX - 5, 6)  # change tokens 5.. only
    y, y2 = m(x), m(x2)
    torch.testing.assert_close(y[:, :5], y2[:, :5], rtol=0, atol=0)
    assert not torch.allclose(y[:, 5:], y2[:, 5:])  # the changed tokens' outputs do change


@pytest.mark.parametrize(
    "d_in,d_out,num_heads,T",
    [(6, 8, 2, 7), (5, 9, 3, 8), (4, 15, 5, 1), (7, 7, 7, 6), (8, 16, 1, 8)],
)
@pytest.mark.parametrize("qkv_bias", [False, True])
def test_readable_equals_fast_paths_outputs_and_grads(d_in, d_out, num_heads, T, qkv_bias):
    ref = make_mha(d_in, d_out, num_heads, qkv_bias)
    torch.manual_seed(2)
    x = torch.randn(2, T, d_in)
    y_ref = ref(x)
    y_ref.square().sum().backward()
    grads_ref = {n: p.grad for n, p in ref.named_parameters()}

    for sdpa, fused in PATHS[1:]:
        fast = set_fast(copy.deepcopy(ref), sdpa, fused)
        fast.zero_grad()
        y = fast(x)
        assert (y - y_ref).abs().max().item() < 1e-6, (sdpa, fused)
        y.square().sum().backward()
        for n, p in fast.named_parameters():
            torch.testing.assert_close(p.grad, grads_ref[n], rtol=1e-5, atol=1e-6, msg=f"{n} {(sdpa, fused)}")


def test_mask_is_non_persistent_buffer_and_moves_with_to():
    m = make_mha()
    assert "mask" in dict(m.named_buffers())
    assert not any("mask" in k for k in m.state_dict())
    assert "mask" not in dict(m.named_parameters())
    m = m.to(torch.float64)
    assert m.W_query.weight.dtype == torch.float64
    assert m.mask.dtype == torch.bool  # .to(dtype) casts floats only; the bool mask stays a mask
    m = m.to("meta")
    assert m.mask.device.type == "meta" and m.W_query.weight.device.type == "meta"
    # A state_dict without the mask loads strictly into a fresh module.
    fresh = make_mha(seed=3)
    fresh.load_state_dict(make_mha().state_dict(), strict=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_mask_moves_to_cuda():
    m = make_mha().to("cuda")
    assert m.mask.is_cuda


@pytest.mark.parametrize("sdpa,fused", PATHS)
@pytest.mark.parametrize("chunks", [[1] * CTX, [3, 1, 4], [5, 3]])
def test_kv_cache_chunks_equal_full_forward(sdpa, fused, chunks):
    m = set_fast(make_mha(qkv_bias=True), sdpa, fused)
    torch.manual_seed(4)
    x = torch.randn(2, sum(chunks), 6)
    full = m(x)
    cache = KVCache(max_len=CTX)
    outs, pos = [], 0
    for n in chunks:
        outs.append(m(x[:, pos : pos + n], kv_cache=cache))
        pos += n
    assert cache.length == sum(chunks)
    torch.testing.assert_close(torch.cat(outs, dim=1), full, rtol=1e-5, atol=1e-6)


def test_kv_cache_overflow_raises():
    cache = KVCache(max_len=4)
    k = torch.zeros(1, 2, 3, 5)
    cache.update(k, k)
    with pytest.raises(ValueError, match="full"):
        cache.update(k, k)
    assert cache.length == 3  # the failed update stored nothing


def test_forward_past_context_with_cache_raises():
    m = make_mha()
    cache = KVCache(max_len=CTX)
    m(torch.randn(1, CTX - 1, 6), kv_cache=cache)
    with pytest.raises(ValueError, match="context_length"):
        m(torch.randn(1, 2, 6), kv_cache=cache)


@pytest.mark.parametrize("sdpa", [False, True])
def test_dropout_only_in_train_mode(sdpa):
    m = make_mha(dropout=0.5)
    m.use_sdpa = sdpa
    x = torch.randn(2, CTX, 6)
    m.eval()
    torch.testing.assert_close(m(x), m(x), rtol=0, atol=0)
    no_drop = m(x)
    m.train()
    torch.manual_seed(5)
    a = m(x)
    b = m(x)
    assert not torch.allclose(a, b)  # fresh masks each call
    assert not torch.allclose(a, no_drop)
