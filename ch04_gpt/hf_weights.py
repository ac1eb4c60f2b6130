"""Copy GPT-2 weights in Hugging Face's naming into a GPTModel.

This is the one mapping between the two layouts. The tests use it to prove GPTModel is GPT-2;
chapter 5's `load_gpt2` streams tensors from a `model.safetensors` file through it.

Hugging Face's GPT-2 stores linear layers as `Conv1D` with weights of shape (in, out), the
transpose of `nn.Linear`'s (out, in), and keeps queries, keys and values in one matrix
`c_attn` of shape (C, 3C).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .model import GPTModel

# Per-block names: Hugging Face suffix -> (our suffix, transpose?)
_BLOCK_MAP = {
    "ln_1.weight": ("norm1.weight", False),
    "ln_1.bias": ("norm1.bias", False),
    "attn.c_proj.weight": ("att.out_proj.weight", True),
    "attn.c_proj.bias": ("att.out_proj.bias", False),
    "ln_2.weight": ("norm2.weight", False),
    "ln_2.bias": ("norm2.bias", False),
    "mlp.c_fc.weight": ("ff.fc1.weight", True),
    "mlp.c_fc.bias": ("ff.fc1.bias", False),
    "mlp.c_proj.weight": ("ff.fc2.weight", True),
    "mlp.c_proj.bias": ("ff.fc2.bias", False),
}
_TOP_MAP = {
    "wte.weight": "tok_emb.weight",
    "wpe.weight": "pos_emb.weight",
    "ln_f.weight": "final_norm.weight",
    "ln_f.bias": "final_norm.bias",
    "lm_head.weight": "out_head.weight",
}


# Hugging Face's Conv1D weights, (in, out). A file in nn.Linear's layout (out, in) is refused: its
# square matrices (attn.c_proj, C x C) look the same in both layouts, so only the non-square ones
# (c_attn C x 3C, c_fc C x H, mlp.c_proj H x C) can tell, and every one of them must say (in, out).
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def _split(name: str) -> tuple[str, int | None, str]:
    """("top" or "block", layer index or None, suffix) of a Hugging Face GPT-2 tensor name."""
    name = name.removeprefix("transformer.")
    if name in _TOP_MAP:
        return "top", None, name
    parts = name.split(".", 2)
    if len(parts) == 3 and parts[0] == "h" and parts[1].isdigit():
        return "block", int(parts[1]), parts[2]
    raise KeyError(f"unexpected GPT-2 tensor {name!r}")


def _expected_shape(params: dict[str, torch.Tensor], n_layers: int, name: str) -> tuple[int, ...] | None:
    """The shape tensor `name` must have in a Hugging Face GPT-2 file for a model with these
    parameters; None for tensors that are skipped (causal-mask buffers of old checkpoints)."""
    kind, layer, suffix = _split(name)
    if kind == "top":
        # A tied head is listed once, as tok_emb.weight; it has the same shape.
        return tuple(params.get(_TOP_MAP[suffix], params["tok_emb.weight"]).shape)
    if layer >= n_layers:
        raise ValueError(f"{name} belongs to layer {layer}, but the model has n_layers={n_layers}; "
                         "the checkpoint is for a deeper model")
    if suffix in ("attn.bias", "attn.masked_bias"):
        return None
    if suffix in ("attn.c_attn.weight", "attn.c_attn.bias"):
        ours, transpose = f"att.W_query.{suffix.rsplit('.', 1)[1]}", False
    elif suffix in _BLOCK_MAP:
        ours, transpose = _BLOCK_MAP[suffix]
    else:
        raise KeyError(f"unexpected GPT-2 tensor {name!r}")
    p = params.get(f"blocks.{layer}.{ours}")
    if p is None:  # e.g. a model built with qkv_bias=False
        raise KeyError(f"{name} has no counterpart blocks.{layer}.{ours} in the model; check its config")
    shape = tuple(p.shape)
    if suffix.startswith("attn.c_attn."):
        return (shape[1], 3 * shape[0]) if len(shape) == 2 else (3 * shape[0],)  # q, k, v side by side
    return shape[::-1] if transpose else shape


def _check_shape(params: dict[str, torch.Tensor], n_layers: int, name: str, shape: Iterable[int]) -> None:
    expected = _expected_shape(params, n_layers, name)
    shape = tuple(shape)
    if expected is None or shape == expected:
        return
    if name.endswith(_CONV1D) and shape == expected[::-1]:
        raise ValueError(
            f"{name} has shape {shape}, the nn.Linear layout (out, in), where GPT-2 files store Conv1D "
            f"weights as (in, out) = {expected}; a file in the other layout is refused because its square "
            "attn.c_proj matrices cannot be told apart: re-save the model with transformers' save_pretrained"
        )
    raise ValueError(f"{name} has shape {shape}, but this model needs {expected}; the checkpoint was "
                     "saved for another model size (compare its config.json)")


def check_hf_shapes(model: GPTModel, shapes: Iterable[tuple[str, Iterable[int]]]) -> None:
    """Check (name, shape) pairs of a Hugging Face GPT-2 file against `model` before copying
    anything: unknown names raise KeyError; another model size, or a weight in nn.Linear's
    layout (out, in) instead of Conv1D's (in, out), raise a ValueError naming the tensor."""
    params = dict(model.named_parameters())
    for name, shape in shapes:
        _check_shape(params, len(model.blocks), name, shape)


