"""Saving and loading checkpoints that carry their own config.

A checkpoint is a plain dict `{"model": state_dict, "config": cfg.to_dict(), "optimizer": ...,
**extra}` holding only tensors, dicts, lists, tuples, numbers, strings and None. That is exactly
what `torch.load(..., weights_only=True)` accepts, so loading never runs code from the file
(pickles can), and the next chapter rebuilds the model from the file alone.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
import torch.nn as nn

from ch04_gpt import GPTConfig, GPTModel

from .device import unwrap


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    **extra,
) -> Path:
    """Write `{"model", "config", "optimizer", **extra}` to `path` atomically and return the path.

    `model` may be wrapped (DDP, torch.compile): the unwrapped module's state_dict is saved, so
    its keys carry no `module.` or `_orig_mod.` prefix. "config" is `model.cfg.to_dict()` when the
    model has a config (GPTModel does), else None. The file is written to a temporary name in the
    same folder and then renamed, so a crash mid-write never leaves a truncated checkpoint.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = unwrap(model)
    cfg = getattr(model, "cfg", None)
    state = {
        "model": model.state_dict(),
        "config": cfg.to_dict() if hasattr(cfg, "to_dict") else None,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        **extra,
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)  # atomic on the same file system
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> dict:
    """Read a checkpoint dict with `weights_only=True`, mapping tensors onto `device`.

    Files holding anything other than tensors and plain Python containers/values are refused
    with an `UnpicklingError` instead of being executed.
    """
    return torch.load(path, map_location=device, weights_only=True)


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> GPTModel:
    """Rebuild a `GPTModel` from the config stored in a checkpoint, load its weights and
    return it in eval mode on `device`."""
    ckpt = load_checkpoint(path, device)
    if ckpt.get("config") is None:
        raise ValueError(f"{path} holds no model config; load its state_dict into a model yourself")
    model = GPTModel(GPTConfig.from_dict(ckpt["config"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval()
