"""Greedy text generation, the simplest way to turn next-token logits into text."""

from __future__ import annotations

import torch
import torch.nn as nn

from ch02_data.checks import int_at_least, positive_int


@torch.no_grad()
def generate_text_simple(
    model: nn.Module, idx: torch.Tensor, max_new_tokens: int, context_size: int
) -> torch.Tensor:
    """Append `max_new_tokens` greedily chosen tokens to `idx` (B, T); return (B, T + max_new_tokens).

    Each step feeds at most the last `context_size` tokens (the model's window), takes the
    logits of the last position, and appends the most likely token. Logits that are NaN or
    inf raise a ValueError: argmax would otherwise pick a meaningless token (0 for all-NaN).
    The model runs in eval mode (no dropout, so greedy is deterministic); its mode is restored.
    """
    positive_int("context_size", context_size, "the model's context_length")  # idx[:, -0:] is all
    int_at_least("max_new_tokens", max_new_tokens, 0)
    if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.dtype.is_floating_point:
        got = f"shape {tuple(idx.shape)}, {idx.dtype}" if isinstance(idx, torch.Tensor) else type(idx).__name__
        raise ValueError(f"idx has {got}; use an integer tensor of token ids of shape (B, T), "
                         "e.g. torch.tensor([ids])")
    if idx.shape[1] == 0:  # the model would have no position to predict from
        raise ValueError(f"idx has shape {tuple(idx.shape)}: an empty prompt; give at least one "
                         "token, e.g. the end-of-text id 50256 to start from nothing")
    was_training = model.training
    model.eval()  # dropout in train mode would make greedy decoding differ run to run
    try:
        for step in range(max_new_tokens):
            idx_cond = idx[:, -context_size:]  # crop to the window
            logits = model(idx_cond)[:, -1, :]  # (B, V): the last position predicts the next token
            # max() propagates NaN, so one reduction finds NaN, +inf, or a row -inf throughout.
            if not torch.isfinite(logits.amax(dim=-1)).all():
                raise ValueError(f"the model produced non-finite logits (NaN or inf) at step {step}; "
                                 "check its weights, e.g. for a training run that diverged")
            next_id = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
            idx = torch.cat([idx, next_id], dim=1)  # (B, T + 1)
    finally:
        model.train(was_training)
    return idx
