"""What makes a decoder a good classifier: one fine-tuning run per row, each changing one thing.

    python -m ch06_classify.experiments [--out CSV] [--rows default,first,...] [--device cpu]
                                        [--epochs N] [--lr LR] [--model gpt2|fallback|DIR]

Every row fine-tunes a fresh copy of the same pretrained model with the chapter's default setting
(the row "default": last-token pooling; last block + final norm + head trained; fixed-length
padding; AdamW as in `RECIPES`) except for the one thing the row names, then measures validation
and test accuracy. Each result is appended to the CSV as soon as its row finishes, so an
interrupted run loses at most the row in progress, and a second run skips the rows already in
the file (delete a line to redo it). The TF-IDF + logistic-regression row is the reference line
without any GPT. "seconds" is the fine-tuning wall time: compare rows of one run, on a machine
that is doing nothing else.

The base model comes from chapter 5's `load_base_model("gpt2")`: OpenAI's GPT-2 124M when its
weights can be had, else chapter 5's TinyStories model, and every row records which model
produced it. In fast mode (FAST_DEV_RUN=1) every row trains 1 epoch on a few dozen messages,
with GPT-2 only when $GPT2_DIR holds it, else the tiny fast fallback model.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from ch02_data import fast_dev_run, gpt2_encoding, pick
from ch02_data.checks import finite_number, positive_int
from ch04_gpt import GPTModel
from ch05_pretrain import Recipe, fast_adamw, fine_tune, get_device, move_to_device, recipe_for
from ch05_pretrain import load_base_model as ch05_load_base_model

from .baseline import tfidf_pipeline
from .classifier import accuracy, classification_loss, count_trainable, to_classifier
from .data import SpamDataset, balance, load_sms_spam, make_loader, split
from .finetune import RECIPES, prepare_classifier
from .results_csv import COLUMNS, append_result, default_out, open_results

__all__ = ["COLUMNS", "RECIPES", "ROWS", "ROW_NAMES", "Row", "SpamData", "check_plan", "default_out",
           "load_base_model", "main", "prepare_data", "run_experiments", "run_row"]

@dataclass(frozen=True)
class Row:
    """One experiment: the default recipe with the fields that differ set here."""

    name: str
    changed: str  # what differs from the default, in words (a CSV column)
    pooling: str = "last"  # see classifier.pool
    trainable: str = "last_block"  # see classifier.to_classifier
    causal: bool = True  # False: no causal mask, every token sees the whole message
    lora_rank: int | None = None  # LoRA adapters of this rank + a trainable head; None: no LoRA
    pad: str = "fixed"  # "fixed": every row padded to the longest training message; "longest": per batch
    tfidf: bool = False  # the scikit-learn baseline instead of a GPT


ROWS: tuple[Row, ...] = (
    Row("default", "nothing: last token, last block + final norm + head trained, fixed padding"),
    Row("first", "pooling: first token", pooling="first"),
    Row("mean", "pooling: mean over the message's tokens", pooling="mean"),
    Row("last_nonpad", "pooling: the message's own last token (not padding)", pooling="last_nonpad"),
    Row("bidir_first", "no causal mask (bidirectional), first-token pooling", causal=False, pooling="first"),
    Row("bidir_mean", "no causal mask (bidirectional), mean pooling", causal=False, pooling="mean"),
    Row("head", "trained: the new head only", trainable="head"),
    Row("all", "trained: every layer (full fine-tuning)", trainable="all"),
    Row("lora8", "trained: LoRA rank 8 (alpha 16) in every block + head", lora_rank=8),
    Row("lora16", "trained: LoRA rank 16 (alpha 16) in every block + head", lora_rank=16),
    Row("pad_longest", "padding: to the longest message of each batch", pad="longest"),
    Row("pad_longest_nonpad", "padding: longest of each batch, with last_nonpad pooling",
        pad="longest", pooling="last_nonpad"),
    Row("tfidf", "no GPT: TF-IDF + logistic regression (scikit-learn)", tfidf=True),
)
ROW_NAMES = tuple(r.name for r in ROWS)



@dataclass
class SpamData:
    """The balanced 70/10/20 split, as DataFrames (label, text) and as SpamDatasets."""

    frames: dict[str, pd.DataFrame]  # "train", "val", "test"
    datasets: dict[str, SpamDataset]


def prepare_data(context_length: int, tokenizer=None, subset: tuple[int, int, int] | None = None) -> SpamData:
    """Load, balance and split the SMS data, and tokenize it for a model with `context_length`.

    Every split is padded to the longest training message (capped at the context length), as in
    the book; longer validation/test messages are truncated. `subset` keeps only the first
    (train, val, test) messages of each split (fast mode).
    """
    frames = dict(zip(("train", "val", "test"), split(balance(load_sms_spam()))))
    if subset is not None:
        frames = {k: df.head(n) for (k, df), n in zip(frames.items(), subset)}
    tokenizer = tokenizer or gpt2_encoding()
    train_ds = SpamDataset(frames["train"].text, frames["train"].label, tokenizer)
    if train_ds.max_length > context_length:
        train_ds = SpamDataset(frames["train"].text, frames["train"].label, tokenizer, context_length)
    datasets = {"train": train_ds}
    for k in ("val", "test"):
        datasets[k] = SpamDataset(frames[k].text, frames[k].label, tokenizer, train_ds.max_length)
    return SpamData(frames, datasets)


def load_base_model(name: str, device: torch.device | str) -> tuple[GPTModel, str]:
    """The pretrained model to start from, and its name for the CSV: chapter 5's
    `load_base_model` (GPT-2 `name` when obtainable, else the fallback, in one printed line)."""
    base = ch05_load_base_model(name, device)
    return base.model, base.key


def run_row(row: Row, base: GPTModel | None, model_name: str, data: SpamData, recipe: Recipe,
            device: torch.device, progress: bool = False) -> dict:
    """Run one experiment on a copy of `base` and return its CSV row (a dict over COLUMNS)."""
    if row.tfidf:
        t0 = time.perf_counter()
        f = data.frames
        pipe = tfidf_pipeline().fit(f["train"].text, f["train"].label)
        seconds = time.perf_counter() - t0
        logreg = pipe[-1]
        return {"row": row.name, "changed": row.changed,
                "test_acc": pipe.score(f["test"].text, f["test"].label),
                "val_acc": pipe.score(f["val"].text, f["val"].label),
                "trainable_params": logreg.coef_.size + logreg.intercept_.size,
                "seconds": seconds, "model": "tfidf-logreg", "epochs": "", "lr": ""}

    model = copy.deepcopy(base).to(device)
    loaders = {
        k: make_loader(ds, batch_size=recipe.batch_size, shuffle=k == "train", pad=row.pad,
                       seed=recipe.seed, drop_last=k == "train" and len(ds) >= 2 * recipe.batch_size)
        for k, ds in data.datasets.items()
    }
    t0 = time.perf_counter()
    prepare_classifier(model, trainable=row.trainable, causal=row.causal, lora_rank=row.lora_rank,
                       device=device, seed=recipe.seed)
    fine_tune(model, loaders["train"], recipe=recipe, loss_fn=partial(classification_loss, pooling=row.pooling),
              device=device, progress=progress)
    seconds = time.perf_counter() - t0
    model.set_fast_path(True)  # fused kernels for the accuracies too, the same function (chapter 4)
    return {"row": row.name, "changed": row.changed,
            "test_acc": accuracy(model, loaders["test"], row.pooling),
            "val_acc": accuracy(model, loaders["val"], row.pooling),
            "trainable_params": count_trainable(model), "seconds": seconds,
            "model": model_name, "epochs": recipe.epochs, "lr": recipe.lr}


def _warm_up(base: GPTModel, data: SpamData, device: torch.device) -> None:
    """One untimed forward and backward pass, so the first row's wall time does not include
    one-time costs (memory allocation, kernel selection) that later rows do not pay."""
    model = to_classifier(copy.deepcopy(base).to(device).set_fast_path(True), trainable="all")
    batch = next(iter(make_loader(data.datasets["train"], batch_size=RECIPES["gpt2"].batch_size)))
    classification_loss(model, move_to_device(batch, device)).backward()
    fast_adamw(model.parameters(), lr=0.0).step()  # the first step in a process pays imports


def check_plan(rows: list[str] | None, out: str | Path | None, epochs: int | None = None,
               lr: float | None = None) -> tuple[list[str], Path, set[str]]:
    """Validate the arguments of `run_experiments` and the output file before anything runs.

    Returns (row names, output path, names of the rows already in it). Raises ValueError.
    """
    names = list(ROW_NAMES if rows is None else rows)
    unknown = [n for n in names if n not in ROW_NAMES]
    if unknown or not names:
        raise ValueError(f"rows={names}; choose from {', '.join(ROW_NAMES)}")
    positive_int("epochs", epochs, none_means="the recipe's")
    finite_number("lr", lr, 0, above=True, none_means="the recipe's")
    out = Path(out) if out is not None else default_out()
    return names, out, open_results(out)


def run_experiments(
    rows: list[str] | None = None,
    out: str | Path | None = None,
    device: torch.device | str | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    model: str | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Run the named rows (default: all of ROWS) that `out` does not hold yet, appending each
    result as it finishes, and return the whole CSV as a DataFrame.

    out: CSV path (default `default_out()`); checked writable before anything runs.
    epochs, lr: override the model's Recipe (fast mode: 1 epoch). model: a GPT-2 size ("gpt2",
    the default; the fallback when it cannot be had), "fallback", or a folder for `load_gpt2`.
    Columns: see COLUMNS; "seconds" is the fine-tuning wall time (no evaluation).
    """
    names, out, done = check_plan(rows, out, epochs, lr)  # fails before any model is loaded
    todo = [r for r in ROWS if r.name in names and r.name not in done]
    skipped = [n for n in names if n in done]
    if skipped:
        print(f"{len(skipped)} rows already in {out} are skipped: {', '.join(skipped)}")

    if todo:
        fast = fast_dev_run()
        device = device if isinstance(device, torch.device) else get_device(device)
        base, model_name, context = None, "tfidf-logreg", 1024
        if any(not r.tfidf for r in todo):
            base, model_name = load_base_model(model or "gpt2", device)  # fast mode: GPT2_DIR or the fallback
            context = base.cfg.context_length
        recipe = recipe_for(RECIPES, model_name)
        recipe = replace(recipe, lr=lr or recipe.lr, epochs=epochs or pick(full=recipe.epochs, fast=1))
        data = prepare_data(context, subset=(64, 32, 32) if fast else None)
        if base is not None:
            _warm_up(base, data, device)
        bar = tqdm(todo, desc="experiments", unit="row", disable=not progress)
        for row in bar:
            bar.set_postfix_str(row.name)
            result = run_row(row, base, model_name, data, recipe, device)
            append_result(out, result)
            bar.write(f"{row.name:20s} test {result['test_acc']:.2%}  val {result['val_acc']:.2%}  "
                      f"{result['trainable_params']:>11,} params  {result['seconds']:6.1f} s")
    return pd.read_csv(out) if out.stat().st_size else pd.DataFrame(columns=COLUMNS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help=f"CSV to append to (default {default_out()})")
    parser.add_argument("--rows", default=None, help=f"comma-separated subset of: {', '.join(ROW_NAMES)}")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument("--lr", type=float, default=None, help="override the recipe's learning rate")
    parser.add_argument("--model", default=None, help="gpt2 (default), fallback, or a load_gpt2 folder")
    args = parser.parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()] if args.rows else None
    try:  # bad arguments, an unwritable file or a missing device: one line, no traceback
        check_plan(rows, args.out, args.epochs, args.lr)
        device = get_device(args.device)
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table = run_experiments(rows, args.out, device, args.epochs, args.lr, args.model)
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(table.drop(columns=["changed"]).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
