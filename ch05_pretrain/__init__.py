"""Chapter 5: pretraining on unlabeled data."""

from .checkpoint import load_checkpoint, load_model, save_checkpoint
from .device import autocast, get_device, maybe_compile, move_to_device, unwrap
from .losses import IGNORE_INDEX, evaluate, lm_loss, perplexity
from .train import History, lr_factor, train

__all__ = [
    "IGNORE_INDEX",
    "History",
    "autocast",
    "evaluate",
    "get_device",
    "load_checkpoint",
    "load_model",
    "lm_loss",
    "lr_factor",
    "maybe_compile",
    "move_to_device",
    "perplexity",
    "save_checkpoint",
    "train",
    "unwrap",
]
