"""GPT-2, assembled from the pieces of chapters 3 and 4.

Notation: B batch, T time (tokens), C channels (emb_dim), V vocabulary size.
The model maps token ids (B, T) to next-token logits (B, T, V) and returns nothing else;
losses live in chapter 5.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ch03_attention import KVCache, MultiHeadAttention

from .config import GPTConfig


class LayerNorm(nn.Module):
    """Normalise each token vector to mean 0 and variance 1, then scale and shift (Ba et al. 2016)."""

    def __init__(self, emb_dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps  # keeps the division finite; 1e-5 as in GPT-2
        self.weight = nn.Parameter(torch.ones(emb_dim))  # learned scale
        self.bias = nn.Parameter(torch.zeros(emb_dim))  # learned shift
        self.fast = False  # True: PyTorch's fused kernel (same result)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast:
            return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        # Mean and (biased, as nn.LayerNorm) variance of each token vector, in one pass.
        var, mean = torch.var_mean(x, dim=-1, keepdim=True, correction=0)
        # Multiplying by 1/sqrt is cheaper than dividing by sqrt, forwards and backwards.
        x_hat = (x - mean) * torch.rsqrt(var + self.eps)
        return self.weight * x_hat + self.bias


class RMSNorm(nn.Module):
    """Scale each token vector by its root mean square; no centring, no bias (Zhang & Sennrich 2019)."""

    def __init__(self, emb_dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)


class GELU(nn.Module):
    """GELU in the tanh approximation GPT-2 was trained with (Hendrycks & Gimpel 2016)."""

    def __init__(self):
        super().__init__()
        self.fast = False  # True: PyTorch's fused kernel, approximate="tanh" (same formula)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast:
            return F.gelu(x, approximate="tanh")
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


class FeedForward(nn.Module):
    """Position-wise MLP: expand C to H, non-linearity, project back to C. (B, T, C) -> (B, T, C).

    With activation="swiglu" (Shazeer 2020), a second expansion gates the first:
    fc2(silu(fc_gate(x)) * fc1(x)).
    """

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        C = cfg.emb_dim
        hidden = cfg.ff_hidden_dim
        if hidden is None:
            # SwiGLU has three matrices instead of two; 2/3 of 4C keeps the parameter count equal.
            hidden = 4 * C if cfg.activation != "swiglu" else int(8 * C / 3)
        self.fc1 = nn.Linear(C, hidden)
        self.fc_gate = nn.Linear(C, hidden) if cfg.activation == "swiglu" else None
        self.act = {"gelu": GELU, "relu": nn.ReLU, "silu": nn.SiLU, "swiglu": nn.SiLU}[cfg.activation]()
        self.fc2 = nn.Linear(hidden, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fc_gate is not None:
            return self.fc2(self.act(self.fc_gate(x)) * self.fc1(x))
        return self.fc2(self.act(self.fc1(x)))


def make_norm(cfg: GPTConfig) -> nn.Module:
    return LayerNorm(cfg.emb_dim) if cfg.norm == "layernorm" else RMSNorm(cfg.emb_dim)


class TransformerBlock(nn.Module):
    """Attention then feed-forward, each wrapped in a shortcut (residual) connection.

    Pre-LN (GPT-2):  x = x + att(norm1(x));  x = x + ff(norm2(x))
    Post-LN (2017):  x = norm1(x + att(x));  x = norm2(x + ff(x))
    """

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.pre_norm = cfg.norm_position == "pre"
        self.norm1 = make_norm(cfg)
        self.att = MultiHeadAttention(
            d_in=cfg.emb_dim,
            d_out=cfg.emb_dim,
            context_length=cfg.context_length,
            dropout=cfg.drop_rate,
            num_heads=cfg.n_heads,
            qkv_bias=cfg.qkv_bias,
        )
        self.norm2 = make_norm(cfg)
        self.ff = FeedForward(cfg)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        """(B, T, C) -> (B, T, C)."""
        if self.pre_norm:
            x = x + self.drop_shortcut(self.att(self.norm1(x), kv_cache))
            x = x + self.drop_shortcut(self.ff(self.norm2(x)))
        else:
            x = self.norm1(x + self.drop_shortcut(self.att(x, kv_cache)))
            x = self.norm2(x + self.drop_shortcut(self.ff(x)))
        return x


class GPTModel(nn.Module):
    """A GPT-2-style decoder: token ids (B, T) -> next-token logits (B, T, V).

    Embeddings (token + absolute position) -> n_layers transformer blocks -> final norm ->
    linear output head. With `cfg.tie_weights` the head reuses the token-embedding matrix
    (Press & Wolf 2017), as GPT-2 does, saving V*C parameters.
    """

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)  # token id -> vector
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)  # position -> vector
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        # Post-LN blocks already end in a norm, so only pre-LN needs a final one.
        self.final_norm = make_norm(cfg) if cfg.norm_position == "pre" else nn.Identity()
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.out_head.weight = self.tok_emb.weight  # one matrix, two uses
        self.apply(self._init_weights)
        # GPT-2 scales the init of layers that write into the residual stream by 1/sqrt(2 * n_layers)
        # (two per block), so the stream's variance does not grow with depth (Radford et al. 2019).
        for name, p in self.named_parameters():
            if name.endswith("att.out_proj.weight") or name.endswith("ff.fc2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)  # GPT-2's init
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(
        self, idx: torch.Tensor, kv_cache: list[KVCache] | None = None, start_pos: int | None = None
    ) -> torch.Tensor:
        """idx: (B, T) token ids (int64) -> logits (B, T, V) in the parameters' dtype.

        The output head applied to `hidden_states` (same arguments); see there.
        """
        return self.out_head(self.hidden_states(idx, kv_cache, start_pos))  # (B, T, V)

    def hidden_states(
        self, idx: torch.Tensor, kv_cache: list[KVCache] | None = None, start_pos: int | None = None
    ) -> torch.Tensor:
        """idx: (B, T) token ids (int64) -> the final hidden states (B, T, C), after the final norm.

        `forward` is `out_head(hidden_states(...))`. A loss that needs the logits of a few
        positions only (chapter 7's responses, DPO's response tokens) can apply `out_head` to
        those rows and skip the (B, T, V) tensor, which dominates the cost of small models.

        With `kv_cache` (from `new_kv_cache`), idx holds only tokens not yet seen; their
        positions continue from the tokens already in the cache. `start_pos` is optional: the
        position the caller means idx's first token to have. Given, it must equal the number
        of tokens in the cache (0 without one), so that feeding a prompt again into a filled
        cache is refused instead of silently placing it after the first copy.

        Ids outside [0, V) raise a ValueError naming the first one (one min/max per call;
        skipped while torch.compile traces the model).
        """
        self._check_ids(idx)
        B, T = idx.size()
        start = self._cache_start(kv_cache) if kv_cache is not None else 0
        if start_pos is not None and start_pos != start:
            if kv_cache is None:
                raise ValueError(f"start_pos={start_pos} needs a kv_cache holding the first {start_pos} "
                                 "tokens; without one idx starts at position 0")
            raise ValueError(
                f"start_pos={start_pos}, but kv_cache already holds {start} tokens, so idx would start at "
                f"position {start}; pass only the tokens the cache has not seen, or reset() every layer's "
                "cache to start again"
            )
        if start + T > self.cfg.context_length:
            raise ValueError(
                f"{start + T} tokens exceed context_length {self.cfg.context_length}; "
                "crop the input to the last context_length tokens"
            )
        pos = torch.arange(start, start + T, device=idx.device)  # (T,)
        x = self.tok_emb(idx) + self.pos_emb(pos)  # (B, T, C); positions broadcast over B
        x = self.drop_emb(x)
        for i, block in enumerate(self.blocks):
            x = block(x, kv_cache[i] if kv_cache is not None else None)  # (B, T, C)
        return self.final_norm(x)  # (B, T, C)

    def _check_ids(self, idx: torch.Tensor) -> None:
        """One sentence for input the embedding cannot look up, instead of an error deep inside."""
        if not isinstance(idx, torch.Tensor):
            raise TypeError(f"idx must be a (B, T) tensor of token ids, got {type(idx).__name__}; "
                            "make one with torch.tensor([ids])")
        if idx.dim() != 2:
            hint = "; add a batch dimension with idx.unsqueeze(0)" if idx.dim() == 1 else ""
            raise ValueError(f"idx must be (B, T) token ids, got shape {tuple(idx.shape)}{hint}")
        if idx.dtype not in (torch.int64, torch.int32):  # the index types nn.Embedding takes
            raise ValueError(f"idx has dtype {idx.dtype}; token ids must be integers (torch.long), "
                             "e.g. idx.long() if the values are ids")
        if idx.numel() == 0 or torch.compiler.is_compiling():  # a data-dependent branch breaks a graph
            return
        # One reduction and two scalar reads; on a GPU this waits for the ids to be ready.
        V = self.tok_emb.num_embeddings  # not cfg.vocab_size: a later chapter may resize the table
        lo, hi = torch.aminmax(idx)
        if lo.item() < 0 or hi.item() >= V:
            b, t = ((idx < 0) | (idx >= V)).nonzero()[0].tolist()  # the first offending position
            raise ValueError(f"idx[{b}, {t}] = {idx[b, t].item()} is not a token id of this model; "
                             f"ids must be in [0, {V - 1}] (vocab_size {V})")

    def _cache_start(self, kv_cache: list[KVCache]) -> int:
        """Position of the next token in `kv_cache`, after checking its layers agree on it.
        (A full cache is refused by `KVCache.update`, before it stores anything.)"""
        n = len(self.blocks)
        if not isinstance(kv_cache, (list, tuple)) or len(kv_cache) != n:
            got = f"{len(kv_cache)}" if isinstance(kv_cache, (list, tuple)) else f"a {type(kv_cache).__name__}"
            raise ValueError(f"kv_cache must be a list of {n} KVCache, one per layer, got {got}; "
                             "make it with model.new_kv_cache()")
        lengths = {c.length for c in kv_cache}
        if len(lengths) > 1:  # e.g. an interrupted forward pass filled only the first layers
            raise ValueError(f"the layers of kv_cache hold different numbers of tokens {sorted(lengths)}; "
                             "reset() every layer's cache or make a new one with model.new_kv_cache()")
        return kv_cache[0].length

    def new_kv_cache(self, max_len: int | None = None) -> list[KVCache]:
        """Empty per-layer caches for generation, holding up to `max_len` tokens (default: context)."""
        if max_len is None:
            max_len = self.cfg.context_length
        elif not isinstance(max_len, int) or not 1 <= max_len <= self.cfg.context_length:
            raise ValueError(f"max_len={max_len!r}; use an int in [1, context_length={self.cfg.context_length}] "
                             "(the model has no positions beyond)")
        return [KVCache(max_len) for _ in self.blocks]

    def set_causal(self, enabled: bool = True) -> "GPTModel":
        """Switch every attention layer between causal (the default: a token sees only itself and
        earlier tokens) and bidirectional attention (every token sees the whole sequence, as in
        an encoder such as BERT). Generation with a KV cache needs causal attention and refuses
        to run without it. `set_causal(True)` restores the causal outputs exactly.
        """
        for m in self.modules():
            if isinstance(m, MultiHeadAttention):
                m.causal = bool(enabled)
        return self

    def set_fast_path(self, enabled: bool = True, fused_qkv: bool = False) -> "GPTModel":
        """Switch every layer between the readable path and fused PyTorch kernels (SDPA attention,
        fused LayerNorm and GELU). Both compute the same function.

        `fused_qkv` also computes queries, keys and values with one matmul. It is off by default:
        on CPU, concatenating the three weight matrices on every call costs more than the single
        larger matmul saves (measured at B=2, T=256, C=768: 78 vs 73 ms forward+backward, and
        0.99 vs 0.16 ms per generated token). It can pay off where kernel launches dominate (GPUs).
        """
        for m in self.modules():
            if isinstance(m, MultiHeadAttention):
                m.use_sdpa = enabled
                m.fused_qkv = enabled and fused_qkv
            elif isinstance(m, (LayerNorm, GELU)):
                m.fast = enabled
        return self
