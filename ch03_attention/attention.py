"""Causal multi-head self-attention, the heart of a GPT.

Notation: B batch, T time (tokens), C channels (d_out), nh heads, hs head size (C // nh).

Two paths compute the same thing:
- the readable path (default) writes scores, mask, softmax and weighted sum out by hand;
- the fast path (`use_sdpa=True`) calls PyTorch's fused `scaled_dot_product_attention`;
  `fused_qkv=True`, a separate opt-in, also computes queries, keys and values in one matmul.
Tests check that both give the same outputs and gradients.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ch02_data.checks import number_in, positive_int


class KVCache:
    """Keys and values of one attention layer, kept between generation steps.

    Buffers of shape (B, nh, max_len, hs) are allocated on the first `update` and filled
    left to right, so a step that adds one token copies one token's keys and values only.
    A cache belongs to one batch of sequences: keys of another batch size, head layout or
    dtype are refused; `reset()` empties it for a new prompt.
    """

    def __init__(self, max_len: int):
        positive_int("max_len", max_len, "the most tokens the cache holds")
        self.max_len = max_len
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.length = 0  # tokens stored so far = position of the next token

    def reset(self) -> None:
        """Forget every stored token, so the next `update` starts a new sequence at position 0."""
        self.k = self.v = None  # reallocated on the next update, for whatever batch size comes
        self.length = 0

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append new keys/values (B, nh, T, hs); return all stored so far (B, nh, length, hs)."""
        B, nh, T, hs = k.shape
        if self.k is None:
            self.k = k.new_empty(B, nh, self.max_len, hs)
            self.v = v.new_empty(B, nh, self.max_len, hs)
        elif (B, nh, hs) != (self.k.size(0), self.k.size(1), self.k.size(3)) or k.dtype != self.k.dtype:
            # Copying would fail obscurely or, for a dtype, convert silently: say what differs.
            held = f"B={self.k.size(0)}, nh={self.k.size(1)}, hs={self.k.size(3)}, {self.k.dtype}"
            raise ValueError(
                f"KV cache holds keys for {held}, got B={B}, nh={nh}, hs={hs}, {k.dtype}; "
                "call reset() on the cache (or make a new one) before feeding another batch"
            )
        if self.length + T > self.max_len:
            raise ValueError(
                f"KV cache full: {self.length} + {T} tokens > max_len {self.max_len}; "
                "make a larger cache or reset() this one"
            )
        self.k[:, :, self.length : self.length + T] = k
        self.v[:, :, self.length : self.length + T] = v
        self.length += T
        return self.k[:, :, : self.length], self.v[:, :, : self.length]


class MultiHeadAttention(nn.Module):
    """Causal multi-head self-attention: (B, T, d_in) -> (B, T, d_out) for any T <= context_length.

    Args:
        d_in: size of each input token vector.
        d_out: size of each output token vector; split evenly across `num_heads` heads.
        context_length: the longest sequence the causal mask is built for.
        dropout: probability of dropping attention weights while training.
        num_heads: number of heads (nh); d_out must be divisible by it.
        qkv_bias: whether the query/key/value projections have a bias (GPT-2 has one).
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        context_length: int,
        dropout: float,
        num_heads: int,
        qkv_bias: bool = False,
    ):
        super().__init__()
        for name, value in [("d_in", d_in), ("d_out", d_out), ("context_length", context_length),
                            ("num_heads", num_heads)]:
            positive_int(name, value)
        number_in("dropout", dropout, 0, 1, closed="[)", meaning="a probability")
        if d_out % num_heads != 0:
            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")
        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads  # hs
        self.context_length = context_length

        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)  # mixes the heads' outputs back together
        self.dropout = nn.Dropout(dropout)

        # True above the diagonal = "future token, may not be attended to".
        # A buffer, not a parameter: it moves with .to(device) but is never trained.
        # persistent=False keeps it out of state_dict (it is rebuilt from context_length).
        mask = torch.triu(torch.ones(context_length, context_length, dtype=torch.bool), diagonal=1)
        self.register_buffer("mask", mask, persistent=False)

        # Fast-path switches (off = the readable path). See GPTModel.set_fast_path.
        self.use_sdpa = False
        self.fused_qkv = False
        # False: every token attends to every token, past and future (an encoder, as in BERT).
        # Chapter 6 measures what that does to a classifier; see GPTModel.set_causal.
        self.causal = True

    def _project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values, each (B, T, C)."""
        if not self.fused_qkv:
            return self.W_query(x), self.W_key(x), self.W_value(x)
        # One (3C x d_in) matmul instead of three (C x d_in) ones.
        weight = torch.cat([self.W_query.weight, self.W_key.weight, self.W_value.weight])
        bias = None
        if self.W_query.bias is not None:
            bias = torch.cat([self.W_query.bias, self.W_key.bias, self.W_value.bias])
        return F.linear(x, weight, bias).split(self.d_out, dim=-1)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        """x: (B, T, d_in) -> (B, T, d_out). With `kv_cache`, x holds only the new tokens."""
        if x.dim() != 3:
            raise ValueError(f"x must be (B, T, d_in), got shape {tuple(x.shape)}; add a batch dimension "
                             "with x.unsqueeze(0)")
        B, T, _ = x.size()
        start = kv_cache.length if kv_cache is not None else 0  # position of x's first token
        if start + T > self.context_length:
            raise ValueError(f"{start + T} tokens exceed context_length {self.context_length}")

        if kv_cache is not None and not self.causal:
            # Cached keys/values were computed without seeing later tokens: only valid if causal.
            raise ValueError("kv_cache needs causal attention; call set_causal(True) before generating")

        q, k, v = self._project_qkv(x)  # each (B, T, C)
        # Split C into nh heads of size hs and move heads next to batch.
        q = q.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        if kv_cache is not None:
            k, v = kv_cache.update(k, v)  # (B, nh, start + T, hs): earlier tokens too

        # Row i of the mask belongs to the query at absolute position start + i. A single new
        # token (T == 1, generation with a cache) may see every stored token: nothing to hide.
        # Bidirectional attention (causal=False) hides nothing.
        mask = self.mask[start : start + T, : start + T] if T > 1 and self.causal else None
        if self.use_sdpa:
            ctx = F.scaled_dot_product_attention(
                q, k, v,
                attn_mask=None if start == 0 or mask is None else ~mask,  # True = attend
                dropout_p=self.dropout.p if self.training else 0.0,
                is_causal=start == 0 and mask is not None,
            )  # (B, nh, T, hs)
        else:
            # Scaled dot products: dividing by sqrt(hs) keeps the scores' variance near 1, so the
            # softmax does not saturate into one-hot weights with vanishing gradients. Scaling q
            # before the product gives the same scores and touches a (T, hs) tensor, not (T, T).
            scores = (q / math.sqrt(self.head_dim)) @ k.transpose(-2, -1)  # (B, nh, T, start + T)
            if mask is not None:
                scores = scores.masked_fill(mask, float("-inf"))  # hide the future
            weights = torch.softmax(scores, dim=-1)
            weights = self.dropout(weights)
            ctx = weights @ v  # (B, nh, T, hs)

        ctx = ctx.transpose(1, 2).contiguous().view(B, T, self.d_out)  # (B, T, C): heads side by side
        return self.out_proj(ctx)
