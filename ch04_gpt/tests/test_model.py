"""GPTModel, its layers, its config and greedy generation, on tiny configurations."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from ch04_gpt import (
    GELU,
    GPT_CONFIGS,
    FeedForward,
    GPTConfig,
    GPTModel,
    LayerNorm,
    RMSNorm,
    TransformerBlock,
    generate_text_simple,
)

TINY = GPTConfig(vocab_size=97, context_length=16, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() lists a tied matrix once


# --- parameter counts -------------------------------------------------------------------------

def test_gpt2_124m_counts():
    # On the meta device no memory is allocated, so building even the big models is instant.
    with torch.device("meta"):
        tied = GPTModel(GPT_CONFIGS["gpt2"])
        untied = GPTModel(GPT_CONFIGS["gpt2"].replace(tie_weights=False))
    assert n_params(tied) == 124_439_808
    assert n_params(untied) == 124_439_808 + 50257 * 768 == 163_037_184


@pytest.mark.parametrize("name", list(GPT_CONFIGS))
@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_preset_counts_match_hf(name, tie):
    cfg = GPT_CONFIGS[name].replace(tie_weights=tie)
    hf_cfg = GPT2Config(n_embd=cfg.emb_dim, n_layer=cfg.n_layers, n_head=cfg.n_heads,
                        n_positions=cfg.context_length, vocab_size=cfg.vocab_size,
                        tie_word_embeddings=tie)
    with torch.device("meta"):
        ours, hf = GPTModel(cfg), GPT2LMHeadModel(hf_cfg)
    assert n_params(ours) == n_params(hf)


def test_preset_counts_known_values():
    expected = {"gpt2-medium": 354_823_168, "gpt2-large": 774_030_080, "gpt2-xl": 1_557_611_200}
    for name, count in expected.items():
        with torch.device("meta"):
            assert n_params(GPTModel(GPT_CONFIGS[name])) == count, name


# --- layers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fast", [False, True])
def test_layernorm_equals_torch(fast):
    torch.manual_seed(0)
    ours, ref = LayerNorm(24), nn.LayerNorm(24)
    with torch.no_grad():
        ref.weight.normal_()
        ref.bias.normal_()
    ours.load_state_dict(ref.state_dict())  # same parameter names: weight, bias
    ours.fast = fast
    x = 3.0 * torch.randn(4, 5, 24) + 2.0
    assert (ours(x) - ref(x)).abs().max().item() < 1e-6


def test_layernorm_output_is_standardised():
    y = LayerNorm(16)(5.0 * torch.randn(3, 16) - 7.0)
    assert torch.allclose(y.mean(-1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(y.var(-1, unbiased=False), torch.ones(3), atol=1e-3)


def test_rmsnorm():
    norm = RMSNorm(16)
    assert [n for n, _ in norm.named_parameters()] == ["weight"]  # no bias, no centring
    y = norm(4.0 * torch.randn(3, 16) + 1.0)
    assert torch.allclose(y.pow(2).mean(-1), torch.ones(3), atol=1e-3)


@pytest.mark.parametrize("fast", [False, True])
def test_gelu_equals_torch_tanh(fast):
    gelu = GELU()
    gelu.fast = fast
    x = torch.linspace(-6, 6, 1001)
    assert torch.allclose(gelu(x), F.gelu(x, approximate="tanh"), atol=1e-6)


def test_feedforward_shapes_and_swiglu_width():
    x = torch.randn(2, 5, 48)
    counts = {}
    for act in ["gelu", "relu", "silu", "swiglu"]:
        ff = FeedForward(TINY.replace(emb_dim=48, n_heads=4, activation=act))
        assert ff(x).shape == x.shape
        counts[act] = n_params(ff)
    assert counts["gelu"] == counts["relu"] == counts["silu"] == 48 * 192 + 192 + 192 * 48 + 48
    # SwiGLU's hidden width 8C/3 keeps its three matrices about as large as two of width 4C.
    assert abs(counts["swiglu"] - counts["gelu"]) / counts["gelu"] < 0.01


@pytest.mark.parametrize("position", ["pre", "post"])
def test_block_keeps_shape(position):
    block = TransformerBlock(TINY.replace(norm_position=position))
    x = torch.randn(3, 7, TINY.emb_dim)
    assert block(x).shape == x.shape


# --- the model --------------------------------------------------------------------------------

def test_logits_shape_and_tying():
    model = GPTModel(TINY)
    logits = model(torch.randint(0, TINY.vocab_size, (3, 11)))
    assert logits.shape == (3, 11, TINY.vocab_size)
    assert model.out_head.weight is model.tok_emb.weight
    untied = GPTModel(TINY.replace(tie_weights=False))
    assert untied.out_head.weight is not untied.tok_emb.weight
    assert n_params(untied) - n_params(model) == TINY.vocab_size * TINY.emb_dim


def test_too_long_input_raises():
    model = GPTModel(TINY)
    with pytest.raises(ValueError, match="context_length"):
        model(torch.zeros(1, TINY.context_length + 1, dtype=torch.long))


def test_residual_projections_have_scaled_init():
    torch.manual_seed(0)
    cfg = TINY.replace(emb_dim=128, n_layers=8)
    model = GPTModel(cfg)
    std = model.blocks[0].ff.fc2.weight.std().item()
    assert abs(std - 0.02 / (2 * cfg.n_layers) ** 0.5) < 0.001
    assert abs(model.blocks[0].ff.fc1.weight.std().item() - 0.02) < 0.001


@pytest.mark.parametrize("fused_qkv", [False, True])
@pytest.mark.parametrize("cfg_changes", [{}, {"tie_weights": False}, {"norm_position": "post"}])
def test_fast_path_equals_readable(cfg_changes, fused_qkv):
    torch.manual_seed(0)
    cfg = TINY.replace(**cfg_changes)
    readable = GPTModel(cfg)
    fast = GPTModel(cfg)
    fast.load_state_dict(readable.state_dict())
    fast.set_fast_path(True, fused_qkv=fused_qkv)
    assert fast.blocks[0].att.fused_qkv == fused_qkv and fast.blocks[0].att.use_sdpa
    idx = torch.randint(0, cfg.vocab_size, (2, cfg.context_length))
    targets = torch.randint(0, cfg.vocab_size, (2, cfg.context_length))
    logits_r, logits_f = readable(idx), fast(idx)
    assert (logits_r - logits_f).abs().max().item() < 1e-5
    F.cross_entropy(logits_r.flatten(0, 1), targets.flatten()).backward()
    F.cross_entropy(logits_f.flatten(0, 1), targets.flatten()).backward()
    grads_f = dict(fast.named_parameters())
    for name, p in readable.named_parameters():
        assert torch.allclose(p.grad, grads_f[name].grad, atol=1e-6, rtol=1e-4), name


VARIANTS = {
    "gpt2": {},
    "rmsnorm": {"norm": "rmsnorm"},
    "swiglu": {"activation": "swiglu"},
    "silu": {"activation": "silu"},
    "relu": {"activation": "relu"},
    "post-ln": {"norm_position": "post"},
    "modern": {"norm": "rmsnorm", "activation": "swiglu"},
}


@pytest.mark.parametrize("changes", VARIANTS.values(), ids=VARIANTS.keys())
def test_variants_run_and_backprop(changes):
    torch.manual_seed(0)
    cfg = TINY.replace(drop_rate=0.1, **changes)
    model = GPTModel(cfg).train()
    idx = torch.randint(0, cfg.vocab_size, (2, 9))
    logits = model(idx)
    assert logits.shape == (2, 9, cfg.vocab_size)
    F.cross_entropy(logits.flatten(0, 1), idx.roll(-1, 1).flatten()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.blocks[0].ff.fc1.weight.grad.abs().sum() > 0
    assert isinstance(model.final_norm, nn.Identity) == (cfg.norm_position == "post")


# --- config -----------------------------------------------------------------------------------

def test_config_round_trip_and_typos():
    cfg = GPT_CONFIGS["gpt2-medium"].replace(context_length=256)
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(TypeError, match="emb_dims"):
        GPTConfig.from_dict({**cfg.to_dict(), "emb_dims": 64})
    with pytest.raises(TypeError):
        cfg.replace(n_head=4)  # the field is n_heads
    with pytest.raises(AttributeError):  # dataclasses.FrozenInstanceError
        cfg.emb_dim = 64


@pytest.mark.parametrize("bad", [{"norm": "batchnorm"}, {"activation": "gelu_new"},
                                 {"norm_position": "middle"}, {"emb_dim": 30, "n_heads": 4}])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        GPTConfig(**bad)


def test_presets():
    assert [(c.emb_dim, c.n_layers, c.n_heads) for c in GPT_CONFIGS.values()] == [
        (768, 12, 12), (1024, 24, 16), (1280, 36, 20), (1600, 48, 25)]
    for c in GPT_CONFIGS.values():
        assert (c.vocab_size, c.context_length, c.qkv_bias, c.tie_weights) == (50257, 1024, True, True)


# --- generation and KV cache ------------------------------------------------------------------

def test_generate_shape_and_cropping():
    torch.manual_seed(0)
    model = GPTModel(TINY).eval()
    ctx = TINY.context_length
    long_prompt = torch.randint(0, TINY.vocab_size, (2, ctx + 5))  # longer than the context
    out = generate_text_simple(model, long_prompt, max_new_tokens=6, context_size=ctx)
    assert out.shape == (2, ctx + 5 + 6)
    assert torch.equal(out[:, : ctx + 5], long_prompt)
    # Only the last ctx tokens matter: the same continuation from the cropped prompt.
    cropped = generate_text_simple(model, long_prompt[:, -ctx:], max_new_tokens=6, context_size=ctx)
    assert torch.equal(out[:, -6:], cropped[:, -6:])
    # Greedy: each new token is the argmax of the model's last-position logits.
    with torch.no_grad():
        first = model(long_prompt[:, -ctx:])[:, -1].argmax(-1)
    assert torch.equal(out[:, ctx + 5], first)


@pytest.mark.parametrize("fast", [False, True], ids=["readable", "fast"])
def test_kv_cache_chunks_equal_full_forward(fast):
    torch.manual_seed(0)
    model = GPTModel(TINY).eval().set_fast_path(fast)
    idx = torch.randint(0, TINY.vocab_size, (2, TINY.context_length))
    with torch.no_grad():
        full = model(idx)
        for _ in range(2):  # a fresh cache each time: the second pass must not see the first
            cache = model.new_kv_cache()
            chunks = [model(idx[:, a:b], cache) for a, b in [(0, 5), (5, 6), (6, 11), (11, 16)]]
            assert (torch.cat(chunks, dim=1) - full).abs().max().item() < 1e-5
        with pytest.raises(ValueError):
            model(idx[:, :1], cache)  # the cache is full: position 16 does not exist


@pytest.mark.parametrize("fast", [False, True])
def test_set_causal_false_lets_position_0_see_later_tokens_and_true_restores(fast):
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=50, context_length=8, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0)
    model = GPTModel(cfg).set_fast_path(fast).eval()
    x = torch.randint(0, 50, (2, 6))
    x2 = x.clone()
    x2[:, 3:] = (x2[:, 3:] + 1) % 50  # change the later tokens only
    causal = model(x)
    torch.testing.assert_close(causal[:, 0], model(x2)[:, 0], rtol=0, atol=0)  # causal: unchanged
    model.set_causal(False)
    assert not torch.allclose(model(x)[:, 0], model(x2)[:, 0])  # position 0 now sees the future
    with pytest.raises(ValueError, match="causal"):
        model(x, kv_cache=model.new_kv_cache())
    model.set_causal(True)
    torch.testing.assert_close(model(x), causal, rtol=0, atol=0)


def test_bidirectional_readable_equals_fast_path():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=50, context_length=8, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0)
    model = GPTModel(cfg).set_causal(False).eval()
    x = torch.randint(0, 50, (2, 7))
    readable = model(x)
    torch.testing.assert_close(model.set_fast_path(True)(x), readable, rtol=1e-5, atol=1e-5)


def test_forward_is_the_head_applied_to_hidden_states():
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=100, context_length=16, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0))
    idx = torch.randint(0, 100, (2, 9))
    hidden = model.hidden_states(idx)
    assert hidden.shape == (2, 9, 16)
    assert torch.equal(model.out_head(hidden), model(idx))
