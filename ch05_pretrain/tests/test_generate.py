"""Tests for ch05_pretrain.generate: greedy == chapter 4, cached == uncached (also past the
context window), reproducibility, batching, the sampling filters, eos, train/eval mode."""

import copy
import math

import pytest
import torch

from ch04_gpt import GPTConfig, GPTModel, generate_text_simple
from ch05_pretrain.generate import (
    apply_temperature,
    generate,
    sample_next_token,
    top_k_filter,
    top_p_filter,
)

VOCAB, CTX = 97, 32


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny matmuls are dominated by thread hand-offs; one thread is faster on a busy machine.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_model(seed: int = 0, drop_rate: float = 0.0, **kw) -> GPTModel:
    """A tiny random GPT whose weights are scaled up, so greedy decoding does not settle into
    repeating one token and a position mix-up in the cache would change the output."""
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=VOCAB, context_length=CTX, emb_dim=32, n_heads=4, n_layers=2,
                    drop_rate=drop_rate, **kw)
    model = GPTModel(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(8.0)
    return model.eval()


def prompt(B: int, T: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (B, T), generator=torch.Generator().manual_seed(seed))


def test_greedy_equals_generate_text_simple():
    model, idx = make_model(), prompt(2, 5)
    expected = generate_text_simple(model, idx, max_new_tokens=20, context_size=CTX)
    for use_cache in (True, False):
        assert torch.equal(generate(model, idx, 20, use_cache=use_cache), expected)


@pytest.mark.parametrize("T", [1, 5, CTX - 1, CTX, CTX + 7], ids=lambda t: f"prompt{t}")
def test_cached_equals_uncached_past_the_window(T):
    # 100 new tokens from a 32-token window: the window slides for most of them.
    model, idx = make_model(seed=T), prompt(1, T, seed=T)
    cached = generate(model, idx, 100)
    uncached = generate(model, idx, 100, use_cache=False)
    assert cached.shape == (1, T + 100)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached, generate_text_simple(model, idx, 100, CTX))
    assert len(set(cached[0, T:].tolist())) > 5  # a varied continuation, not one token repeated


def test_smaller_context_size_than_the_model():
    model, idx = make_model(), prompt(2, 3)
    cached = generate(model, idx, 40, context_size=8)
    assert torch.equal(cached, generate(model, idx, 40, context_size=8, use_cache=False))
    assert torch.equal(cached, generate_text_simple(model, idx, 40, 8))


def test_fast_path_cached_equals_readable_uncached():
    model, idx = make_model(seed=3), prompt(2, 6, seed=3)
    readable = generate(model, idx, 60, use_cache=False)
    fast = copy.deepcopy(model).set_fast_path(True)
    assert torch.equal(generate(fast, idx, 60), readable)


def test_same_prompt_twice_and_no_state_between_calls():
    model = make_model()
    a, b = prompt(1, 6, seed=1), prompt(1, 9, seed=2)
    first = generate(model, a, 30)
    generate(model, b, 30)  # another prompt in between must leave nothing behind
    assert torch.equal(generate(model, a, 30), first)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    s1 = generate(model, a, 30, temperature=1.0, generator=g1)
    s2 = generate(model, a, 30, temperature=1.0, generator=g2)
    assert torch.equal(s1, s2)


def test_batched_prompts_equal_per_row_generation():
    model, idx = make_model(seed=4), prompt(3, 7, seed=4)
    batched = generate(model, idx, 50)
    for i in range(3):
        assert torch.equal(batched[i : i + 1], generate(model, idx[i : i + 1], 50))


