"""Exact resume: the loop position, random states, and checking a checkpoint against the setup.

`train` stores in each checkpoint's `train_state` where its loop stands (`Position`), every
random state it consumes (`rng_state`) and the setup a continued run must match. A resumed run
reloads all of it (`start_position`), replays the interrupted epoch's shuffle and skips the
batches already done (`epoch_batches`), so it reproduces the uninterrupted run's losses exactly.
A checkpoint this run cannot continue exactly is refused before anything is loaded
(`check_resumable`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from .checkpoint import load_checkpoint
from .device import unwrap
from .history import History


def loader_generators(loader) -> list[torch.Generator]:
    """The random generators that decide a DataLoader's shuffle order (if any are its own)."""
    found = []
    for owner in (loader, getattr(loader, "sampler", None)):
        g = getattr(owner, "generator", None)
        if isinstance(g, torch.Generator) and all(g is not f for f in found):
            found.append(g)
    return found


def rng_state(generators: list[torch.Generator]) -> dict:
    """Every random state training consumes: torch's global RNG (dropout, and shuffling when the
    loader has no generator), the accelerator's RNG, and the loader's generators."""
    state = {"torch": torch.get_rng_state(), "loader": [g.get_state() for g in generators]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generators: list[torch.Generator]) -> None:
    """Restore what `rng_state` returned."""
    torch.set_rng_state(state["torch"])
    for g, s in zip(generators, state["loader"]):
        g.set_state(s)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def random_state_kept(loader, generators: list[torch.Generator]):
    """Run the block, then put back every random state training consumes (torch's, the
    accelerator's, the loader's generators) and the loader's sampler epoch: evaluation, metrics
    and `on_eval` then never change which batches or dropout masks training sees next."""
    saved, sampler = rng_state(generators), getattr(loader, "sampler", None)
    epoch = getattr(sampler, "epoch", None)
    try:
        yield
    finally:
        set_rng_state(saved, generators)
        if isinstance(epoch, int):
            sampler.epoch = epoch


@dataclass
class Position:
    """Where the loop stands and what it has recorded. With the RNG states, this is what a
    checkpoint's `train_state` holds, so a resumed run continues exactly where it stopped."""

    history: History  # the evaluations so far (train's History)
    step: int = 0  # optimizer steps taken
    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # micro-batches of the current epoch already consumed
    tokens_seen: int = 0  # over all ranks
    elapsed: float = 0.0  # seconds trained before this call (by the run a checkpoint resumes)
    interval_losses: list[float] = field(default_factory=list)  # step losses since last evaluation

    def advance(self, next_batch: int, n_batches: int, tokens: int, loss: float | None) -> None:
        """Count one optimizer step that ended just before micro-batch `next_batch`."""
        self.step += 1
        self.tokens_seen += tokens
        if loss is not None:  # None: no micro-batch of the step had a counted target
            self.interval_losses.append(loss)
        if next_batch < n_batches:
            self.batch_in_epoch = next_batch
        else:  # the epoch is done; the next step starts a new one
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0

    def train_state(self, elapsed: float, rng_epoch_start: dict, rng_now: dict,
                    setup: dict) -> dict:
        """The loop position as a checkpoint stores it (plain numbers, lists and tensors), with
        the `setup` a resumed run must match (`check_resumable`)."""
        return {
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "tokens_seen": self.tokens_seen, "elapsed": elapsed,
            "interval_losses": list(self.interval_losses), "history": self.history.to_dict(),
            "rng_epoch_start": rng_epoch_start, "rng_now": rng_now, **setup,
        }

    @classmethod
    def from_train_state(cls, state: dict) -> Position:
        return cls(History.from_dict(state["history"]), state["step"], state["epoch"],
                   state["batch_in_epoch"], state["tokens_seen"], state["elapsed"],
                   list(state["interval_losses"]))


