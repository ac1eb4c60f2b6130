"""Chapter 5: pretraining on unlabeled data."""

from .checkpoint import check_checkpoint_path, load_checkpoint, load_model, save_checkpoint
from .chunked_loss import DEFAULT_CHUNK_SIZE, chunked_lm_loss, linear_cross_entropy
from .device import autocast, fast_adamw, get_device, maybe_compile, move_to_device, unwrap
from .generate import apply_temperature, generate, sample_next_token, top_k_filter, top_p_filter
from .gpt2_hub import GPT2_DIR_ENV, GPT2_HUB, GPT2_SIZES, GPT2Unavailable, sizes_in_gpt2_dir
from .gpt2_weights import iter_safetensors, load_gpt2
from .losses import IGNORE_INDEX, NoTargetsError, evaluate, lm_loss, perplexity
from .history import History
from .train import lr_factor, train
from .finetune import Recipe, fine_tune, recipe_for, set_dropout
from .fallback import get_fallback_model  # noqa: E402  (after train: fallback imports it)
from .base_model import BaseModel, RunCost, load_base_model, run_cost  # noqa: E402

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "fast_adamw",
    "BaseModel",
    "GPT2_DIR_ENV",
    "GPT2_HUB",
    "GPT2_SIZES",
    "GPT2Unavailable",
    "RunCost",
    "IGNORE_INDEX",
    "History",
    "Recipe",
    "NoTargetsError",
    "apply_temperature",
    "autocast",
    "check_checkpoint_path",
    "chunked_lm_loss",
    "evaluate",
    "fine_tune",
    "generate",
    "get_device",
    "get_fallback_model",
    "iter_safetensors",
    "linear_cross_entropy",
    "load_base_model",
    "load_checkpoint",
    "load_gpt2",
    "load_model",
    "lm_loss",
    "lr_factor",
    "maybe_compile",
    "move_to_device",
    "perplexity",
    "recipe_for",
    "run_cost",
    "set_dropout",
    "sizes_in_gpt2_dir",
    "sample_next_token",
    "save_checkpoint",
    "top_k_filter",
    "top_p_filter",
    "train",
    "unwrap",
]
