"""GPTModel is GPT-2: with the same weights it gives Hugging Face's logits within 1e-5.

Every test builds a tiny, randomly initialised `transformers.GPT2LMHeadModel`, copies its
weights with `load_hf_gpt2_weights` (the mapping chapter 5 uses for the real checkpoint) and
compares outputs. The weights are perturbed first, so that LayerNorm scales and all biases
(zero or one at init) differ from their defaults and a mistake in their mapping shows.
"""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from ch04_gpt import GPTConfig, GPTModel, generate_text_simple, load_hf_gpt2_weights

VOCAB = 257  # small and odd, so no dimension coincides with another by accident
TOL = 1e-5


def make_pair(
    emb_dim: int = 24,
    n_heads: int = 3,
    n_layers: int = 2,
    context_length: int = 16,
    tie: bool = True,
    seed: int = 0,
) -> tuple[GPT2LMHeadModel, GPTModel]:
    """A random Hugging Face GPT-2 and our model with its weights copied in, both in eval mode."""
    torch.manual_seed(seed)
    hf_cfg = GPT2Config(
        vocab_size=VOCAB,
        n_positions=context_length,
        n_embd=emb_dim,
        n_layer=n_layers,
        n_head=n_heads,
        tie_word_embeddings=tie,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    hf = GPT2LMHeadModel(hf_cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.add_(0.05 * torch.randn_like(p))  # biases become non-zero too
    cfg = GPTConfig(
        vocab_size=VOCAB,
        context_length=context_length,
        emb_dim=emb_dim,
        n_heads=n_heads,
        n_layers=n_layers,
        tie_weights=tie,
    )
    ours = GPTModel(cfg).eval()
    load_hf_gpt2_weights(ours, hf.state_dict().items())
    return hf, ours


def max_logit_diff(hf: GPT2LMHeadModel, ours: GPTModel, idx: torch.Tensor) -> float:
    with torch.no_grad():
        return (hf(idx).logits - ours(idx)).abs().max().item()


@pytest.mark.parametrize("fast", [False, True], ids=["readable", "fast"])
@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("emb_dim,n_heads", [(24, 3), (40, 5), (56, 7)])
def test_logits_match_hf(emb_dim, n_heads, tie, fast):
    ctx = 16
    hf, ours = make_pair(emb_dim=emb_dim, n_heads=n_heads, context_length=ctx, tie=tie, seed=n_heads)
    ours.set_fast_path(fast)
    g = torch.Generator().manual_seed(1)
    for B, T in [(1, 1), (3, 1), (2, 7), (3, ctx)]:  # T = 1, a middle length, the full context
        idx = torch.randint(0, VOCAB, (B, T), generator=g)
        assert max_logit_diff(hf, ours, idx) < TOL, (B, T)


def test_tying_follows_the_checkpoint():
    _, tied = make_pair(tie=True)
    assert tied.out_head.weight is tied.tok_emb.weight
    hf, untied = make_pair(tie=False)
    assert untied.out_head.weight is not untied.tok_emb.weight
    assert torch.equal(untied.out_head.weight, hf.lm_head.weight)
    assert not torch.equal(untied.out_head.weight, untied.tok_emb.weight)


def test_qkv_split():
    # A key bias adds the same number to every score of a query, so softmax hides it from the
    # logits; check the split of c_attn into queries, keys and values directly.
    hf, ours = make_pair(emb_dim=24, n_heads=3)
    C = 24
    w = hf.transformer.h[1].attn.c_attn.weight  # (C, 3C), Conv1D layout (in, out)
    b = hf.transformer.h[1].attn.c_attn.bias  # (3C,)
    att = ours.blocks[1].att
    for i, lin in enumerate([att.W_query, att.W_key, att.W_value]):
        assert torch.equal(lin.weight, w[:, i * C : (i + 1) * C].t())
        assert torch.equal(lin.bias, b[i * C : (i + 1) * C])


def test_untied_model_from_checkpoint_without_lm_head():
    # GPT-2's released files omit lm_head (it is wte); an untied model then starts from wte.
    hf, _ = make_pair(tie=True)
    ours = GPTModel(GPTConfig(vocab_size=VOCAB, context_length=16, emb_dim=24, n_heads=3, n_layers=2,
                              tie_weights=False)).eval()
    tensors = ((k, v) for k, v in hf.state_dict().items() if k != "lm_head.weight")  # a generator
    load_hf_gpt2_weights(ours, tensors)
    assert torch.equal(ours.out_head.weight, ours.tok_emb.weight)
    idx = torch.randint(0, VOCAB, (2, 9))
    assert max_logit_diff(hf, ours, idx) < TOL


@pytest.mark.parametrize("fast", [False, True], ids=["readable", "fast"])
def test_greedy_generation_matches_hf(fast):
    ctx, prompt_len, n_new = 32, 5, 20  # prompt + 20 new tokens fit in the context
    hf, ours = make_pair(emb_dim=40, n_heads=5, n_layers=3, context_length=ctx, seed=7)
    ours.set_fast_path(fast)
    hf.generation_config.eos_token_id = None  # never stop early: exactly 20 new tokens
    hf.generation_config.pad_token_id = 0
    prompt = torch.randint(0, VOCAB, (2, prompt_len), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = hf.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                               max_new_tokens=n_new)
    got = generate_text_simple(ours, prompt, max_new_tokens=n_new, context_size=ctx)
    assert got.shape == (2, prompt_len + n_new)
    assert torch.equal(got, expected)
    assert len(set(got[0, prompt_len:].tolist())) > 1  # not a degenerate single-token loop


def test_wrong_shape_raises():
    hf, _ = make_pair(emb_dim=24, n_heads=3)
    other = GPTModel(GPTConfig(vocab_size=VOCAB, context_length=16, emb_dim=32, n_heads=4, n_layers=2))
    with pytest.raises(ValueError, match="shape"):
        load_hf_gpt2_weights(other, hf.state_dict().items())


def test_missing_parameter_raises():
    hf, ours = make_pair()
    tensors = [(k, v) for k, v in hf.state_dict().items() if k != "transformer.h.1.mlp.c_fc.bias"]
    with pytest.raises(KeyError, match="fc1.bias"):
        load_hf_gpt2_weights(ours, tensors)


def test_unknown_tensor_raises():
    hf, ours = make_pair()
    tensors = list(hf.state_dict().items()) + [("transformer.extra.weight", torch.zeros(3))]
    with pytest.raises(KeyError, match="extra"):
        load_hf_gpt2_weights(ours, tensors)
