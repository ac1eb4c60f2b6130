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


def _targets(name: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Our parameter name(s) and the matching tensor(s) for one Hugging Face tensor."""
    name = name.removeprefix("transformer.")
    if name in _TOP_MAP:
        return [(_TOP_MAP[name], tensor)]
    if not name.startswith("h."):
        raise KeyError(f"unexpected GPT-2 tensor {name!r}")
    _, layer, suffix = name.split(".", 2)
    prefix = f"blocks.{layer}."
    if suffix in ("attn.bias", "attn.masked_bias"):  # causal-mask buffers in old checkpoints
        return []
    if suffix in ("attn.c_attn.weight", "attn.c_attn.bias"):
        kind = suffix.rsplit(".", 1)[1]
        q, k, v = tensor.chunk(3, dim=-1)  # (C, 3C) -> 3 x (C, C), or (3C,) -> 3 x (C,)
        if kind == "weight":
            q, k, v = q.t(), k.t(), v.t()
        return [(f"{prefix}att.W_{n}.{kind}", t) for n, t in zip(("query", "key", "value"), (q, k, v))]
    ours, transpose = _BLOCK_MAP[suffix]
    return [(prefix + ours, tensor.t() if transpose else tensor)]


@torch.no_grad()
def load_hf_gpt2_weights(model: GPTModel, tensors: Iterable[tuple[str, torch.Tensor]]) -> GPTModel:
    """Copy (name, tensor) pairs in Hugging Face GPT-2 naming into `model`, in place.

    `tensors` may be a generator that yields one tensor at a time (as a safetensors reader
    does), so no second full copy of the weights is ever held. Each tensor is copied into the
    existing parameter (converting dtype if needed). Raises if a parameter is left unset or a
    shape does not match.
    """
    params = dict(model.named_parameters())  # tied weights appear once, under tok_emb.weight
    unset = set(params)
    saw_lm_head = False
    for name, tensor in tensors:
        for ours, t in _targets(name, tensor):
            if ours == "out_head.weight":
                saw_lm_head = True
                if model.cfg.tie_weights:
                    continue  # the same matrix as wte, already copied
            p = params[ours]
            if p.shape != t.shape:
                raise ValueError(f"{name} -> {ours}: shape {tuple(t.shape)} != {tuple(p.shape)}")
            p.copy_(t)
            unset.discard(ours)
    if "out_head.weight" in unset and not saw_lm_head:
        # A checkpoint saved without lm_head (GPT-2 ties it): the head is the token embedding.
        params["out_head.weight"].copy_(params["tok_emb.weight"])
        unset.discard("out_head.weight")
    if unset:
        raise KeyError(f"parameters not found in the checkpoint: {sorted(unset)[:5]} ...")
    return model
