"""The pretrained model every later chapter starts from: GPT-2 when obtainable, else the fallback.

`load_base_model(name)` is the one place that decides. It tries GPT-2 `name`, then GPT-2 124M,
then chapter 5's TinyStories fallback (`get_fallback_model`), and prints one line saying which
model it took and, when it is not the one asked for, why. Chapters 6 and 7, the bonuses, their
scripts and the chat page all call it, so the choice and its message are the same everywhere.

Fast mode (FAST_DEV_RUN=1) never downloads: it takes GPT-2 only from `$GPT2_DIR` (the tests put
stand-in weights of GPT-2's exact shapes there), else the fallback's tiny fast-mode version.

`run_cost` measures one training step before a long run and prints what the whole run will cost
on this machine, and what GPT-2 124M would cost instead.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ch02_data import fast_dev_run
from ch02_data.checks import positive_int
from ch04_gpt import GPT_CONFIGS, GPTConfig, GPTModel

from .device import move_to_device
from .memory import PeakRSS
from .fallback import checkpoint_dir, current_recipe, get_fallback_model, shown
from .gpt2_hub import GPT2_DIR_ENV, GPT2_SIZES, GPT2Unavailable, local_folder
from .gpt2_weights import load_gpt2

# Parameter counts as the GPT-2 paper names the sizes (Radford et al. 2019, Table 2, corrected).
SIZE_LABELS = {"gpt2": "124M", "gpt2-medium": "355M", "gpt2-large": "774M", "gpt2-xl": "1558M"}
FALLBACK = "fallback"


@dataclass
class BaseModel:
    """What `load_base_model` returns."""

    model: GPTModel  # in eval mode, on the device asked for
    key: str  # "gpt2-medium", "gpt2", ..., "tinystories-fallback" or "tinystories-fallback-fast"
    description: str  # for printed text: "OpenAI GPT-2 355M (gpt2-medium)", ...
    source: str  # where the weights came from: "GPT2_DIR", "the Hugging Face Hub or its cache", a path
    reason: str | None  # why the model asked for was not used (None when it was)
    info: dict | None = None  # the fallback's training record (None for GPT-2)

    @property
    def is_gpt2(self) -> bool:
        return self.key in GPT2_SIZES

    def line(self) -> str:
        """The one line `load_base_model` prints."""
        text = f"Base model: {self.description}, from {self.source}"
        return text + (f" ({self.reason})." if self.reason else ".")


class _Skip(Exception):
    """A candidate not tried (fast mode without $GPT2_DIR/<name>); carries the reason."""


def _try_gpt2(name: str, device, drop_rate: float | None) -> tuple[GPTModel, str]:
    if fast_dev_run():  # never the network in fast mode: only a local folder counts
        if local_folder(name) is None:
            raise _Skip(f"fast mode takes GPT-2 only from ${GPT2_DIR_ENV}/{name}/, which is "
                        + ("not set" if not os.environ.get(GPT2_DIR_ENV) else "missing"))
    source = "GPT2_DIR" if local_folder(name) is not None else "the Hugging Face Hub or its cache"
    return load_gpt2(name, device, drop_rate=drop_rate), source


def load_base_model(name: str | os.PathLike = "gpt2", device: torch.device | str = "cpu", *,
                    drop_rate: float | None = 0.0, verbose: bool = True) -> BaseModel:
    """The pretrained model to start from, in eval mode on `device`, with one printed line.

    Args:
        name: a GPT-2 size ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"), "fallback" for
            chapter 5's TinyStories model, or a folder written by `save_pretrained`.
        device: where the model is built.
        drop_rate: GPT-2's dropout; 0.0 (the default) switches it off, as the book does when it
            fine-tunes GPT-2 (and as DPO needs: its policy and frozen reference must compute the
            same function at the start); None keeps the checkpoint's 0.1. The fallback model was
            trained without dropout and is returned as it is.
        verbose: print the line (and the fallback's training progress when it is not cached).

    A GPT-2 size that cannot be had (`GPT2Unavailable`) is followed by GPT-2 124M, then by the
    fallback; the printed line gives the reason. Other errors (a damaged or wrong-sized file in
    GPT2_DIR, a folder that does not exist) are raised: they need fixing, not hiding.
    """
    if isinstance(name, str) and name not in (*GPT2_SIZES, FALLBACK) and not Path(name).is_dir():
        raise ValueError(f"name={name!r} is not a GPT-2 size ({', '.join(GPT2_SIZES)}), "
                         f"{FALLBACK!r} or an existing folder")
    reasons: list[str] = []
    if not (isinstance(name, str) and name in (*GPT2_SIZES, FALLBACK)):  # a folder
        model = load_gpt2(name, device, drop_rate=drop_rate)
        base = BaseModel(model, Path(name).name, f"GPT-2 from the folder {shown(Path(name))}",
                         shown(Path(name)), None)
        return _done(base, verbose)
    candidates = [] if name == FALLBACK else list(dict.fromkeys([name, "gpt2"]))
    for size in candidates:
        try:
            model, source = _try_gpt2(size, device, drop_rate)
        except (GPT2Unavailable, _Skip) as e:
            reasons.append(f"{size}: {e.reason if isinstance(e, GPT2Unavailable) else e}")
            continue
        reason = f"{'; '.join(reasons)}; see README, GPT-2 weights" if reasons else None
        base = BaseModel(model, size, f"OpenAI GPT-2 {SIZE_LABELS[size]} ({size})", source, reason)
        return _done(base, verbose)

    path = checkpoint_dir() / current_recipe().file_name
    model, info = get_fallback_model(device, verbose=verbose and not path.is_file())
    key = "tinystories-fallback-fast" if fast_dev_run() else "tinystories-fallback"
    reason = None
    if reasons:
        reason = f"GPT-2 unavailable: {'; '.join(reasons)}; see README, GPT-2 weights"
    label = "the fast-mode " if fast_dev_run() else "chapter 5's "
    base = BaseModel(model.eval(), key, f"{label}TinyStories fallback model",
                     shown(Path(info["path"])) if info.get("path") else "a model trained just now",
                     reason, info)
    return _done(base, verbose)


def _done(base: BaseModel, verbose: bool) -> BaseModel:
    if verbose:
        print(base.line())
    return base


# --- What a run will cost ----------------------------------------------------------------------


def _matmul_params(cfg: GPTConfig) -> int:
    """Weights a token passes through in matrix products (blocks and output head): what a
    forward pass costs, 2 FLOPs per weight per token, for sizes with the same context."""
    C, hidden = cfg.emb_dim, cfg.ff_hidden_dim or 4 * cfg.emb_dim
    per_block = 4 * C * C + 2 * C * hidden  # attention's q, k, v, out; the MLP's two layers
    return cfg.n_layers * per_block + cfg.vocab_size * C


@dataclass
class RunCost:
    step_seconds: float  # one forward + backward on one batch, measured
    steps: int
    peak_gb: float  # this process's peak resident memory after that step, plus AdamW's state
    alternative: str | None  # a GPT-2 size to compare with
    alternative_minutes: float | None

    @property
    def minutes(self) -> float:
        return self.step_seconds * self.steps / 60

    def __str__(self) -> str:
        text = (f"Estimated cost: about {self.minutes:.1f} min on this machine ({self.steps} steps of "
                f"{self.step_seconds:.2f} s, one step measured just now), peak memory about "
                f"{self.peak_gb:.1f} GB")
        if self.alternative_minutes is not None:
            label = SIZE_LABELS[self.alternative]
            text += f"; GPT-2 {label} ({self.alternative!r}) would take about {self.alternative_minutes:.0f} min"
        return text + "."


def run_cost(model: nn.Module, batch, loss_fn, steps: int, *, alternative: str | None = "gpt2",
             verbose: bool = True) -> RunCost:
    """Time one forward and backward pass of `loss_fn(model, batch)` (gradients are zeroed
    afterwards, the weights are not changed) and estimate a run of `steps` such steps.

    The alternative's time is scaled by the weights a token passes through (`_matmul_params`),
    which is what a CPU's time follows; on a GPU it is rougher.
    """
    steps = positive_int("steps", steps, "optimizer steps in the run")
    was_training = model.training
    model.train()
    batch = move_to_device(batch, next(model.parameters()).device)
    with PeakRSS() as mem:  # this process's resident memory, sampled during the step
        t0 = time.perf_counter()
        loss_fn(model, batch).backward()
        seconds = time.perf_counter() - t0
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    peak = (mem.peak + 8 * trainable) / 2**30  # plus AdamW's two fp32 moments per trained weight
    alt_minutes = None
    cfg = getattr(model, "cfg", None)
    if alternative is not None and isinstance(cfg, GPTConfig) and not math.isclose(
            _matmul_params(cfg), _matmul_params(GPT_CONFIGS[alternative])):
        ratio = _matmul_params(GPT_CONFIGS[alternative]) / _matmul_params(cfg)
        alt_minutes = seconds * ratio * steps / 60
    cost = RunCost(seconds, steps, peak, alternative if alt_minutes is not None else None, alt_minutes)
    if verbose:
        print(cost)
    return cost
