"""Bad input to decoding: temperatures that are NaN, inf, negative or so small that logits / T
overflows; malformed top_k / top_p / eos_id / context_size; NaN logits. Each gets one sentence
(or, for a tiny temperature, the greedy answer) instead of a crash inside torch.multinomial or a
silent token 0."""

import pytest
import torch

from ch04_gpt import GPTConfig, GPTModel
from ch05_pretrain.generate import apply_temperature, generate, sample_next_token, top_k_filter, top_p_filter

VOCAB, CTX = 61, 16


@pytest.fixture(scope="module")
def model() -> GPTModel:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=VOCAB, context_length=CTX, emb_dim=16, n_heads=2, n_layers=2,
                    drop_rate=0.0, tie_weights=False)
    m = GPTModel(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(8.0)  # a varied greedy continuation, not one token repeated
    return m


PROMPT = torch.tensor([[3, 14, 15, 9]])


# --- temperature -----------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0, "0.7"], ids=["nan", "inf", "negative", "str"])
def test_bad_temperature_is_one_sentence(model, bad):
    message = rf"temperature={bad!r}; use a finite number >= 0 \(0 means greedy\)"
    with pytest.raises(ValueError, match=message):
        generate(model, PROMPT, 3, temperature=bad)
    with pytest.raises(ValueError, match=message):
        sample_next_token(torch.zeros(1, 5), temperature=bad)


@pytest.mark.parametrize("bad", [0.0, float("nan"), float("inf")])
def test_apply_temperature_names_the_value(bad):
    with pytest.raises(ValueError, match=rf"temperature={bad!r}; use a finite number > 0 \(temperature 0 means greedy"):
        apply_temperature(torch.zeros(1, 3), bad)


@pytest.mark.parametrize("t", [1e-38, 1e-45, 1e-50, 5e-324])
def test_tiny_temperature_is_greedy(t):
    # logits / 1e-45 overflowed to inf, inf - inf = NaN, and multinomial raised.
    logits = torch.tensor([[0.5, 3.0, 2.9999, -1.0], [10.0, -5.0, 9.0, 0.0]])
    draws = sample_next_token(logits.repeat(50, 1), temperature=t, generator=torch.Generator().manual_seed(0))
    assert torch.equal(draws[:, 0], torch.tensor([1, 0]).repeat(50))


def test_tiny_temperature_shares_exact_ties():
    logits = torch.tensor([[1.0, 4.0, 4.0, 2.0]]).expand(400, 4)
    draws = sample_next_token(logits, temperature=1e-45, generator=torch.Generator().manual_seed(0))
    assert set(draws[:, 0].tolist()) == {1, 2}


def test_tiny_temperature_generation_equals_greedy(model):
    greedy = generate(model, PROMPT, 12)
    tiny = generate(model, PROMPT, 12, temperature=1e-45, generator=torch.Generator().manual_seed(0))
    assert torch.equal(tiny, greedy)


def test_huge_temperature_with_top_k_stays_in_the_k():
    # A temperature past float32's range used to turn the -inf of filtered tokens into NaN.
    logits = torch.randn(1, 20, generator=torch.Generator().manual_seed(0)).expand(500, 20)
    draws = sample_next_token(logits, temperature=1e300, top_k=4, generator=torch.Generator().manual_seed(1))
    assert set(draws[:, 0].tolist()) == set(logits[0].topk(4).indices.tolist())


# --- top_k, top_p, and the other arguments of generate ----------------------------------------

@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_top_k(model, bad):
    with pytest.raises(ValueError, match=rf"top_k={bad!r}; use an integer >= 1"):
        generate(model, PROMPT, 2, temperature=1.0, top_k=bad)
    with pytest.raises(ValueError, match=rf"k={bad!r}; use an integer >= 1"):
        top_k_filter(torch.zeros(1, 5), bad)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan")])
def test_bad_top_p(model, bad):
    with pytest.raises(ValueError, match=rf"top_p={bad!r}; use a number in \(0, 1\]"):
        generate(model, PROMPT, 2, temperature=1.0, top_p=bad)
    with pytest.raises(ValueError, match=rf"p={bad!r}; use a number in \(0, 1\]"):
        top_p_filter(torch.zeros(1, 5), bad)


@pytest.mark.parametrize("bad", [-1, VOCAB, 2.0])
def test_bad_eos_id(model, bad):
    # eos_id=VOCAB can never be sampled, so it used to stop nothing, silently.
    with pytest.raises(ValueError, match=rf"eos_id={bad!r}; use a token id in \[0, {VOCAB - 1}\]"):
        generate(model, PROMPT, 2, eos_id=bad)


def test_context_size_zero_is_refused_not_replaced(model):
    with pytest.raises(ValueError, match=rf"context_size=0; use an integer in \[1, {CTX}\]"):
        generate(model, PROMPT, 2, context_size=0)


def test_max_new_tokens_must_be_an_int(model):
    with pytest.raises(ValueError, match="max_new_tokens=2.5; use an integer >= 0"):
        generate(model, PROMPT, 2.5)


def test_prompt_without_batch_dimension(model):
    with pytest.raises(ValueError, match=r"got \(4,\) torch.int64; add a batch dimension with idx.unsqueeze\(0\)"):
        generate(model, PROMPT[0], 2)


@pytest.mark.parametrize("use_cache", [True, False])
def test_prompt_id_out_of_range(model, use_cache):
    with pytest.raises(ValueError, match=rf"idx\[0, 1\] = {VOCAB} .*\[0, {VOCAB - 1}\]"):
        generate(model, torch.tensor([[1, VOCAB, 2]]), 2, use_cache=use_cache)


# --- NaN logits ----------------------------------------------------------------------------------

@pytest.mark.parametrize("temperature", [0.0, 1.0], ids=["greedy", "sampling"])
def test_sample_next_token_refuses_nan_rows(temperature):
    logits = torch.zeros(3, 5)
    logits[1] = float("nan")  # argmax of an all-NaN row was token 0, silently
    with pytest.raises(ValueError, match="logits row 1 is without a finite maximum"):
        sample_next_token(logits, temperature)
    logits[1] = float("-inf")  # every token impossible
    with pytest.raises(ValueError, match="logits row 1"):
        sample_next_token(logits, temperature)
    logits[1, 2] = 0.0  # -inf elsewhere only means probability 0: fine
    assert sample_next_token(logits, temperature)[1, 0] == 2


@pytest.mark.parametrize("temperature", [0.0, 1.0], ids=["greedy", "sampling"])
@pytest.mark.parametrize("use_cache", [True, False], ids=["cached", "uncached"])
def test_generate_names_the_step_with_nan_logits(model, use_cache, temperature):
    # Make one token poison the model: once it is in the window, the logits are NaN.
    out = generate(model, PROMPT, 6, temperature=temperature, generator=torch.Generator().manual_seed(0))
    new = out[0, PROMPT.size(1):].tolist()
    step = next(i for i, t in enumerate(new) if t not in PROMPT[0].tolist() and t not in new[:i])
    broken = GPTModel(model.cfg).eval()
    broken.load_state_dict(model.state_dict())
    with torch.no_grad():
        broken.tok_emb.weight[new[step]] = float("nan")
    with pytest.raises(ValueError, match=rf"the model produced logits .* at step {step + 1} in row 0"):
        generate(broken, PROMPT, 6, temperature=temperature, use_cache=use_cache,
                 generator=torch.Generator().manual_seed(0))
