"""A small GPT trained on TinyStories: the stand-in when OpenAI's GPT-2 weights are unavailable.

Chapters 6 and 7 and the bonus material start from a pretrained model. When the GPT-2 weights
cannot be downloaded (firewall, offline, no disk space), they call `get_fallback_model()`
instead. The first call pretrains a compact GPT on 2 MiB of TinyStories (Eldan & Li 2023)
with this chapter's `train` on the fast path (614k tokens: 10 minutes at ~1,000 tokens/s on an
idle 2-core Xeon with `lm_loss`, 9.1 minutes on an idle 2-core EPYC with the chunked loss); the
model uses GPT-2's tokenizer and vocabulary, so it plugs into every later chapter unchanged. Its loss is `lm_loss`
computed chunk by chunk (`chunked_lm_loss`, the same value and gradients): the output head over
50,257 tokens is most of this small model's step, and skipping the full logits makes a step take
0.77 of the time (`benchmarks/bench_recipes.py`).
The result is cached under `<repository>/checkpoints/` (set CHECKPOINT_DIR to move it), and
later calls load it in about a second. Pre-train it ahead of time with

    python -m ch05_pretrain.fallback

In fast mode (FAST_DEV_RUN=1) a tiny model trains for a few seconds instead, cached under a
different file name so fast and full runs never mix.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ch02_data import EOT_ID, create_dataloader, fast_dev_run, fetch, gpt2_encoding
from ch04_gpt import GPTConfig, GPTModel

from .checkpoint import load_checkpoint, save_checkpoint, unwritable_reason
from .chunked_loss import chunked_lm_loss
from .device import fast_adamw, get_device
from .generate import generate
from .losses import LossFn, perplexity
from .train import train

DATA_FILE = "tinystories-train-sample-2MiB.txt"
CHECKPOINT_ENV_VAR = "CHECKPOINT_DIR"
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the fallback model; a cached model is reused only if it matches."""

    file_name: str  # cache file inside the checkpoint folder
    cfg: GPTConfig
    batch_size: int  # B sequences of cfg.context_length tokens per optimizer step
    max_steps: int
    lr: float
    warmup_steps: int
    eval_every: int
    text_chars: int | None  # use only the first characters of the data file (None: all)
    val_fraction: float = 0.05  # the last 5% of the text (whole stories) is held out
    weight_decay: float = 0.1
    seed: int = 123


# GPT-2's vocabulary and tokenizer with a much smaller body: 16.1M parameters, 12.9M of them
# in the (tied) token embedding. 600 steps of 4 x 256 tokens = 614k tokens, ~1.3 epochs; at equal
# tokens, batch 4 reached a lower validation loss than batch 8 (more updates), and lr 1e-3 a lower
# one than 3e-3 (measured on this recipe at 1/3 length).
FULL = Recipe(
    file_name="tinystories-fallback.pt",
    cfg=GPTConfig(vocab_size=50257, context_length=256, emb_dim=256, n_heads=4, n_layers=4,
                  drop_rate=0.0, tie_weights=True),
    batch_size=4, max_steps=600, lr=1e-3, warmup_steps=50, eval_every=100, text_chars=None,
)
# Fast mode: a few seconds, only to check that everything downstream runs. Its window (128) holds
# a chapter-7 prompt with its answer, so the instruction and DPO notebooks have tokens to train on.
FAST = Recipe(
    file_name="tinystories-fallback-fast.pt",
    cfg=GPTConfig(vocab_size=50257, context_length=128, emb_dim=32, n_heads=2, n_layers=1,
                  drop_rate=0.0, tie_weights=True),
    batch_size=4, max_steps=20, lr=3e-3, warmup_steps=2, eval_every=10, text_chars=40_000,
)


def checkpoint_dir() -> Path:
    """Where trained models are cached: $CHECKPOINT_DIR, else `<repository>/checkpoints` (git-ignored)."""
    return Path(os.environ.get(CHECKPOINT_ENV_VAR) or REPO_ROOT / "checkpoints")


