"""One student, trained one way: the unit of this chapter's comparison.

Every run in the comparison starts from the same initial weights (seeded), reads its windows in
the same order, takes the same number of optimizer steps of the same batch shape (the same
token budget) through chapter 5's `train`, and is scored the same way: cross-entropy on the
held-out TinyStories stories, which is what "the student learned the language" means here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset

from ch02_data import GPTDataset
from ch02_data.checks import positive_int
from ch04_gpt import GPTConfig, GPTModel
from ch05_pretrain import evaluate, fast_adamw, lm_loss, perplexity, train
from ch05_pretrain.memory import PeakRSS

from .data import windows_loader


@dataclass
class StudentResult:
    name: str
    val_loss: float
    val_perplexity: float
    bytes_per_token: float  # stored per training position (0: nothing stored)
    seconds: float  # wall time of the training run
    peak_rss_mb: float  # the process's peak resident memory during training
    peak_rss_increase_mb: float  # ... above what it held when training started
    test_loss: float | None = None  # on `test_ids` when train_student was given them
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, val loss)
    model: GPTModel | None = field(default=None, repr=False)

    def row(self) -> dict:
        row = {"run": self.name, "val loss": round(self.val_loss, 3),
               "val perplexity": round(self.val_perplexity, 1)}
        if self.test_loss is not None:
            row["test loss"] = round(self.test_loss, 3)
        return row | {"stored bytes/token": self.bytes_per_token,
                      "seconds": round(self.seconds, 1),
                      "peak RSS +MB": round(self.peak_rss_increase_mb)}


def val_loader_for(val_ids: torch.Tensor, context_length: int, batch_size: int = 16):
    """The held-out windows, in order: the same batches score every student."""
    dataset = GPTDataset(val_ids, max_length=context_length, stride=context_length)
    return windows_loader(dataset, batch_size, shuffle=False)


def train_student(
    name: str,
    cfg: GPTConfig,
    dataset: Dataset,
    loss_fn,
    val_ids: torch.Tensor,
    steps: int,
    batch_size: int = 8,
    lr: float = 3e-3,
    eval_every: int | None = None,
    eval_batches: int = 4,
    bytes_per_token: float = 0.0,
    device="cpu",
    seed: int = 123,
    progress: bool = True,
    keep_model: bool = False,
    test_ids: torch.Tensor | None = None,
) -> StudentResult:
    """Train a fresh student of configuration `cfg` for `steps` steps of `batch_size` windows of
    `dataset` with `loss_fn` (any `(model, batch) -> loss`), and score it on `val_ids`.

    The student starts from weights seeded by `seed`, so every run starts equal; it trains on
    the fast path (fused kernels, tested equal to the readable path in chapter 4) with AdamW at
    `lr`, 5% warm-up and cosine decay. Validation: `lm_loss` on the first `eval_batches`
    held-out batches every `eval_every` steps (the curve; 4 batches of 16 x 128 tokens by
    default, so the curve costs little) and on all of them at the end (the result). Choose
    settings on that validation loss; give `test_ids` (stories used for no choice) to get the
    loss to report, `test_loss`, scored once at the end.
    """
    steps = positive_int("steps", steps, "optimizer steps")
    torch.manual_seed(seed)
    student = GPTModel(cfg).set_fast_path(True).to(device)
    optimizer = fast_adamw(student.parameters(), lr=lr, weight_decay=0.1)
    loader = windows_loader(dataset, batch_size, shuffle=True, seed=seed)
    val_loader = val_loader_for(val_ids, cfg.context_length)
    curve = []

    def record(model, step):  # val cross-entropy, whatever loss the run trains with
        curve.append((step, evaluate(model, val_loader, lm_loss, eval_batches)))

    t0 = time.perf_counter()
    with PeakRSS(interval=0.01) as memory:
        train(student, optimizer, loader, loss_fn, max_steps=steps,
              eval_every=eval_every or steps, warmup_steps=max(1, steps // 20),
              lr_schedule="cosine", on_eval=record, device=device, progress=progress, seed=seed)
    seconds = time.perf_counter() - t0
    val_loss = evaluate(student, val_loader, lm_loss)
    test_loss = None if test_ids is None else evaluate(student, val_loader_for(test_ids, cfg.context_length), lm_loss)
    student.set_fast_path(False).eval()
    return StudentResult(name, val_loss, perplexity(val_loss), bytes_per_token, seconds,
                         memory.peak / 2**20, memory.peak_increase / 2**20, test_loss, curve,
                         student if keep_model else None)
