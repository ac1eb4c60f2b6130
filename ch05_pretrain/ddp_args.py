"""The command line of `pretrain_ddp.py`: a value no run could use is refused by argparse, in
one sentence naming the flag, before any process loads data or a model."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from ch04_gpt import GPT_CONFIGS


def _checked(convert: Callable[[str], float], ok: Callable[[float], bool], allowed: str):
    """An argparse `type`: `convert` the text, and refuse it unless `ok(value)`.

    argparse prefixes the message with the argument's name, so a mistake reads, in one sentence,
    "argument --val-fraction: got 1.5; use a number strictly between 0 and 1 ...".
    """

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"got {text!r}; use {allowed}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"got {text}; use {allowed}")
        return value

    return parse


POSITIVE_INT = _checked(int, lambda v: v >= 1, "a whole number >= 1")
COUNT = _checked(int, lambda v: v >= 0, "a whole number >= 0")
POSITIVE_FLOAT = _checked(float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
NONNEGATIVE_FLOAT = _checked(float, lambda v: math.isfinite(v) and v >= 0,
                             "a finite number >= 0")
# Well inside the 64 bits a torch generator takes, since seed + rank + epoch seeds them.
SEED = _checked(int, lambda v: 0 <= v < 2**32, "a whole number from 0 to 2**32 - 1")
DROP_RATE = _checked(float, lambda v: 0 <= v < 1, "a probability from 0 up to (not including) 1")
VAL_FRACTION = _checked(float, lambda v: 0 < v < 1,
                        "a number strictly between 0 and 1, the share of the text held out")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; a value no run could use is refused here, in one sentence, not later."""
    p = argparse.ArgumentParser(description="Pretraining on several GPUs (or CPU processes) with "
                                            "DistributedDataParallel (DDP).")
    p.add_argument("--data", default="the-verdict.txt",
                   help="a text file, or a name from ch02_data.SOURCES (downloaded by rank 0)")
    p.add_argument("--preset", default="gpt2", choices=sorted(GPT_CONFIGS),
                   help="model preset; the size flags below override its fields")
    p.add_argument("--n-layers", type=POSITIVE_INT)
    p.add_argument("--emb-dim", type=POSITIVE_INT)
    p.add_argument("--n-heads", type=POSITIVE_INT)
    p.add_argument("--context", type=POSITIVE_INT, default=256, help="context length in tokens")
    p.add_argument("--drop-rate", type=DROP_RATE)
    p.add_argument("--batch-size", type=POSITIVE_INT, default=8,
                   help="global micro-batch in sequences, split evenly over the ranks")
    p.add_argument("--grad-accum", type=POSITIVE_INT, default=1,
                   help="micro-batches per optimizer step")
    p.add_argument("--lr", type=POSITIVE_FLOAT, default=4e-4)
    p.add_argument("--weight-decay", type=NONNEGATIVE_FLOAT, default=0.1)
    p.add_argument("--warmup-steps", type=COUNT, default=0)
    p.add_argument("--steps", type=POSITIVE_INT, default=100, help="optimizer steps")
    p.add_argument("--eval-every", type=POSITIVE_INT, default=10)
    p.add_argument("--eval-batches", type=POSITIVE_INT, default=None)
    p.add_argument("--val-fraction", type=VAL_FRACTION, default=0.1)
    p.add_argument("--seed", type=SEED, default=123)
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"],
                   help="bf16: mixed precision on CUDA (ignored on CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (opt-in)")
    p.add_argument("--checkpoint", help="checkpoint file, written by rank 0")
    p.add_argument("--checkpoint-every", type=POSITIVE_INT)
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    p.add_argument("--out", help="JSON summary (losses, weight hashes), written by rank 0")
    args = p.parse_args(argv)

    # Combinations that no single argument's type can see.
    for flag, given in [("--resume", args.resume), ("--checkpoint-every", args.checkpoint_every)]:
        if given and args.checkpoint is None:
            p.error(f"{flag} needs --checkpoint FILE (the file to resume from and save to)")
    emb_dim = args.emb_dim or GPT_CONFIGS[args.preset].emb_dim
    n_heads = args.n_heads or GPT_CONFIGS[args.preset].n_heads
    if emb_dim % n_heads:
        p.error(f"--n-heads {n_heads} does not divide --emb-dim {emb_dim} (with --preset "
                f"{args.preset}); use a number of heads that divides the embedding width")
    return args
