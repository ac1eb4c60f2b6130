"""Pretraining on several GPUs (or CPU processes) with DistributedDataParallel (DDP).

torchrun starts one process ("rank") per GPU and tells each, through environment variables,
its rank, its GPU on this machine (LOCAL_RANK) and how many ranks there are (WORLD_SIZE):

    torchrun --nproc_per_node=4 -m ch05_pretrain.pretrain_ddp --data the-verdict.txt --steps 200
    OMP_NUM_THREADS=1 torchrun --nproc_per_node=2 -m ch05_pretrain.pretrain_ddp \
        --data the-verdict.txt --n-layers 2 --emb-dim 64 --n-heads 4 --context 64 --steps 20

Every rank holds a full copy of the model and trains on its own slice of each global batch.
In backward, DDP averages the gradients across ranks (all-reduce), so every copy takes the same
optimizer step and the copies stay identical. The loop is `train.train`, unchanged: it skips the
all-reduce on gradient-accumulation micro-batches (`no_sync`), reshuffles the sampler each epoch
(`set_epoch`), and writes checkpoints on rank 0 only. Without torchrun the script runs as one
ordinary process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from ch02_data import SOURCES, GPTDataset, fetch
from ch04_gpt import GPT_CONFIGS, GPTConfig, GPTModel

from .checkpoint import check_checkpoint_path
from .ddp_args import parse_args
from .device import fast_adamw, get_device, maybe_compile, unwrap
from .losses import lm_loss
from .train import train


class Ranks(NamedTuple):
    """Where this process sits in the job: global rank, GPU index on this machine, job size."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Ranks:
    """Join the process group when launched by torchrun; otherwise a job of one process.

    The backend follows the device: NCCL moves CUDA tensors between GPUs, gloo moves CPU
    tensors. Each rank uses GPU number LOCAL_RANK, so N ranks on one machine use N GPUs.
    """
    if "WORLD_SIZE" not in os.environ:  # plain `python -m ...`: no process group, no DDP
        return Ranks(0, 0, 1, get_device())
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    device = get_device(verbose=rank == 0)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        # gloo runs collectives on CPU tensors only, so MPS cannot join a multi-process job.
        if device.type != "cpu" and rank == 0:
            print(f"DDP without CUDA runs on the CPU (gloo); not using {device}.")
        device = torch.device("cpu")
        dist.init_process_group("gloo")
    return Ranks(rank, local_rank, world_size, device)


def mean_over_ranks(loss_fn: Callable[[nn.Module, object], torch.Tensor]):
    """Wrap `loss_fn` so the value it returns is the mean over all ranks; its gradient stays local.

    Each rank's loss covers only its slice of the global batch, so rank 0 alone would log a noisy
    1/N of the picture. The returned tensor's value is the global batch's loss (what a single
    process on the whole batch would log), while backward still differentiates this rank's own
    loss; DDP then averages those gradients, which gives the gradient of the global mean.
    Every rank also sees the same value, so `train`'s NaN check stops all ranks together
    instead of one rank raising while the others wait for it in the next all-reduce.
    """

    def wrapped(model: nn.Module, batch) -> torch.Tensor:
        loss = loss_fn(model, batch)  # scalar: mean over this rank's B*T positions
        total = loss.detach().clone()
        dist.all_reduce(total)  # sum (gloo has no average); every rank gets the same number
        # Slices of equal size (every position counts in pretraining): mean of means = mean.
        mean = total / dist.get_world_size()
        return loss + (mean - loss.detach())  # value: mean; gradient: d(loss)

    return wrapped