def _targets(name: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Our parameter name(s) and the matching tensor(s) for one Hugging Face tensor."""
    kind, layer, suffix = _split(name)
    if kind == "top":
        return [(_TOP_MAP[suffix], tensor)]
    prefix = f"blocks.{layer}."
    if suffix in ("attn.bias", "attn.masked_bias"):  # causal-mask buffers in old checkpoints
        return []
    if suffix in ("attn.c_attn.weight", "attn.c_attn.bias"):
        part = suffix.rsplit(".", 1)[1]  # "weight" or "bias"
        q, k, v = tensor.chunk(3, dim=-1)  # (C, 3C) -> 3 x (C, C), or (3C,) -> 3 x (C,)
        if part == "weight":
            q, k, v = q.t(), k.t(), v.t()
        return [(f"{prefix}att.W_{n}.{part}", t) for n, t in zip(("query", "key", "value"), (q, k, v))]
    ours, transpose = _BLOCK_MAP[suffix]
    return [(prefix + ours, tensor.t() if transpose else tensor)]


@torch.no_grad()
def load_hf_gpt2_weights(model: GPTModel, tensors: Iterable[tuple[str, torch.Tensor]]) -> GPTModel:
    """Copy (name, tensor) pairs in Hugging Face GPT-2 naming into `model`, in place.

    `tensors` may be a generator that yields one tensor at a time (as a safetensors reader
    does), so no second full copy of the weights is ever held. Each tensor is copied into the
    existing parameter (converting dtype if needed). Raises if a parameter is left unset, a
    shape does not match, or a weight is in nn.Linear's layout rather than Conv1D's (see
    `check_hf_shapes`); the model may then be partly overwritten.
    """
    params = dict(model.named_parameters())  # tied weights appear once, under tok_emb.weight
    unset = set(params)
    saw_lm_head = False
    for name, tensor in tensors:
        _check_shape(params, len(model.blocks), name, tensor.shape)
        for ours, t in _targets(name, tensor):
            if ours == "out_head.weight":
                saw_lm_head = True
                if model.cfg.tie_weights:
                    continue  # the same matrix as wte, already copied
            params[ours].copy_(t)  # shapes were checked above
            unset.discard(ours)
    if "out_head.weight" in unset and not saw_lm_head:
        # A checkpoint saved without lm_head (GPT-2 ties it): the head is the token embedding.
        params["out_head.weight"].copy_(params["tok_emb.weight"])
        unset.discard("out_head.weight")
    if unset:
        raise KeyError(f"parameters not found in the checkpoint: {sorted(unset)[:5]} ...")
    return model