def shown(path: Path) -> str:
    """`path` as messages print it: relative to the repository when inside it, so notebook
    outputs hold no absolute path of the machine that ran them."""
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _warn(message: str) -> None:
    """One line on stderr, shown even with verbose=False: it means work will not be kept."""
    print(f"Warning: {message}", file=sys.stderr)


def _first_line(error: BaseException) -> str:
    """`Type: first line of the message`, short enough for a one-line warning."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__


def current_recipe() -> Recipe:
    """FAST in fast mode (FAST_DEV_RUN=1), else FULL."""
    return FAST if fast_dev_run() else FULL


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
    """Split at the story boundary (`<|endoftext|>`) nearest before the last `val_fraction`."""
    eot = "<|endoftext|>"
    cut = int(len(text) * (1 - val_fraction))
    boundary = text.rfind(eot, 0, cut + len(eot))  # the last marker that starts by `cut`
    cut = boundary if boundary > 0 else cut
    return text[:cut], text[cut:]


def train_fallback(recipe: Recipe, device: torch.device, verbose: bool = True,
                   loss_fn: LossFn = chunked_lm_loss) -> tuple[GPTModel, dict]:
    """Pretrain the fallback model from scratch following `recipe`; return it and its info.
    `loss_fn` is there for the test that checks `chunked_lm_loss` trains it as `lm_loss` does."""
    text = fetch(DATA_FILE).read_text(encoding="utf-8")[: recipe.text_chars]
    train_text, val_text = split_text(text, recipe.val_fraction)
    tokenizer = gpt2_encoding()  # offline-capable
    T = recipe.cfg.context_length

    torch.manual_seed(recipe.seed)  # same weights and shuffle order on every run
    # stride = T: windows touch but do not overlap, so each token is an input once per epoch.
    train_loader = create_dataloader(train_text, batch_size=recipe.batch_size, max_length=T,
                                     stride=T, shuffle=True, drop_last=True, tokenizer=tokenizer)
    val_loader = create_dataloader(val_text, batch_size=recipe.batch_size, max_length=T,
                                   stride=T, shuffle=False, drop_last=False, tokenizer=tokenizer)
    model = GPTModel(recipe.cfg).set_fast_path(True).to(device)  # fused kernels, same function
    optimizer = fast_adamw(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    if verbose:
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{n_params / 1e6:.1f}M parameters, {recipe.max_steps} steps of "
              f"{recipe.batch_size} x {T} tokens ({len(train_loader)} batches per epoch).")

    t0 = time.perf_counter()
    history = train(
        model, optimizer, train_loader, loss_fn, val_loader=val_loader,
        max_steps=recipe.max_steps, eval_every=recipe.eval_every,
        warmup_steps=recipe.warmup_steps, lr_schedule="cosine", min_lr_ratio=0.1,
        device=device, progress=verbose, seed=recipe.seed,
    )
    seconds = time.perf_counter() - t0
    model.set_fast_path(False).eval()  # hand out the readable path, as every GPTModel starts
    info = {
        "recipe": asdict(recipe),  # plain dicts and numbers: weights_only can read them
        "fast": recipe == FAST,
        "data": DATA_FILE,
        "config": recipe.cfg.to_dict(),
        "steps": history.step[-1],
        "tokens_seen": history.tokens_seen[-1],
        "train_loss": history.train_loss[-1],  # mean over the last evaluation interval
        "val_loss": history.val_loss[-1],
        "val_perplexity": perplexity(history.val_loss[-1]),
        "train_seconds": seconds,
        "tokens_per_second": history.tokens_seen[-1] / seconds,
        "trained_on": str(device),
        "torch_version": str(torch.__version__),  # a str subclass weights_only refuses
        "history": history.to_dict(),
    }
    return model, info


def get_fallback_model(
    device: torch.device | str = "cpu", verbose: bool = True, retrain: bool = False
) -> tuple[GPTModel, dict]:
    """The TinyStories fallback GPT in eval mode on `device`, and a dict describing it.

    The first call (or `retrain=True`) trains it on `device` and caches it; later calls load
    the cache. The dict holds its config, final train/val loss, perplexity, training time,
    tokens/s and the loss history, plus "path" (None when it could not be cached) and
    "from_cache". An unreadable cache file is reported and replaced by a newly trained model; a
    cache folder that cannot be written is reported before training, and the model is returned
    uncached.
    """
    recipe = current_recipe()
    device = torch.device(device)
    path = checkpoint_dir() / recipe.file_name
    if path.is_file() and not retrain:
        cached = _load_cached(path, recipe, device, verbose)
        if cached is not None:
            return cached

    # Check the cache folder now, not after ten minutes of training: a model that cannot be
    # saved is still returned, with a warning instead of an error that would discard it.
    problem = unwritable_reason(path)
    if problem is not None:
        _warn(f"the fallback model cannot be cached at {shown(path)} ({problem}); training it anyway "
              f"(set {CHECKPOINT_ENV_VAR} to a writable folder to keep it).")
    if verbose:
        print(f"Training the TinyStories fallback model on {device}"
              + (f"; it is cached at {shown(path)}." if problem is None else "."))
    model, info = train_fallback(recipe, device, verbose)
    if problem is None:
        try:
            save_checkpoint(path, model, info=info)  # atomic: replaces a corrupt file in one step
        except Exception as e:  # disk full, folder removed meanwhile, ...: keep the model
            problem = _first_line(e)
            _warn(f"the fallback model could not be cached at {shown(path)} ({problem}); returning it "
                  f"uncached (set {CHECKPOINT_ENV_VAR} to a writable folder to keep it).")
    if verbose:
        print(f"Done in {info['train_seconds'] / 60:.1f} min ({info['tokens_per_second']:.0f} "
              f"tokens/s): train loss {info['train_loss']:.3f}, val loss {info['val_loss']:.3f} "
              f"(perplexity {info['val_perplexity']:.1f}).")
    return model, {**info, "path": str(path) if problem is None else None, "from_cache": False}


def _load_cached(
    path: Path, recipe: Recipe, device: torch.device, verbose: bool
) -> tuple[GPTModel, dict] | None:
    """The cached model and its info, or None when the file is unreadable or another recipe's."""
    try:
        ckpt = load_checkpoint(path, device)
        if ckpt.get("info", {}).get("recipe") != asdict(recipe):
            if verbose:
                print(f"{shown(path)} was trained with another recipe; training again.")
            return None
        model = GPTModel(recipe.cfg).to(device)
        model.load_state_dict(ckpt["model"])
    except Exception as e:  # truncated, garbage, not a checkpoint, wrong tensors: train anew
        _warn(f"cannot read the cached fallback model {shown(path)} ({_first_line(e)}); training it "
              f"again and replacing the file.")
        return None
    info = {**ckpt["info"], "path": str(path), "from_cache": True}
    if verbose:
        print(f"Loaded the TinyStories fallback model from {shown(path)} "
              f"(val loss {info['val_loss']:.3f}).")
    return model.eval(), info


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Pre-train (or load) the TinyStories fallback GPT.")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    parser.add_argument("--retrain", action="store_true", help="train again even if cached")
    parser.add_argument("--prompt", default="Once upon a time", help="prompt for a sample")
    parser.add_argument("--seed", type=int, default=123, help="seed for sampling")
    args = parser.parse_args(argv)

    model, info = get_fallback_model(get_device(args.device), retrain=args.retrain)
    tokenizer = gpt2_encoding()  # offline-capable
    device = next(model.parameters()).device
    idx = torch.tensor([tokenizer.encode(args.prompt)], device=device)
    g = torch.Generator(device=device).manual_seed(args.seed)
    out = generate(model, idx, max_new_tokens=80, temperature=0.8, top_k=40, eos_id=EOT_ID, generator=g)
    print(f"Sample (temperature 0.8, top-k 40): {tokenizer.decode(out[0].tolist())!r}")


if __name__ == "__main__":
    main()