def build_loaders(
    text: str, context: int, per_rank_batch: int, val_fraction: float, seed: int, ranks: Ranks
) -> tuple[DataLoader, DataLoader]:
    """Train and validation loaders over windows of `context` GPT-2 tokens (stride = context).

    The last `val_fraction` of the text is held out for validation.

    Training: a DistributedSampler gives rank r the windows r, r+N, r+2N, ... of one shuffled
    order. That order is a permutation drawn from `seed + epoch` alone, whatever N is, so the
    N ranks' batches at a step together hold the same windows a single process with batch
    N * per_rank_batch would see (drop_last keeps every rank's share equal). `train` calls
    `sampler.set_epoch(epoch)` so each epoch is reshuffled.
    Validation: small, so every rank evaluates all of it and all ranks report the same loss.
    """
    split = int(len(text) * (1 - val_fraction))
    sets = []
    for part, name, hint in [(text[:split], "training", ""),
                             (text[split:], "validation", " or a larger --val-fraction")]:
        try:
            sets.append(GPTDataset(part, max_length=context, stride=context))
        except ValueError as e:  # fewer tokens than one window of context + 1
            raise ValueError(f"--context {context} is too long for the {name} text ({e}); use a "
                             f"shorter --context{hint} or a longer text") from None
    train_set, val_set = sets
    if len(train_set) // ranks.world_size < per_rank_batch:  # drop_last would leave no batch
        raise ValueError(
            f"--batch-size {per_rank_batch * ranks.world_size} is larger than the {len(train_set)} "
            f"training windows of --context {context} tokens; use a smaller --batch-size or "
            f"--context, or a longer text")
    sampler = DistributedSampler(train_set, num_replicas=ranks.world_size, rank=ranks.rank,
                                 shuffle=True, seed=seed, drop_last=True)
    train_loader = DataLoader(train_set, batch_size=per_rank_batch, sampler=sampler,
                              drop_last=True, num_workers=0)
    val_loader = DataLoader(val_set, batch_size=per_rank_batch, shuffle=False, num_workers=0)
    return train_loader, val_loader


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 of every parameter's bytes: equal strings mean bit-identical weights."""
    h = hashlib.sha256()
    for name, p in unwrap(model).named_parameters():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def data_path(data: str) -> Path:
    """`data` itself when it is a file, else the verified local copy of the data set so named."""
    path = Path(data)
    if path.is_file():
        return path
    if data in SOURCES:
        return fetch(data)
    known = ", ".join(name for name in sorted(SOURCES) if name.endswith(".txt"))
    if path.is_dir():
        raise ValueError(f"--data {data!r} is a folder; give a text file or one of the "
                         f"data sets {known}")
    raise FileNotFoundError(f"--data {data!r}: no such file: {path.resolve()}; give a text "
                            f"file or one of the data sets {known}")


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before training, a --checkpoint or --out that could not be written after it.

    Also refuses two arguments naming one file, e.g. an --out that would overwrite --data.
    """
    outputs = {flag: value for flag, value in [("--checkpoint", args.checkpoint),
                                               ("--out", args.out)] if value is not None}
    for flag, value in outputs.items():
        try:
            check_checkpoint_path(value, flag)  # the check train makes, for both files
        except OSError as e:  # a folder, a path under a file, a folder we cannot write to
            raise ValueError(str(e)) from None
    files = [("--data", args.data)] if Path(args.data).is_file() else []
    files += list(outputs.items())
    for i, (flag, value) in enumerate(files):
        for other, other_value in files[i + 1:]:
            if Path(value).resolve() == Path(other_value).resolve():
                raise ValueError(f"{flag} and {other} are the same file {value!r}; one would "
                                 f"overwrite the other, so give different names")


def model_config(args: argparse.Namespace) -> GPTConfig:
    """The preset's config with the sizes given on the command line replacing its own."""
    changes = {"context_length": args.context, "emb_dim": args.emb_dim, "n_heads": args.n_heads,
               "n_layers": args.n_layers, "drop_rate": args.drop_rate}
    return GPT_CONFIGS[args.preset].replace(**{k: v for k, v in changes.items() if v is not None})


def main(args: argparse.Namespace) -> dict:
    """Train as one rank of the job and return the summary (rank 0 also writes it to --out)."""
    ranks = setup_distributed()
    try:
        summary = _run(args, ranks)
        if dist.is_initialized():
            # Every rank finishes its last collective before any rank closes its connections;
            # a rank tearing down while a peer still talks to it can abort the peer (SIGABRT).
            # Only on success: after an error, the other ranks may be inside another collective.
            dist.barrier()
        return summary
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _read_text(args: argparse.Namespace, ranks: Ranks) -> str:
    """The training text, on every rank. Rank 0 checks the output paths (now, not after the last
    step) and downloads the data set; the others wait for its verdict, so on a bad path every
    rank stops with the same message instead of waiting for rank 0 until a timeout."""
    error = None
    if ranks.is_main:
        try:
            check_outputs(args)
            data_path(args.data)
        except Exception as e:
            error = e
    if dist.is_initialized():
        verdict = [None if error is None else f"{type(error).__name__}: {error}"]
        dist.broadcast_object_list(verdict, src=0)
        if error is None and verdict[0] is not None:
            raise RuntimeError(f"rank 0 stopped the job: {verdict[0]}")
    if error is not None:
        raise error
    path = data_path(args.data)  # verified and in place now, on every rank
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"--data {args.data!r} is not UTF-8 text (byte {e.start}); give a "
                         f"text file") from None


