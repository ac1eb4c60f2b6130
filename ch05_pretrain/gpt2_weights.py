"""OpenAI's GPT-2 weights, read from Hugging Face's `model.safetensors` into a GPTModel.

A safetensors file is an 8-byte little-endian header length N, then N bytes of JSON that give
each tensor's dtype, shape and byte range, then the raw tensor bytes. Reading it needs no
pickle (no code execution, unlike `torch.load` of a .bin) and no TensorFlow (unlike OpenAI's
original checkpoint).

`load_gpt2` builds the model first and then reads the file one tensor at a time, copying each
into its parameter before reading the next, so memory never holds two copies of the weights:
the peak is the model plus one tensor's read buffer. (The token embedding, by far the largest
tensor, is read straight into its parameter, so that buffer stays small.) Plain `readinto` is
used rather than a memory map, whose pages would count as resident memory until the whole
file had been touched.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from ch02_data.checks import number_in
from ch04_gpt import GPT_CONFIGS, GPTConfig, GPTModel, load_hf_gpt2_weights
from ch04_gpt.hf_weights import check_hf_shapes

from .gpt2_hub import GPT2_HUB, GPT2_SIZES, download_from_hub, local_folder

# safetensors dtype names -> torch dtypes. GPT-2 checkpoints use F32 (F16/BF16 for re-saved
# copies); the integer and bool types appear in some files for buffers, which the mapping skips.
_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}


def read_safetensors_header(path: str | os.PathLike) -> tuple[dict, int]:
    """The JSON header of a safetensors file, and the byte offset where tensor data starts.

    Header entries look like {"h.0.attn.c_attn.weight": {"dtype": "F32", "shape": [768, 2304],
    "data_offsets": [begin, end]}}, offsets relative to the data start; "__metadata__" is optional.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if size < 8:
            raise ValueError(f"{path} is {size} bytes long, too short for a safetensors file "
                             "(which starts with an 8-byte header length); the file is empty or cut off")
        (n,) = struct.unpack("<Q", f.read(8))  # unsigned 64-bit little-endian header length
        if n > 100 * 2**20:
            raise ValueError(f"{path}: header length {n} is implausible; not a safetensors file?")
        if 8 + n > size:
            raise ValueError(f"{path}: header length {n} runs past the end of the {size}-byte file; "
                             "it is truncated or not a safetensors file")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: the header is not valid JSON ({e}); not a safetensors file?") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the header is a JSON {type(header).__name__}, not an object; "
                         "not a safetensors file?")
    header.pop("__metadata__", None)
    for name, info in header.items():
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
            raise ValueError(f"{path}: header entry {name!r} lacks dtype, shape or data_offsets; "
                             "not a safetensors file?")
    return header, 8 + n


def _read_exactly(f, dest: torch.Tensor, what: str) -> None:
    """Fill the memory of contiguous CPU tensor `dest` with the next bytes of file `f`."""
    view = memoryview(dest.view(-1).view(torch.uint8).numpy())  # the tensor's own bytes, no copy
    got = 0
    while got < len(view):  # readinto may return fewer bytes than asked for
        n = f.readinto(view[got:])
        if not n:
            raise ValueError(f"file is truncated inside tensor {what}")
        got += n


