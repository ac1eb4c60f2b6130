"""Chapter 4: implementing a GPT model from scratch."""

from .config import GPT_CONFIGS, GPTConfig
from .generate import generate_text_simple
from .hf_weights import load_hf_gpt2_weights
from .model import GELU, FeedForward, GPTModel, LayerNorm, RMSNorm, TransformerBlock

__all__ = [
    "GELU",
    "GPT_CONFIGS",
    "FeedForward",
    "GPTConfig",
    "GPTModel",
    "LayerNorm",
    "RMSNorm",
    "TransformerBlock",
    "generate_text_simple",
    "load_hf_gpt2_weights",
]
