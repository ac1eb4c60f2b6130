"""LoRA: low-rank adaptation (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models").

Fine-tuning changes a pretrained weight W (out x in) by some update dW. LoRA keeps W frozen and
learns the update as a product of two thin matrices, dW = (alpha / rank) * B @ A, with
A (rank x in) and B (out x rank). For GPT-2's 768 x 768 projections at rank 8 that is 12,288
trainable numbers instead of 589,824. B starts at zero, so at the start the model computes
exactly what the pretrained one did, and training departs from it smoothly.

The scale alpha / rank (the paper's Section 4.1) keeps the update's size roughly independent of
the rank: with alpha held fixed, trying another rank needs no new learning rate.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ch02_data.checks import finite_number, positive_int


class LoRALinear(nn.Module):
    """`linear(x) + (alpha / rank) * x @ A^T @ B^T`: a frozen nn.Linear plus a trainable
    low-rank update. (..., in) -> (..., out), the same shapes as the wrapped layer.

    A is drawn like an nn.Linear weight (Kaiming-uniform, as the paper's reference code does),
    B is zero, so the output equals `linear(x)` until B has been trained. The wrapped layer's
    parameters are frozen (requires_grad=False). `weight` and `bias` read like an nn.Linear's:
    `weight` is the effective merged matrix W + (alpha / rank) * B @ A, so code that reads a
    projection's weight directly (the fused-QKV fast path) sees the adapted layer.
    """

    def __init__(self, linear: nn.Linear, rank: int = 8, alpha: float = 16.0):
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear is a {type(linear).__name__}; LoRALinear wraps an nn.Linear")
        positive_int("rank", rank)
        finite_number("alpha", alpha, 0, above=True)
        self.linear = linear.requires_grad_(False)
        self.rank = rank
        self.alpha = float(alpha)
        self.scaling = self.alpha / rank
        w = linear.weight
        self.A = nn.Parameter(torch.empty(rank, linear.in_features, device=w.device, dtype=w.dtype))
        self.B = nn.Parameter(torch.zeros(linear.out_features, rank, device=w.device, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # nn.Linear's own init for (rank, in)

    @property
    def in_features(self) -> int:
        return self.linear.in_features

    @property
    def out_features(self) -> int:
        return self.linear.out_features

    @property
    def weight(self) -> torch.Tensor:
        """The effective (out, in) weight W + scaling * B @ A (differentiable in A and B)."""
        return self.linear.weight + self.scaling * (self.B @ self.A)

    @property
    def bias(self) -> torch.Tensor | None:
        return self.linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x @ A^T first: (..., in) -> (..., rank) -> (..., out), never forming the (out, in) update.
        return self.linear(x) + self.scaling * ((x @ self.A.T) @ self.B.T)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}"


def add_lora(model: nn.Module, rank: int = 8, alpha: float = 16.0) -> nn.Module:
    """Wrap every nn.Linear inside `model.blocks` (attention projections and feed-forward layers)
    in a `LoRALinear`, freeze every other parameter, and return the model (changed in place).

    Only the LoRA matrices train afterwards. A classifier's new head (`to_classifier`) is frozen
    too; unfreeze it yourself when it should learn: `model.out_head.requires_grad_(True)`.
    """
    if not hasattr(model, "blocks"):
        raise ValueError(f"model is a {type(model).__name__} without .blocks; add_lora needs a GPTModel")
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError("model already has LoRA layers; add_lora was called twice")
    targets = [
        (parent, name, child)
        for parent in model.blocks.modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.Linear)
    ]  # collected first: replacing children while iterating over modules() would skip some
    model.requires_grad_(False)
    for parent, name, child in targets:
        setattr(parent, name, LoRALinear(child, rank, alpha))  # A and B trainable, child frozen
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every `LoRALinear` by a plain nn.Linear holding its merged weight
    W + (alpha / rank) * B @ A: the same outputs, no extra cost at inference. In place."""
    targets = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, LoRALinear)
    ]
    for parent, name, child in targets:
        merged = child.linear
        with torch.no_grad():
            merged.weight.copy_(child.weight)
        setattr(parent, name, merged)
    return model