def iter_safetensors(
    path: str | os.PathLike, into: dict[str, torch.Tensor] | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, tensor) for every tensor of a safetensors file, reading one at a time.

    Each tensor is a fresh CPU tensor in the file's dtype; once the consumer drops it, its
    memory is freed, so a consumer that copies and discards holds one tensor at most.
    `into` maps names to existing contiguous CPU tensors of the same shape and dtype: those
    are filled in place (no buffer at all) and yielded themselves.
    """
    if sys.byteorder != "little":
        raise RuntimeError("safetensors stores little-endian data; this reader needs a little-endian CPU")
    into = into or {}
    header, data_start = read_safetensors_header(path)
    # Sorted by offset: the file is then read front to back, one sequential pass.
    entries = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    with open(path, "rb", buffering=0) as f:
        for name, info in entries:
            if info["dtype"] not in _DTYPES:
                raise ValueError(f"{name}: unsupported safetensors dtype {info['dtype']}")
            dtype, shape = _DTYPES[info["dtype"]], info["shape"]
            begin, end = info["data_offsets"]
            dest = into.get(name)
            if dest is None or dest.dtype != dtype or list(dest.shape) != shape:
                dest = torch.empty(shape, dtype=dtype)
            if dest.numel() * dest.element_size() != end - begin:
                raise ValueError(f"{name}: {end - begin} bytes in the file do not fit {dtype} {shape}")
            f.seek(data_start + begin)
            with torch.no_grad():
                _read_exactly(f, dest, name)
            yield name, dest
            del dest  # drop our reference before reading the next tensor


def _direct_targets(model: GPTModel) -> dict[str, torch.Tensor]:
    """File tensors that can be read straight into a parameter, skipping the read buffer.

    The (V, C) token embedding is GPT-2's one big tensor (31% of the 124M model). Its layout
    is the same in both namings, so reading it in place keeps the loading peak near the model
    size instead of model + one embedding. Other tensors are small or need a transpose.
    Only plain CPU parameters qualify; copying a parameter onto itself is then a no-op.
    """
    targets = {"wte.weight": model.tok_emb.weight}
    if not model.cfg.tie_weights:
        targets["lm_head.weight"] = model.out_head.weight
    out = {}
    for name, p in targets.items():
        if p.device.type == "cpu" and p.is_contiguous():
            out[name] = out["transformer." + name] = p.detach()
    return out


def config_from_hf(hf: dict) -> GPTConfig:
    """A GPTConfig from the dict in a Hugging Face GPT-2 `config.json`; unsupported options raise."""
    if hf.get("model_type", "gpt2") != "gpt2":
        raise ValueError(f"config.json describes a {hf['model_type']!r} model, not GPT-2")
    act = hf.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):  # both are GELU's tanh approximation
        raise ValueError(f"activation_function {act!r} is not supported; GPTModel uses GPT-2's gelu_new")
    eps = hf.get("layer_norm_epsilon", 1e-5)
    if eps != 1e-5:
        raise ValueError(f"layer_norm_epsilon {eps} is not supported; GPTModel's LayerNorm uses 1e-5")
    if not hf.get("scale_attn_weights", True) or hf.get("scale_attn_by_inverse_layer_idx", False):
        raise ValueError("only GPT-2's attention scaling by 1/sqrt(head size) is supported")
    n_inner = hf.get("n_inner")
    return GPTConfig(
        vocab_size=hf["vocab_size"],
        context_length=hf["n_positions"],
        emb_dim=hf["n_embd"],
        n_heads=hf["n_head"],
        n_layers=hf["n_layer"],
        drop_rate=hf.get("resid_pdrop", 0.1),
        qkv_bias=True,
        tie_weights=hf.get("tie_word_embeddings", True),
        ff_hidden_dim=None if n_inner is None or n_inner == 4 * hf["n_embd"] else n_inner,
    )


@contextmanager
def _default_dtype(dtype: torch.dtype | None):
    """Create new parameters in `dtype`, so a bfloat16 model never exists in float32 first."""
    if dtype is None:
        yield
        return
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_",
                   "xavier_uniform_", "xavier_normal_", "zeros_", "ones_", "constant_")


@contextmanager
def _skip_random_init():
    """Make torch.nn.init's functions no-ops while a model whose weights will all be
    overwritten is built (transformers' `from_pretrained` does the same).

    It saves the time of drawing random numbers (seconds for gpt2-xl) and, more importantly,
    memory: parameters start as untouched, uninitialised allocations, which the operating system
    backs with RAM only when they are written, here by the checkpoint. GPTModel also creates a
    (V, C) output head before tying it to the token embedding; never written, it never costs
    RAM. `load_hf_gpt2_weights` raises if any parameter is left without a checkpoint value.
    """
    saved = {name: getattr(torch.nn.init, name) for name in _INIT_FUNCTIONS}
    for name in _INIT_FUNCTIONS:
        setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.nn.init, name, fn)


def load_gpt2_from_file(cfg: GPTConfig, path: str | os.PathLike, device: str | torch.device = "cpu",
                        dtype: torch.dtype | None = None) -> GPTModel:
    """Build GPTModel(cfg) directly on `device` in `dtype`, then stream the weights of a
    Hugging Face GPT-2 safetensors file into it. Returns the model in eval mode."""
    if dtype is not None and not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point type, got {dtype}")
    # Parameters are allocated once, where they will live, and left uninitialised.
    with torch.device(device), _default_dtype(dtype), _skip_random_init():
        model = GPTModel(cfg)
    # Names, shapes and the weights' layout come from the header: a mismatched or transposed
    # file is refused before any tensor is read.
    header, _ = read_safetensors_header(path)
    try:
        check_hf_shapes(model, ((name, info["shape"]) for name, info in header.items()))
    except (KeyError, ValueError) as e:
        raise ValueError(f"{path}: {e.args[0]}") from None
    tensors = iter_safetensors(path, into=_direct_targets(model))
    load_hf_gpt2_weights(model, tensors)  # copy_ converts dtype and device
    return model.eval()


def _config_of_folder(folder: Path, drop_rate: float | None) -> GPTConfig:
    """The GPTConfig of a save_pretrained folder, with `drop_rate` replacing the file's dropout."""
    for file in ("config.json", "model.safetensors"):
        if not (folder / file).is_file():
            raise FileNotFoundError(
                f"{folder} has no {file}; load_gpt2 needs config.json and model.safetensors "
                "as written by transformers' save_pretrained (sharded checkpoints are not supported)"
            )
    try:
        with open(folder / "config.json", encoding="utf-8") as f:
            hf = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{folder / 'config.json'} is not valid JSON ({e})") from None
    if not isinstance(hf, dict):
        raise ValueError(f"{folder / 'config.json'} holds a JSON {type(hf).__name__}, not an object")
    missing = [k for k in ("vocab_size", "n_positions", "n_embd", "n_head", "n_layer") if k not in hf]
    if missing:
        raise ValueError(f"{folder / 'config.json'} lacks {', '.join(missing)}; it is not a GPT-2 "
                         "config.json as save_pretrained writes it")
    cfg = config_from_hf(hf)
    return cfg if drop_rate is None else cfg.replace(drop_rate=drop_rate)


_SHAPE_FIELDS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers")


def _check_size(name: str, folder: Path, cfg: GPTConfig) -> None:
    """A GPT2_DIR folder named after a size must hold that size's shapes."""
    want = GPT_CONFIGS[name]
    wrong = [f"{k} {getattr(cfg, k)} (needs {getattr(want, k)})" for k in _SHAPE_FIELDS
             if getattr(cfg, k) != getattr(want, k)]
    if wrong:
        raise ValueError(f"{folder}/config.json does not describe {name}: {', '.join(wrong)}; "
                         f"put {name}'s own files in that folder")


def load_gpt2(name_or_dir: str | os.PathLike, device: str | torch.device = "cpu",
              dtype: torch.dtype | None = None, drop_rate: float | None = None) -> GPTModel:
    """OpenAI's pretrained GPT-2 as a `ch04_gpt.GPTModel`, in eval mode.

    Args:
        name_or_dir: "gpt2", "gpt2-medium", "gpt2-large" or "gpt2-xl": taken from
            `$GPT2_DIR/<name>/` when that folder holds it, else from the Hugging Face Hub (the
            Hugging Face cache first; see `gpt2_hub`), verified by sha256. Or a folder holding
            `config.json` and `model.safetensors` as transformers' `save_pretrained` writes them.
        device: where the model's parameters are created ("cpu", "cuda", "mps").
        dtype: parameter dtype, e.g. torch.bfloat16; None keeps float32 (the file's tensors,
            F32, F16 or BF16, are converted as they are copied).
        drop_rate: dropout of the built model; None keeps GPT-2's 0.1. Fine-tuning here uses 0.0,
            as the book does (see `load_base_model`).

    Raises `gpt2_hub.GPT2Unavailable` (a `ch02_data.DownloadError`, one sentence naming GPT2_DIR
    and HF_ENDPOINT) when a named size cannot be obtained, FileNotFoundError for a folder missing
    a file, ValueError for an unsupported or wrong-sized config or a damaged file, or one that does
    not fit the config (another size, or weights in nn.Linear's layout instead of GPT-2's Conv1D
    layout), naming the file.
    """
    number_in("drop_rate", drop_rate, 0, 1, closed="[)", none_means="the checkpoint's own dropout")
    if isinstance(name_or_dir, str) and name_or_dir in GPT2_HUB:
        name = name_or_dir
        folder = local_folder(name)
        if folder is not None:  # $GPT2_DIR/<name>: a classroom's copy, or the tests' stand-ins
            cfg = _config_of_folder(folder, drop_rate)
            _check_size(name, folder, cfg)
            return load_gpt2_from_file(cfg, folder / "model.safetensors", device, dtype)
        cfg = GPT_CONFIGS[name] if drop_rate is None else GPT_CONFIGS[name].replace(drop_rate=drop_rate)
        return load_gpt2_from_file(cfg, download_from_hub(name), device, dtype)
    folder = Path(name_or_dir)
    if not folder.is_dir():
        raise ValueError(
            f"{name_or_dir!r} is neither a GPT-2 name ({', '.join(GPT2_SIZES)}) nor a folder"
        )
    return load_gpt2_from_file(_config_of_folder(folder, drop_rate), folder / "model.safetensors",
                               device, dtype)