def _build_model(args: argparse.Namespace, cfg: GPTConfig, ranks: Ranks):
    """(model, optimizer, loss_fn): the model wrapped in DDP when distributed (and compiled when
    asked), AdamW, and the loss averaged over the ranks."""
    # The same seed on every rank gives the same initial weights (and DDP copies rank 0's anyway).
    torch.manual_seed(args.seed)
    model = GPTModel(cfg).to(ranks.device)
    optimizer = fast_adamw(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    loss_fn = lm_loss
    if dist.is_initialized():
        # DDP copies rank 0's weights to every rank now and all-reduces gradients in backward.
        model = DistributedDataParallel(
            model, device_ids=[ranks.device.index] if ranks.device.type == "cuda" else None)
        loss_fn = mean_over_ranks(lm_loss)
    model = maybe_compile(model, args.compile)  # compile the DDP module, as PyTorch recommends
    return model, optimizer, loss_fn


def _summarize(args: argparse.Namespace, ranks: Ranks, cfg: GPTConfig, model: nn.Module,
               history, per_rank_batch: int, wall_s: float) -> dict:
    """The run's summary (printed and written to --out by rank 0). Every rank hashes its
    weights; rank 0 collects the hashes to show the copies agree."""
    fingerprints = [weights_fingerprint(model)]
    if dist.is_initialized():
        fingerprints = [None] * ranks.world_size
        dist.all_gather_object(fingerprints, weights_fingerprint(model))
    summary = {
        "world_size": ranks.world_size, "per_rank_batch": per_rank_batch,
        "global_batch": args.batch_size * args.grad_accum, "grad_accum": args.grad_accum,
        "config": cfg.to_dict(), "wall_s": wall_s, "weights_sha256": fingerprints,
        "history": history.to_dict(),
    }
    if ranks.is_main:
        same = len(set(fingerprints)) == 1
        print(f"final train loss {history.train_loss[-1]:.4f}, val loss "
              f"{history.val_loss[-1]:.4f}; {wall_s:.1f} s; weights identical on all ranks: {same}")
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary


def _run(args: argparse.Namespace, ranks: Ranks) -> dict:
    if args.batch_size % ranks.world_size:
        raise ValueError(f"--batch-size {args.batch_size} must divide evenly over "
                         f"{ranks.world_size} ranks")
    per_rank_batch = args.batch_size // ranks.world_size
    cfg = model_config(args)
    train_loader, val_loader = build_loaders(_read_text(args, ranks), cfg.context_length,
                                             per_rank_batch, args.val_fraction, args.seed, ranks)
    model, optimizer, loss_fn = _build_model(args, cfg, ranks)
    if ranks.is_main:
        n_params = sum(p.numel() for p in unwrap(model).parameters())
        print(f"{ranks.world_size} rank(s) x batch {per_rank_batch} x {args.grad_accum} "
              f"accumulation = {args.batch_size * args.grad_accum} sequences of "
              f"{cfg.context_length} tokens per step; {n_params:,} parameters; "
              f"{len(train_loader)} batches per rank per epoch")
    t0 = time.perf_counter()
    history = train(
        model, optimizer, train_loader, loss_fn,
        val_loader=val_loader, max_steps=args.steps, eval_every=args.eval_every,
        eval_batches=args.eval_batches, grad_accum_steps=args.grad_accum,
        warmup_steps=args.warmup_steps, checkpoint_every=args.checkpoint_every,
        checkpoint_path=args.checkpoint, resume=args.resume, device=ranks.device,
        autocast_dtype=torch.bfloat16 if args.dtype == "bf16" else None,
        progress=ranks.is_main,  # one progress bar, not N interleaved ones
        seed=args.seed + ranks.rank,  # dropout masks differ across ranks, as across batches
    )
    return _summarize(args, ranks, cfg, model, history, per_rank_batch, time.perf_counter() - t0)


if __name__ == "__main__":
    main(parse_args())
