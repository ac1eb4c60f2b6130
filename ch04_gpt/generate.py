"""Greedy text generation, the simplest way to turn next-token logits into text."""

from __future__ import annotations

import torch
import torch.nn as nn


@torch.no_grad()
def generate_text_simple(
    model: nn.Module, idx: torch.Tensor, max_new_tokens: int, context_size: int
) -> torch.Tensor:
    """Append `max_new_tokens` greedily chosen tokens to `idx` (B, T); return (B, T + max_new_tokens).

    Each step feeds at most the last `context_size` tokens (the model's window), takes the
    logits of the last position, and appends the most likely token.
    """
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]  # crop to the window
        logits = model(idx_cond)[:, -1, :]  # (B, V): only the last position predicts the next token
        next_id = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
        idx = torch.cat([idx, next_id], dim=1)  # (B, T + 1)
    return idx
