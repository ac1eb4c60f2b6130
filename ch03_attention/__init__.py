"""Chapter 3: coding attention mechanisms."""

from .attention import KVCache, MultiHeadAttention

__all__ = ["KVCache", "MultiHeadAttention"]
