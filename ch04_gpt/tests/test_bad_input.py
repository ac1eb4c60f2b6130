"""Bad input to GPTConfig, GPTModel, its KV cache and greedy generation: one sentence naming
the argument, the value and what is allowed; no IndexError, ZeroDivisionError or silently
wrong logits."""

import pytest
import torch

from ch04_gpt import GPTConfig, GPTModel, generate_text_simple, load_hf_gpt2_weights

TINY = GPTConfig(vocab_size=50, context_length=8, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0)


@pytest.fixture(scope="module")
def model() -> GPTModel:
    torch.manual_seed(0)
    return GPTModel(TINY).eval()


# --- GPTConfig ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "changes,message",
    [
        (dict(n_layers=-1), "n_layers=-1; use an integer >= 1"),
        (dict(n_layers=0), "n_layers=0"),
        (dict(n_heads=0), "n_heads=0; use an integer >= 1"),  # was a ZeroDivisionError
        (dict(n_heads=-2), "n_heads=-2"),  # was accepted: 16 % -2 == 0
        (dict(emb_dim=0), "emb_dim=0"),
        (dict(vocab_size=0), "vocab_size=0"),
        (dict(context_length=0), "context_length=0"),
        (dict(ff_hidden_dim=0), "ff_hidden_dim=0"),
        (dict(n_layers=2.5), "n_layers=2.5"),
        (dict(drop_rate=1.0), r"drop_rate=1.0; use a number in \[0, 1\) \(a probability\)"),
        (dict(drop_rate=-0.1), "drop_rate=-0.1"),
        (dict(drop_rate=float("nan")), "drop_rate=nan"),
    ],
)
def test_config_rejects_bad_sizes(changes, message):
    with pytest.raises(ValueError, match=message):
        TINY.replace(**changes)


# --- model inputs -------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [50, 1000, -1])
def test_out_of_range_id_is_named(model, bad):
    idx = torch.tensor([[1, 2, 3], [4, bad, 6]])
    with pytest.raises(ValueError, match=rf"idx\[1, 1\] = {bad} .*\[0, 49\] \(vocab_size 50\)"):
        model(idx)


def test_largest_valid_id_is_accepted(model):
    assert model(torch.tensor([[0, 49]])).shape == (1, 2, 50)


def test_one_dimensional_input_says_unsqueeze(model):
    with pytest.raises(ValueError, match=r"\(B, T\).*got shape \(3,\); add a batch dimension with idx.unsqueeze"):
        model(torch.tensor([1, 2, 3]))


def test_float_input_is_named(model):
    with pytest.raises(ValueError, match=r"dtype torch.float32; token ids must be integers"):
        model(torch.tensor([[1.0, 2.0]]))


def test_list_input_is_named(model):
    with pytest.raises(TypeError, match=r"got list; make one with torch.tensor"):
        model([[1, 2]])


def test_int32_ids_still_work(model):
    idx = torch.tensor([[3, 4, 5]])
    torch.testing.assert_close(model(idx.int()), model(idx), rtol=0, atol=0)


def test_id_check_is_skipped_while_compiling(model, monkeypatch):
    # Under torch.compile the data-dependent check would break the graph: it is skipped there.
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    with pytest.raises(IndexError):  # the embedding's own error, not ours
        model(torch.tensor([[50]]))


# --- KV cache -----------------------------------------------------------------------------------

def test_prompt_fed_again_into_a_filled_cache_is_refused_with_start_pos(model):
    prompt = torch.tensor([[1, 2, 3]])
    cache = model.new_kv_cache()
    with torch.no_grad():
        first = model(prompt, cache, start_pos=0)
        with pytest.raises(ValueError, match=r"start_pos=0, but kv_cache already holds 3 tokens.*reset\(\)"):
            model(prompt, cache, start_pos=0)
        assert all(c.length == 3 for c in cache)  # the refused call stored nothing
        model(torch.tensor([[4]]), cache, start_pos=3)  # a true continuation is accepted
        for c in cache:
            c.reset()
        torch.testing.assert_close(model(prompt, cache, start_pos=0), first, rtol=0, atol=0)


def test_start_pos_without_cache(model):
    with pytest.raises(ValueError, match="start_pos=2 needs a kv_cache"):
        model(torch.tensor([[1, 2]]), start_pos=2)
    assert model(torch.tensor([[1, 2]]), start_pos=0).shape == (1, 2, 50)


def test_cache_refuses_another_batch_size(model):
    cache = model.new_kv_cache()
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3]]), cache)
        with pytest.raises(ValueError, match=r"B=1.*got B=2"):
            model(torch.tensor([[4], [5]]), cache)


def test_cache_layers_out_of_step_are_refused(model):
    cache = model.new_kv_cache()
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3]]), cache)
    cache[1].reset()  # as if a forward pass had stopped after the first layer
    with pytest.raises(ValueError, match=r"different numbers of tokens \[0, 3\]"):
        model(torch.tensor([[4]]), cache)


@pytest.mark.parametrize("bad", ["cache", "short"])
def test_cache_must_be_one_per_layer(model, bad):
    cache = model.new_kv_cache()
    wrong = cache[0] if bad == "cache" else cache[:1]
    with pytest.raises(ValueError, match=r"list of 2 KVCache.*new_kv_cache"):
        model(torch.tensor([[1]]), wrong)