def test_sampling_cached_equals_uncached_with_same_seed():
    model, idx = make_model(seed=5), prompt(2, 4, seed=5)
    kw = dict(temperature=0.8, top_k=20, top_p=0.9)
    cached = generate(model, idx, 60, generator=torch.Generator().manual_seed(0), **kw)
    uncached = generate(model, idx, 60, use_cache=False, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(cached, uncached)


def test_train_mode_is_restored_and_dropout_is_off():
    model = make_model(drop_rate=0.5)
    idx = prompt(1, 5)
    expected = generate(model, idx, 20)  # eval mode
    model.train()
    assert torch.equal(generate(model, idx, 20), expected)  # dropout would change the tokens
    assert model.training
    model.eval()
    generate(model, idx, 1)
    assert not model.training


def test_eos_stops_and_pads_finished_rows():
    model, idx = make_model(seed=6), prompt(2, 4, seed=6)
    free = generate(model, idx, 30)  # no eos: the full 30 tokens
    T = idx.size(1)
    # Batch of one: stops right after the eos token, which is kept.
    eos = free[0, T + 3].item()
    first = (free[0, T:] == eos).nonzero()[0].item()  # eos may already occur earlier
    out = generate(model, idx[:1], 30, eos_id=eos)
    assert out.shape[1] == T + first + 1
    assert torch.equal(out, free[:1, : T + first + 1])
    # Batch of two: a row that finished is filled with eos until every row has finished.
    out2 = generate(model, idx, 30, eos_id=eos)
    ends = [T + row.index(eos) + 1 if eos in row else None for row in free[:, T:].tolist()]
    n = max(ends) if None not in ends else T + 30
    assert out2.shape == (2, n)
    for r, end in enumerate(ends):
        end = end or n
        assert torch.equal(out2[r, :end], free[r, :end])
        assert (out2[r, end:] == eos).all()


def test_zero_new_tokens_and_bad_arguments():
    model, idx = make_model(), prompt(1, 4)
    assert torch.equal(generate(model, idx, 0), idx)
    with pytest.raises(ValueError, match="context_size"):
        generate(model, idx, 1, context_size=CTX + 1)
    with pytest.raises(ValueError, match="int64"):
        generate(model, idx.float(), 1)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, idx, 1, temperature=1.0, top_p=0.0)
    with pytest.raises(ValueError, match="top_k"):
        generate(model, idx, 1, temperature=1.0, top_k=0)


# --- the sampling helpers ---------------------------------------------------------------


def test_temperature_scales_logits():
    logits = torch.tensor([[1.0, 2.0, 4.0]])
    assert torch.equal(apply_temperature(logits, 2.0), logits / 2)
    with pytest.raises(ValueError):
        apply_temperature(logits, 0.0)
    # A lower temperature concentrates probability on the most likely token.
    cold = torch.softmax(apply_temperature(logits, 0.5), -1)[0, 2]
    hot = torch.softmax(apply_temperature(logits, 2.0), -1)[0, 2]
    assert cold > torch.softmax(logits, -1)[0, 2] > hot


def test_top_k_filter_keeps_exactly_k():
    logits = torch.tensor([[0.1, 3.0, -1.0, 2.0, 2.0, 0.5]])
    out = top_k_filter(logits, 3)
    assert torch.isfinite(out).sum() == 3
    assert torch.isfinite(out[0, [1, 3, 4]]).all()  # 3.0 and both 2.0s
    assert torch.equal(top_k_filter(logits, 100), logits)  # k > V keeps everything


def test_top_k_sampling_never_leaves_the_k():
    torch.manual_seed(0)
    logits = torch.randn(1, 50).expand(4000, 50)  # one distribution, 4000 draws
    allowed = set(logits[0].topk(5).indices.tolist())
    draws = sample_next_token(logits, temperature=1.5, top_k=5, generator=torch.Generator().manual_seed(1))
    seen = set(draws[:, 0].tolist())
    assert seen <= allowed
    assert seen == allowed  # with 4000 draws every one of the 5 appears


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([0.10, 0.50, 0.15, 0.25])  # sorted: 0.50, 0.25, 0.15, 0.10 (ids 1, 3, 2, 0)
    logits = probs.log()[None]
    cases = {0.3: {1}, 0.6: {1, 3}, 0.8: {1, 3, 2}, 0.95: {0, 1, 2, 3}, 1.0: {0, 1, 2, 3}}
    for p, expected in cases.items():
        kept = set(torch.isfinite(top_p_filter(logits, p))[0].nonzero()[:, 0].tolist())
        assert kept == expected, p
    # Rows are filtered independently; the top token survives even a tiny p.
    two = torch.stack([probs.log(), probs.flip(0).log()])
    out = top_p_filter(two, 0.01)
    assert torch.isfinite(out).sum() == 2
    assert torch.isfinite(out[0, 1]) and torch.isfinite(out[1, 2])


def test_top_p_sampling_frequencies():
    # Keeping {0.5, 0.25} renormalises them to 2/3 and 1/3.
    logits = torch.tensor([0.10, 0.50, 0.15, 0.25]).log().expand(6000, 4)
    draws = sample_next_token(logits, temperature=1.0, top_p=0.6, generator=torch.Generator().manual_seed(2))
    counts = torch.bincount(draws[:, 0], minlength=4)
    assert counts[0] == counts[2] == 0
    assert math.isclose(counts[1].item() / 6000, 2 / 3, abs_tol=0.03)


def test_sampling_is_safe_with_huge_logits():
    logits = torch.tensor([[1e4, 1e4 - 1.0, -1e4]])
    draws = sample_next_token(logits.expand(500, 3), temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert set(draws[:, 0].tolist()) == {0, 1}
