"""Tests for ch05_pretrain.gpt2_weights: folders written by transformers' `save_pretrained`
load into a GPTModel that gives Hugging Face's logits; bad folders, names and offline
downloads fail with clear errors. No test touches the network."""

import json
import struct

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from ch05_pretrain.gpt2_weights import config_from_hf, iter_safetensors, load_gpt2, read_safetensors_header

VOCAB = 101  # small and odd
TOL = 1e-5


def save_hf(tmp_path, *, n_embd=24, n_head=3, n_layer=2, n_positions=16, tie=True, n_inner=None,
            dtype=torch.float32, seed=0):
    """Save a random Hugging Face GPT-2 with save_pretrained; return (model in float32, folder).

    Weights are perturbed so LayerNorm scales and biases differ from their init values
    (1 and 0), and a mix-up in their mapping shows in the logits.
    """
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                     n_head=n_head, n_inner=n_inner, tie_word_embeddings=tie,
                     bos_token_id=0, eos_token_id=0, pad_token_id=0)
    hf = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hf = hf.to(dtype)
    folder = tmp_path / "ckpt"
    hf.save_pretrained(folder)  # writes config.json and model.safetensors
    return hf.float(), folder


@pytest.mark.parametrize(
    "shape",
    [
        dict(n_embd=24, n_head=3, n_layer=2, tie=True),
        dict(n_embd=40, n_head=5, n_layer=3, tie=False),  # odd head count, separate lm_head
        dict(n_embd=28, n_head=7, n_layer=1, tie=True, n_inner=20),  # non-default MLP width
    ],
    ids=["tied-3heads", "untied-5heads", "7heads-ninner"],
)
def test_logits_match_hf(tmp_path, shape):
    hf, folder = save_hf(tmp_path, **shape)
    model = load_gpt2(folder)
    assert not model.training
    assert model.cfg.tie_weights == shape["tie"]
    assert (model.out_head.weight is model.tok_emb.weight) == shape["tie"]
    idx = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (model(idx) - hf(idx).logits).abs().max().item()
    assert diff < TOL


@pytest.mark.parametrize("file_dtype", [torch.float16, torch.bfloat16], ids=["F16", "BF16"])
def test_half_precision_files_and_dtype_argument(tmp_path, file_dtype):
    hf, folder = save_hf(tmp_path, dtype=file_dtype)
    model = load_gpt2(folder)  # float32 model from a half-precision file: exact upcast
    assert model.tok_emb.weight.dtype == torch.float32
    assert torch.equal(model.tok_emb.weight, hf.transformer.wte.weight)
    assert torch.equal(model.blocks[1].ff.fc1.weight, hf.transformer.h[1].mlp.c_fc.weight.t())
    half = load_gpt2(folder, dtype=file_dtype)
    assert all(p.dtype == file_dtype for p in half.parameters())
    assert torch.equal(half.tok_emb.weight.float(), hf.transformer.wte.weight)
    assert torch.get_default_dtype() == torch.float32  # the temporary default was restored


def test_dtype_conversion_from_float32(tmp_path):
    hf, folder = save_hf(tmp_path)
    model = load_gpt2(folder, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert torch.equal(model.tok_emb.weight, hf.transformer.wte.weight.to(torch.bfloat16))


def test_reader_streams_tensors_in_file_order(tmp_path):
    hf, folder = save_hf(tmp_path, tie=False)
    path = folder / "model.safetensors"
    header, data_start = read_safetensors_header(path)
    assert data_start == 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]
    expected = hf.state_dict()
    names = []
    for name, t in iter_safetensors(path):
        assert torch.equal(t, expected[name]), name
        names.append(name)
    assert set(names) == set(header)
    offsets = [header[n]["data_offsets"][0] for n in names]
    assert offsets == sorted(offsets)  # one front-to-back pass over the file


