"""Bad input to MultiHeadAttention and KVCache: one sentence naming the argument, never a
ZeroDivisionError, an unpacking error or a silently reused cache."""

import pytest
import torch

from ch03_attention import KVCache, MultiHeadAttention


@pytest.mark.parametrize(
    "kw,name",
    [
        (dict(num_heads=0), "num_heads=0"),
        (dict(num_heads=-2), "num_heads=-2"),
        (dict(num_heads=2.0), "num_heads=2.0"),
        (dict(d_out=0), "d_out=0"),
        (dict(d_in=-1), "d_in=-1"),
        (dict(context_length=0), "context_length=0"),
        (dict(dropout=1.0), "dropout=1.0"),
        (dict(dropout=float("nan")), "dropout=nan"),
    ],
)
def test_constructor_names_the_bad_argument(kw, name):
    args = dict(d_in=6, d_out=8, context_length=8, dropout=0.0, num_heads=2) | kw
    with pytest.raises(ValueError, match=name):
        MultiHeadAttention(**args)


def test_input_without_batch_dimension():
    m = MultiHeadAttention(6, 8, 8, 0.0, num_heads=2)
    with pytest.raises(ValueError, match=r"\(B, T, d_in\).*\(5, 6\).*unsqueeze\(0\)"):
        m(torch.randn(5, 6))


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_cache_max_len_must_be_positive_int(bad):
    with pytest.raises(ValueError, match=f"max_len={bad}"):
        KVCache(bad)


def test_cache_refuses_another_batch_size_and_reset_starts_over():
    cache = KVCache(max_len=8)
    cache.update(torch.zeros(2, 3, 4, 5), torch.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"B=2.*got B=3.*reset\(\)"):
        cache.update(torch.zeros(3, 3, 1, 5), torch.zeros(3, 3, 1, 5))
    with pytest.raises(ValueError, match="float64"):  # copying would convert it silently
        cache.update(torch.zeros(2, 3, 1, 5, dtype=torch.float64), torch.zeros(2, 3, 1, 5, dtype=torch.float64))
    assert cache.length == 4  # nothing stored by the refused updates
    cache.reset()
    assert cache.length == 0
    k, _ = cache.update(torch.ones(3, 3, 2, 5), torch.ones(3, 3, 2, 5))  # a new batch of 3
    assert k.shape == (3, 3, 2, 5)


def test_full_cache_says_what_to_do():
    cache = KVCache(max_len=4)
    cache.update(torch.zeros(1, 2, 3, 5), torch.zeros(1, 2, 3, 5))
    with pytest.raises(ValueError, match=r"full: 3 \+ 2 tokens > max_len 4; .*larger"):
        cache.update(torch.zeros(1, 2, 2, 5), torch.zeros(1, 2, 2, 5))