@pytest.mark.parametrize("bad", [0, 9, -1])
def test_new_kv_cache_max_len(model, bad):
    # max_len=0 used to mean "the default" silently; 9 exceeds the model's 8 positions.
    with pytest.raises(ValueError, match=rf"max_len={bad}; use an int in \[1, context_length=8\]"):
        model.new_kv_cache(bad)


# --- greedy generation --------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [0, -2])
def test_generate_text_simple_context_size(model, bad):
    # context_size=0 used to feed the whole sequence (idx[:, -0:]), ignoring the window.
    with pytest.raises(ValueError, match=rf"context_size={bad}"):
        generate_text_simple(model, torch.tensor([[1, 2]]), 3, context_size=bad)


def test_generate_text_simple_max_new_tokens(model):
    with pytest.raises(ValueError, match="max_new_tokens=-1"):
        generate_text_simple(model, torch.tensor([[1, 2]]), -1, context_size=8)


def test_greedy_on_a_model_in_train_mode_is_deterministic():
    torch.manual_seed(0)
    noisy = GPTModel(TINY.replace(drop_rate=0.5)).train()  # left in train mode: dropout on
    prompt = torch.tensor([[1, 2, 3]])
    runs = [generate_text_simple(noisy, prompt, 8, context_size=8) for _ in range(4)]
    assert all(torch.equal(r, runs[0]) for r in runs)
    assert noisy.training  # the mode is given back


@pytest.mark.parametrize("idx, words", [
    (torch.zeros(1, 0, dtype=torch.long), "an empty prompt"),
    (torch.tensor([1, 2]), r"shape \(2,\).*\(B, T\)"),
    (torch.tensor([[0.5, 1.0]]), "torch.float32"),
    ([[1, 2]], "idx has list"),
])
def test_generate_text_simple_refuses_a_prompt_it_cannot_continue(model, idx, words):
    with pytest.raises(ValueError, match=words):
        generate_text_simple(model, idx, 3, context_size=8)


def test_greedy_on_nan_logits_raises_instead_of_token_0(model):
    broken = GPTModel(TINY).eval()
    broken.load_state_dict(model.state_dict())
    with torch.no_grad():
        broken.blocks[1].ff.fc2.bias.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"non-finite logits .*step 0"):
        generate_text_simple(broken, torch.tensor([[1, 2]]), 3, context_size=8)


# --- Hugging Face weights -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def hf_state() -> dict[str, torch.Tensor]:
    """A tiny Hugging Face GPT-2's state dict (Conv1D weights (in, out)), matching HF_CFG."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=8, n_embd=16, n_layer=2, n_head=2,
                                    bos_token_id=0, eos_token_id=0))
    return {k: v.clone() for k, v in hf.state_dict().items()}


HF_CFG = TINY.replace(drop_rate=0.1)
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def test_hf_state_loads(hf_state):
    load_hf_gpt2_weights(GPTModel(HF_CFG), hf_state.items())  # the reference the cases below break


def test_file_in_linear_layout_is_refused(hf_state):
    # Every Conv1D weight transposed to nn.Linear's (out, in), as a re-saved copy might be.
    linear = {k: v.t().contiguous() if k.endswith(CONV1D) else v for k, v in hf_state.items()}
    with pytest.raises(ValueError, match=r"c_attn.weight has shape \(48, 16\), the nn.Linear layout"):
        load_hf_gpt2_weights(GPTModel(HF_CFG), linear.items())


def test_tensors_disagreeing_on_layout_are_refused(hf_state):
    # c_attn in Conv1D layout but one c_fc in nn.Linear's: the file contradicts itself.
    mixed = dict(hf_state)
    mixed["transformer.h.1.mlp.c_fc.weight"] = mixed["transformer.h.1.mlp.c_fc.weight"].t()
    with pytest.raises(ValueError, match=r"h.1.mlp.c_fc.weight has shape \(64, 16\), the nn.Linear layout"):
        load_hf_gpt2_weights(GPTModel(HF_CFG), mixed.items())


def test_deeper_checkpoint_names_the_layer(hf_state):
    with pytest.raises(ValueError, match=r"h.1.ln_1.weight belongs to layer 1, but the model has n_layers=1"):
        load_hf_gpt2_weights(GPTModel(HF_CFG.replace(n_layers=1)), hf_state.items())


def test_other_size_is_named(hf_state):
    with pytest.raises(ValueError, match=r"wte.weight has shape \(50, 16\), but this model needs \(50, 32\)"):
        load_hf_gpt2_weights(GPTModel(HF_CFG.replace(emb_dim=32)), hf_state.items())


def test_unknown_block_tensor_is_named(hf_state):
    extra = list(hf_state.items()) + [("transformer.h.0.attn.rotary.weight", torch.zeros(3))]
    with pytest.raises(KeyError, match=r"unexpected GPT-2 tensor 'transformer.h.0.attn.rotary.weight'"):
        load_hf_gpt2_weights(GPTModel(HF_CFG), extra)