def test_direct_read_fills_the_parameter_in_place(tmp_path):
    hf, folder = save_hf(tmp_path)
    model = load_gpt2(folder)
    target = {"transformer.wte.weight": model.tok_emb.weight.detach()}
    torch.nn.init.zeros_(model.tok_emb.weight.detach())
    for name, t in iter_safetensors(folder / "model.safetensors", into=target):
        if name == "transformer.wte.weight":
            assert t.data_ptr() == model.tok_emb.weight.data_ptr()  # no buffer: the parameter itself
    assert torch.equal(model.tok_emb.weight, hf.transformer.wte.weight)


def test_truncated_file_raises(tmp_path):
    _, folder = save_hf(tmp_path)
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated"):
        load_gpt2(folder)


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors"])
def test_folder_with_missing_file(tmp_path, missing):
    _, folder = save_hf(tmp_path)
    (folder / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing):
        load_gpt2(folder)


def test_unknown_name_raises():
    with pytest.raises(ValueError, match="neither a GPT-2 name"):
        load_gpt2("gpt3-huge")


def test_unsupported_config_raises():
    base = dict(vocab_size=VOCAB, n_positions=16, n_embd=24, n_head=3, n_layer=2)
    assert config_from_hf(base).tie_weights  # tie_word_embeddings defaults to True
    with pytest.raises(ValueError, match="activation_function"):
        config_from_hf({**base, "activation_function": "relu"})
    with pytest.raises(ValueError, match="layer_norm_epsilon"):
        config_from_hf({**base, "layer_norm_epsilon": 1e-6})
    with pytest.raises(ValueError, match="not GPT-2"):
        config_from_hf({**base, "model_type": "llama"})


# Named sizes (GPT2_DIR, the hub, verification, offline errors): test_gpt2_hub.py.


# --- damaged or mismatched files: one sentence naming the file -------------------------------


@pytest.mark.parametrize("size", [0, 5])
def test_file_shorter_than_the_header_length(tmp_path, size):
    _, folder = save_hf(tmp_path)
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:size])  # struct.error before
    with pytest.raises(ValueError, match=rf"model.safetensors is {size} bytes long, too short"):
        load_gpt2(folder)


def test_header_length_past_the_end_of_the_file(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 5000) + b"{}")
    with pytest.raises(ValueError, match=r"header length 5000 runs past the end of the 10-byte file"):
        read_safetensors_header(path)


def test_header_that_is_not_json(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 4) + b"\xff{x}")
    with pytest.raises(ValueError, match="the header is not valid JSON"):
        read_safetensors_header(path)


def _resave(folder, change):
    """Rewrite folder/model.safetensors with change(name, tensor) applied to every tensor."""
    from safetensors.torch import save_file

    path = folder / "model.safetensors"
    tensors = {name: change(name, t).contiguous() for name, t in iter_safetensors(path)}
    save_file(tensors, str(path), metadata={"format": "pt"})


CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def test_file_in_linear_layout_is_refused(tmp_path):
    # A copy re-saved with nn.Linear's (out, in) weights: before, only the non-square tensors'
    # shapes happened to catch it, with a message that did not say why.
    _, folder = save_hf(tmp_path)
    _resave(folder, lambda name, t: t.t() if name.endswith(CONV1D) else t)
    with pytest.raises(ValueError, match=r"model.safetensors: \S+ has shape \(\d+, 24\), the nn.Linear layout"):
        load_gpt2(folder)


def test_file_with_one_transposed_tensor_is_refused(tmp_path):
    _, folder = save_hf(tmp_path)
    _resave(folder, lambda name, t: t.t() if name.endswith("h.1.mlp.c_proj.weight") else t)
    with pytest.raises(ValueError, match=r"h.1.mlp.c_proj.weight has shape \(24, 96\), the nn.Linear layout"):
        load_gpt2(folder)


def test_config_and_file_of_different_sizes(tmp_path):
    _, folder = save_hf(tmp_path)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["n_embd"], config["n_head"] = 32, 4  # the file's tensors are 24 wide
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ValueError, match=r"model.safetensors: .* but this model needs .*another model size"):
        load_gpt2(folder)
