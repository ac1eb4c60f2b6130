"""Decoding: turning next-token logits into text, with temperature, top-k, top-p and a KV cache.

Notation: B batch, T time (tokens), V vocabulary size.

Chapter 4's `generate_text_simple` always takes the most likely token and re-reads the whole
sequence at every step. `generate` adds the two things every real decoder has:
- sampling controls: temperature, top-k and top-p (nucleus) filtering, an end-of-text token;
- a KV cache: the prompt is read once ("prefill"), then each step feeds only the newest token,
  reusing the keys and values of the earlier ones. Tests check that it changes nothing but speed.
"""

from __future__ import annotations


import torch
import torch.nn as nn

from ch02_data.checks import finite_number, int_at_least, is_int, number_in, positive_int

_F32 = torch.finfo(torch.float32)


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide logits (..., V) by `temperature` > 0: below 1 sharpens the distribution, above 1 flattens it."""
    finite_number("temperature", temperature, 0, above=True,
                  meaning="temperature 0 means greedy: take the argmax instead")
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the `k` largest logits in each row of (..., V); set the others to -inf (probability 0).

    Exactly k survive even when several logits tie at the k-th value (ties go to the lower index).
    """
    positive_int("k", k)
    k = min(k, logits.size(-1))
    top = logits.topk(k, dim=-1).indices  # (..., k)
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, top, True)  # (..., V)
    return logits.masked_fill(~keep, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering (Holtzman et al. 2020) of logits (..., V).

    Keep the smallest set of most likely tokens whose probabilities sum to at least `p`; the
    most likely token is always kept. The others get -inf.
    """
    number_in("p", p, 0, 1, closed="(]")
    if p == 1.0:
        return logits  # everything is kept; skip the sort (and rounding in a long cumsum)
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (..., V) each
    probs = torch.softmax(sorted_logits, dim=-1)
    # Mass of the strictly more likely tokens, i.e. an exclusive cumulative sum. A token is
    # needed only while the set before it has not reached p yet; the first one always is.
    mass_before = probs.cumsum(dim=-1) - probs
    drop_sorted = mass_before >= p
    drop_sorted[..., 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one token id per row from logits (B, V); returns (B, 1) int64.

    temperature 0 is greedy (argmax; top_k and top_p cannot change the argmax, so they are
    ignored). Otherwise: temperature, then top-k, then top-p, then a softmax and one draw
    with `torch.multinomial` (pass a seeded `generator`, on the logits' device, to reproduce).

    Any finite temperature > 0 works, however small: the logits are shifted so that each row's
    maximum is 0 before they are divided, which cannot overflow. A temperature near 0 thus
    gives the most likely token all the probability (shared equally among exact ties), the
    greedy limit. A row that is NaN, contains +inf or is -inf throughout raises a ValueError.
    """
    _check_sampling(temperature, top_k, top_p)
    _check_logits(logits)
    return _sample(logits, temperature, top_k, top_p, generator)


def _sample(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
            generator: torch.Generator | None) -> torch.Tensor:
    """`sample_next_token` without the checks; generate() makes them once per call or step."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float()  # float32: bf16 sampling is coarse
    # Subtract the row maximum first. Softmax ignores the shift, and every value is then <= 0:
    # divided by any positive temperature it stays <= 0 (at worst -inf), where logits / 1e-45
    # overflowed to inf and inf - inf gave the NaN that crashed multinomial. (It also keeps
    # exp() from overflowing; sampling on MPS has produced NaNs/garbage without the shift.)
    logits = logits - logits.amax(dim=-1, keepdim=True)
    # In float32 a temperature below its smallest normal number would round to 0 (0 / 0 = NaN),
    # and one above its largest to inf; both ends change nothing else.
    logits = apply_temperature(logits, min(max(temperature, _F32.tiny), _F32.max))
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = torch.softmax(logits, dim=-1)  # (B, V), filtered tokens exactly 0; the top one kept
    return torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)


def _check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    finite_number("temperature", temperature, 0, meaning="0 means greedy")
    positive_int("top_k", top_k, none_means="every token kept")
    number_in("top_p", top_p, 0, 1, closed="(]", none_means="every token kept")


def _check_logits(logits: torch.Tensor, step: int | None = None) -> None:
    """Refuse rows without a finite maximum: argmax of an all-NaN row silently returns token 0,
    and multinomial crashes on the NaN probabilities that NaN or +inf logits give."""
    # max() propagates NaN, so one reduction finds NaN, +inf, or a row that is -inf throughout.
    # (-inf elsewhere is fine: it means probability 0.) Reading the result is one host sync.
    bad = ~torch.isfinite(logits.detach().amax(dim=-1)).reshape(-1)  # (B,); (1,) for logits (V,)
    if bad.any():
        row = bad.nonzero()[0, 0].item()
        problem = "without a finite maximum (NaN, +inf, or -inf for every token)"
        if step is None:
            raise ValueError(f"logits row {row} is {problem}, so no token can be chosen; check the model "
                             "that produced it, e.g. for a training run that diverged")
        raise ValueError(f"the model produced logits {problem} at step {step} in row {row}; check its "
                         "weights, e.g. for a training run that diverged, or run it in float32")


def _check_args(model: nn.Module, idx: torch.Tensor, max_new_tokens: int, context_size: int,
                temperature: float, top_k: int | None, top_p: float | None, eos_id: int | None) -> None:
    if not isinstance(idx, torch.Tensor):
        raise TypeError(f"idx must be a (B, T) int64 tensor, got {type(idx).__name__}; "
                        "make one with torch.tensor([ids])")
    if idx.dim() != 2 or idx.size(1) == 0 or idx.dtype != torch.long:
        hint = "; add a batch dimension with idx.unsqueeze(0)" if idx.dim() == 1 else ""
        raise ValueError(f"idx must be a (B, T) int64 tensor with T >= 1, got {tuple(idx.shape)} "
                         f"{idx.dtype}{hint}")
    int_at_least("max_new_tokens", max_new_tokens, 0)
    n_ctx = model.cfg.context_length
    if not is_int(context_size) or not 1 <= context_size <= n_ctx:
        raise ValueError(f"context_size={context_size!r}; use an integer in [1, {n_ctx}], the model's "
                         "context_length (it has no position embeddings beyond), or None for all of it")
    _check_sampling(temperature, top_k, top_p)
    if eos_id is not None:
        V = getattr(model.cfg, "vocab_size", None)
        if not is_int(eos_id) or eos_id < 0 or (V is not None and eos_id >= V):
            # An id the model never emits would never stop a row; a negative one would pad with garbage.
            allowed = f"a token id in [0, {V - 1}]" if V is not None else "a token id >= 0"
            raise ValueError(f"eos_id={eos_id!r}; use {allowed}, or None")


@torch.no_grad()
def generate(
    model: nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    context_size: int | None = None,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Extend token ids `idx` (B, T) by up to `max_new_tokens` tokens; return (B, T + n) int64.

    Args:
        model: a `ch04_gpt.GPTModel` (any module with `.cfg.context_length`, `forward(idx,
            kv_cache, start_pos)` and `new_kv_cache(max_len)` works).
        idx: prompt token ids (B, T), all rows the same length, on the model's device.
        max_new_tokens: the most tokens to append (fewer only when `eos_id` stops early).
        context_size: how many of the latest tokens the model sees; default (and maximum)
            `model.cfg.context_length`.
        temperature: 0 (default) = greedy, as `ch04_gpt.generate_text_simple`; a finite
            number > 0 samples (a tiny one behaves like greedy, see `sample_next_token`).
        top_k, top_p: optional filters applied before sampling (see `sample_next_token`).
        eos_id: an end-of-text token id. A row that emits it is finished: the eos token is
            kept in the output and the row is filled with further `eos_id`s while other rows
            continue. Generation stops as soon as every row has finished, so a batch of one
            stops right after its eos token.
        use_cache: True (default) reads the prompt once and then one token per step; False
            re-reads the whole window each step. Both give the same tokens.
        generator: optional `torch.Generator` (on the model's device) for reproducible sampling.

    The model is put in eval mode (no dropout) during generation and restored afterwards.
    Each call uses a fresh KV cache. Bad arguments raise a ValueError before any work; logits
    the model makes NaN or inf raise one naming the step.
    """
    if context_size is None:  # not `or`: context_size=0 must be refused, not replaced
        context_size = model.cfg.context_length
    _check_args(model, idx, max_new_tokens, context_size, temperature, top_k, top_p, eos_id)
    was_training = model.training
    model.eval()
    try:
        return _generate(model, idx, max_new_tokens, context_size, temperature, top_k, top_p,
                         eos_id, use_cache, generator)
    finally:
        model.train(was_training)


def _generate(model, idx, max_new_tokens, context_size, temperature, top_k, top_p,
              eos_id, use_cache, generator) -> torch.Tensor:
    B = idx.size(0)
    # A fresh cache for every call, so nothing of an earlier prompt can leak into this one.
    cache = model.new_kv_cache(context_size) if use_cache else None
    finished = torch.zeros(B, dtype=torch.bool, device=idx.device)  # (B,)
    for step in range(max_new_tokens):
        if cache is None or idx.size(1) > context_size:
            # No cache, or the sequence no longer fits the window. GPT-2 has absolute position
            # embeddings: once the window slides by one token, every token in it sits at a new
            # position, so every key and value in the cache is stale. The only exact update is
            # to recompute the whole window, which is what the uncached path does each step.
            # (A cache refilled with this window would be full, unable to take even the next
            # token, so it would be rebuilt again at the next step: we skip storing it.)
            # Cheaper schemes exist, e.g. refill with the last half of the window and continue
            # cached from there, but they see less context than the uncached model does and so
            # produce different tokens.
            logits = model(idx[:, -context_size:])[:, -1, :]  # (B, V)
        elif step == 0:
            # Prefill: read the whole prompt once; the cache now holds its keys and values.
            logits = model(idx, cache, start_pos=0)[:, -1, :]  # (B, V)
        else:
            # Decode: only the newest token goes in; its position continues from the cache
            # (start_pos makes the model refuse anything else).
            logits = model(idx[:, -1:], cache, start_pos=idx.size(1) - 1)[:, -1, :]  # (B, V)

        _check_logits(logits, step)  # NaN logits would otherwise become token 0 or crash multinomial
        next_ids = _sample(logits, temperature, top_k, top_p, generator)  # (B, 1)
        if eos_id is not None:
            next_ids = next_ids.masked_fill(finished[:, None], eos_id)  # finished rows: padding
            finished |= next_ids[:, 0] == eos_id
        idx = torch.cat([idx, next_ids], dim=1)  # (B, T + 1)
        if eos_id is not None and bool(finished.all()):
            break
    return idx