def check_resumable(path, ckpt: dict, optimizer: torch.optim.Optimizer, setup: dict) -> None:
    """Refuse, before anything is loaded, a checkpoint this run cannot continue exactly.

    `setup` is this run's {"n_batches", "grad_accum_steps", "total_steps", "optimizer"};
    checkpoints from before these were stored are checked on what they do hold.
    """
    state, saved = ckpt.get("train_state"), ckpt.get("optimizer")
    where = f"checkpoint {str(path)!r}"
    new_run = "or start a new run (resume=False, or another checkpoint_path)"
    if state is None or saved is None:
        raise ValueError(
            f"{str(path)!r} holds no training state (it was written by save_checkpoint without "
            "train_state and optimizer, not by train), so resume=True cannot continue it; to "
            "start from its weights, load ckpt['model'] into the model and train with "
            "resume=False and another checkpoint_path"
        )
    name, saved_name = setup["optimizer"], state.get("optimizer")
    if saved_name is not None and saved_name != name:
        raise ValueError(f"the optimizer is {name} but {where} was trained with {saved_name}; "
                         f"resume with {saved_name}, {new_run}")
    sizes = [len(g["params"]) for g in optimizer.param_groups]
    saved_sizes = [len(g["params"]) for g in saved["param_groups"]]
    keys = {k for g in optimizer.param_groups for k in g} - {"params", "initial_lr"}
    saved_keys = {k for g in saved["param_groups"] for k in g} - {"params", "initial_lr"}
    if sizes != saved_sizes or (saved_name is None and keys != saved_keys):
        raise ValueError(f"the optimizer ({name}, parameter groups of {sizes} tensors with "
                         f"settings {sorted(keys)}) differs from {where}'s ({saved_sizes} tensors, "
                         f"settings {sorted(saved_keys)}); resume with the same model and "
                         f"optimizer, {new_run}")
    n, saved_n = setup["n_batches"], state.get("n_batches")
    if (saved_n is not None and saved_n != n) or state["batch_in_epoch"] > n:
        saved_n = saved_n if saved_n is not None else f"at least {state['batch_in_epoch']}"
        raise ValueError(f"train_loader has {n} batches per epoch but {where} was saved with "
                         f"{saved_n}; resume with the same data, batch size and drop_last, "
                         f"{new_run}")
    accum = setup["grad_accum_steps"]
    saved_accum = state.get("grad_accum_steps", accum)
    if saved_accum != accum:
        raise ValueError(f"grad_accum_steps={accum} but {where} was saved with "
                         f"grad_accum_steps={saved_accum}; resume with {saved_accum}, {new_run}")
    if state["step"] > setup["total_steps"]:
        raise ValueError(f"{where} is at step {state['step']}, past this run's "
                         f"{setup['total_steps']} steps; ask for at least {state['step']} steps "
                         f"(max_steps or epochs), {new_run}")


def start_position(model: nn.Module, optimizer: torch.optim.Optimizer, path, seed: int | None,
                   setup: dict, is_main: bool) -> tuple[Position, dict | None]:
    """Where training starts: at step 0 with an empty `History()` after seeding torch with
    `seed` (if given), unless `path` (the checkpoint to resume from, or None) exists; then its
    weights, optimizer state and loop position are loaded, and its train_state is returned for
    its RNG states to be replayed.

    The optimizer's base learning rate stays the caller's: a run resumed with a new lr uses it
    (and says so) instead of silently taking the checkpoint's.
    """
    if path is None or not Path(path).exists():
        if path is not None and is_main:
            print(f"No checkpoint at {path}; starting from scratch.")
        if seed is not None:
            torch.manual_seed(seed)
        return Position(History()), None
    ckpt = load_checkpoint(path, "cpu")  # RNG states must stay on the CPU
    check_resumable(path, ckpt, optimizer, setup)
    state = ckpt["train_state"]
    unwrap(model).load_state_dict(ckpt["model"])
    base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
    optimizer.load_state_dict(ckpt["optimizer"])  # moves the state to the params' device
    saved_lrs = [group.get("initial_lr", group["lr"]) for group in optimizer.param_groups]
    for group, lr in zip(optimizer.param_groups, base_lrs):
        group["initial_lr"] = lr
    if is_main and saved_lrs != base_lrs:
        print(f"Resuming with the optimizer's learning rate {base_lrs[0]:.3g}; the checkpoint's "
              f"run used {saved_lrs[0]:.3g}.")
    saved_total = state.get("total_steps", setup["total_steps"])
    if is_main and saved_total != setup["total_steps"]:
        print(f"Resuming at step {state['step']} of {setup['total_steps']}; the checkpoint's run "
              f"had {saved_total} steps, so the learning-rate schedule now spans "
              f"{setup['total_steps']}.")
    return Position.from_train_state(state), state


_END = object()


def _numbered(batches, n_batches: int, epoch: int):
    """(index in epoch, batch) for the epoch's `n_batches` batches; a loader that stops early is
    named rather than ending the loop with a bare StopIteration."""
    for i in range(n_batches):
        batch = next(batches, _END)
        if batch is _END:
            raise ValueError(f"train_loader ended after {i} batches in epoch {epoch + 1}, but "
                             f"len(train_loader) is {n_batches}; make its len() match the "
                             "batches it yields")
        yield i, batch


def epoch_batches(loader, n_batches: int, pos: Position, resumed: dict | None,
                  generators: list) -> tuple:
    """Start epoch `pos.epoch` at micro-batch `pos.batch_in_epoch` (0 unless resuming).

    Returns the RNG states at the epoch's start (a checkpoint stores them) and an iterator of
    (index in epoch, batch), positioned at that micro-batch.
    """
    # The shuffle order of an epoch is drawn from the RNGs when the loader's iterator is
    # created. To resume mid-epoch, rewind the RNGs to the epoch start, replay the shuffle,
    # skip the consumed batches without computing anything, then restore the RNGs of the
    # checkpoint moment (so dropout masks continue identically).
    skip = pos.batch_in_epoch
    if resumed is not None:
        set_rng_state(resumed["rng_epoch_start" if skip else "rng_now"], generators)
    epoch_rng = rng_state(generators)
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(pos.epoch)  # DistributedSampler reshuffles per epoch
    batches = _numbered(iter(loader), n_batches, pos.epoch)
    for _ in range(skip):
        next(batches)
    if resumed is not None and skip:
        set_rng_state(resumed["rng_now"], generators)
    return epoch_rng, batches
