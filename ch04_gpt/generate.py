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
    logits of the last position, and appends the most likely token. Logits that are NaN or
    inf raise a ValueError: argmax would otherwise pick a meaningless token (0 for all-NaN).
    """
    if not isinstance(context_size, int) or context_size < 1:  # idx[:, -0:] would be everything
        raise ValueError(f"context_size={context_size!r}; use an int >= 1 (the model's context_length)")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens!r}; use an int >= 0")
    for step in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]  # crop to the window
        logits = model(idx_cond)[:, -1, :]  # (B, V): only the last position predicts the next token
        # max() propagates NaN, so one reduction finds NaN, +inf, or a row that is -inf throughout.
        if not torch.isfinite(logits.amax(dim=-1)).all():
            raise ValueError(f"the model produced non-finite logits (NaN or inf) at step {step}; "
                             "check its weights, e.g. for a training run that diverged")
        next_id = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
        idx = torch.cat([idx, next_id], dim=1)  # (B, T + 1)
    return idx
