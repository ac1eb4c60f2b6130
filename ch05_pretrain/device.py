"""Device, mixed precision and compilation, decided in one place.

Every chapter asks `get_device()` which accelerator to use instead of testing for CUDA itself,
so one environment variable (`DEVICE=cpu`) switches a whole notebook, and the choice is printed
once so readers know where their numbers came from.
"""

from __future__ import annotations

import contextlib
import os
import sys

import torch
import torch.nn as nn

DEVICE_ENV_VAR = "DEVICE"
# PyTorch < 2.4 on Apple's MPS backend produced wrong numbers in ops GPT needs
# (e.g. multinomial sampling, some reductions); see NOTES-notebooks-and-readers.md.
MIN_MPS_TORCH = (2, 4)

_announced: set[str] = set()  # devices already printed in this process


def _torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def _mps_usable() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def _say(message: str, verbose: bool) -> None:
    if verbose and message not in _announced:
        _announced.add(message)
        print(message)


def get_device(preferred: str | None = None, verbose: bool = True) -> torch.device:
    """The device to train and run on: cuda > mps > cpu.

    Args:
        preferred: "cuda", "cuda:1", "mps" or "cpu" to override the automatic choice; when None,
            the environment variable DEVICE is used if set (e.g. `DEVICE=cpu jupyter lab`).
        verbose: print the choice (once per process and device).
    Returns:
        A `torch.device`. Asking for an accelerator that is missing raises a RuntimeError;
        MPS on PyTorch older than 2.4 falls back to the CPU with a one-line message.
    """
    choice = (preferred or os.environ.get(DEVICE_ENV_VAR) or "").strip().lower()
    if not choice:
        if torch.cuda.is_available():
            choice = "cuda"
        elif _mps_usable():
            choice = "mps"
        else:
            choice = "cpu"
    device = torch.device(choice)
    if device.type not in ("cuda", "mps", "cpu"):  # meta has no data; xpu & co. are untested here
        source = f"device={preferred!r}" if preferred else f"{DEVICE_ENV_VAR}={choice!r}"
        raise RuntimeError(f"{source} is a {device.type} device, which this code does not run on; "
                           "use cuda, mps or cpu")

    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {choice!r} requested but CUDA is not available; use DEVICE=cpu")
    if device.type == "mps":
        if not _mps_usable():
            raise RuntimeError("device 'mps' requested but MPS is not available; use DEVICE=cpu")
        if _torch_version() < MIN_MPS_TORCH:
            _say(
                f"MPS needs PyTorch >= {MIN_MPS_TORCH[0]}.{MIN_MPS_TORCH[1]} for correct results "
                f"(found {torch.__version__}); using the CPU instead.",
                verbose,
            )
            device = torch.device("cpu")

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    _say(f"Using device: {device} ({name})", verbose)
    return device


def autocast(device: torch.device | str, dtype: torch.dtype | None = None):
    """Mixed-precision context for forward passes.

    On CUDA with a dtype (usually `torch.bfloat16`), matmuls run in that dtype while weights,
    gradients and the optimizer stay in fp32. On CPU or MPS, or with dtype None, it does nothing,
    so the same training code runs unchanged everywhere.
    """
    device = torch.device(device)
    if device.type == "cuda" and dtype is not None:
        return torch.autocast(device_type="cuda", dtype=dtype)
    return contextlib.nullcontext()


def maybe_compile(model: nn.Module, enabled: bool = False) -> nn.Module:
    """`torch.compile(model)` when `enabled`, else `model` unchanged.

    Compilation is opt-in: it is unavailable or fragile on Windows and on MPS, and its first
    step takes a while. The compiled module shares parameters with `model`; save `unwrap(model)`.
    """
    if not enabled:
        return model
    if sys.platform == "win32":
        print("torch.compile is not supported well on Windows; running the model uncompiled.")
        return model
    return torch.compile(model)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel/DataParallel (`.module`) and
    `torch.compile` (`._orig_mod`) wrappers, whose state_dict keys have no wrapper prefixes."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def move_to_device(batch, device: torch.device | str):
    """Move every tensor in a (nested) tuple, list or dict to `device`; other values pass through."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


def fast_adamw(params, lr: float, weight_decay: float = 0.1, **kwargs) -> torch.optim.AdamW:
    """AdamW that updates all parameters in one fused kernel where this PyTorch has it (CPU since
    torch 2.4, CUDA, MPS), else with multi-tensor ("foreach") kernels. Same maths as the default
    for-loop AdamW, which on CPU spends about a tenth of a GPT-2 training step on the update."""
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # older PyTorch, or a device without fused AdamW
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True, **kwargs)
