"""The model behind the chat page: one checkpoint loaded once, described in the page header,
and decoded one token at a time.

`stream_tokens` is chapter 5's decoding loop (KV cache, sampling through `sample_next_token`)
written as a Python generator, so that the page can show each token as soon as it is chosen;
chapter 5's `generate` returns only when it is done. A test checks both give the same tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ch02_data import fast_dev_run, gpt2_encoding
from ch04_gpt import GPTConfig, GPTModel
from ch05_pretrain import get_device, load_base_model, load_checkpoint, sample_next_token
from ch05_pretrain.fallback import checkpoint_dir, current_recipe, shown

from .finetune import instruction_checkpoint_path


@dataclass
class Bundle:
    """What the page serves: one model, its tokenizer, and an optional chapter-6 classifier."""

    model: GPTModel  # eval mode, on `device`
    path: Path
    kind: str  # "instruction" (chapter 7) or "pretrained" (chapter 5, or any plain GPT checkpoint)
    fallback: bool  # built on chapter 5's TinyStories model because GPT-2's weights were missing
    device: torch.device
    tokenizer: object
    classifier: GPTModel | None = None
    classifier_extra: dict | None = None  # max_length, pooling ... as save_classifier stored them
    classifier_path: Path | None = None

    def add_classifier(self, path: str | Path) -> "Bundle":
        """Load a classifier saved by chapter 6's `save_classifier` (weights_only) for the Classify tab."""
        from ch06_classify import load_classifier  # chapter 6 only when its tab is used

        self.classifier, self.classifier_extra = load_classifier(path, self.device)
        self.classifier_path = Path(path)
        return self


def default_checkpoint() -> Path | None:
    """The best model in the checkpoint folder: chapter 7's instruction model (made from GPT-2
    355M, 124M or the TinyStories fallback, in that order), else chapter 5's fallback model."""
    fast = "-fast" if fast_dev_run() else ""
    bases = ("gpt2-medium", "gpt2", f"tinystories-fallback{fast}")
    candidates = [instruction_checkpoint_path(b) for b in bases]
    candidates.append(checkpoint_dir() / current_recipe().file_name)
    return next((p for p in candidates if p.is_file()), None)


def load_bundle(checkpoint: str | Path, device: torch.device | str | None = None) -> Bundle:
    """Load a GPT checkpoint once, for every request, on `device` (default: `get_device()`).

    The file is read with `weights_only=True` (chapter 5's `load_checkpoint`): nothing in it is
    executed. The model runs on its fast path (fused kernels; tested equal to the readable
    one). Raises ValueError for a file that is not a GPT language-model checkpoint.
    """
    device = get_device(None if device is None else str(device))  # checks the accelerator exists
    path = Path(checkpoint)
    ckpt = load_checkpoint(path, device)
    if "num_classes" in ckpt:
        raise ValueError(f"{str(path)!r} is a chapter-6 classifier; pass it with --classifier")
    if ckpt.get("config") is None:
        raise ValueError(f"{str(path)!r} holds no model config; save it with save_checkpoint")
    model = GPTModel(GPTConfig.from_dict(ckpt["config"]))
    model.load_state_dict(ckpt["model"])
    model = model.to(device).set_fast_path(True).eval()
    base = str(ckpt.get("base") or "")  # chapter 7 stores the base model's name
    recipe = (ckpt.get("info") or {}).get("recipe") or {}  # chapter 5's fallback stores its recipe
    fallback = base.startswith("tinystories") or str(recipe.get("file_name", "")).startswith("tinystories")
    return Bundle(model, path, "instruction" if base else "pretrained", fallback, device, gpt2_encoding())


def bundle_from_base(name: str = "gpt2", device: torch.device | str | None = None) -> Bundle:
    """A pretrained base model for the page, through chapter 5's `load_base_model`: GPT-2 `name`
    when it can be had (GPT2_DIR, the Hugging Face cache or the hub), else the fallback; one
    printed line says which."""
    device = get_device(None if device is None else str(device))
    base = load_base_model(name, device)
    model = base.model.to(device).set_fast_path(True).eval()
    return Bundle(model, Path(base.key), "pretrained", not base.is_gpt2, device, gpt2_encoding())


def describe(bundle: Bundle) -> str:
    """The page header (Markdown): which model is loaded, and what to expect of it."""
    cfg = bundle.model.cfg
    n_params = sum(p.numel() for p in bundle.model.parameters()) / 1e6
    what = ("chapter 7's instruction-tuned model" if bundle.kind == "instruction"
            else "a pretrained model (not instruction-tuned)")
    lines = [f"# Talk to your model\n\n**Loaded:** {what}, `{shown(bundle.path)}`: {n_params:.1f}M "
             f"parameters, a window of {cfg.context_length} tokens, on `{bundle.device}`."]
    if bundle.fallback:
        lines.append("**This is the fallback model**: OpenAI's GPT-2 weights were not available, so "
                     "it is built on chapter 5's small TinyStories model. Expect short, simple and "
                     "often wrong answers.")
    if bundle.kind == "pretrained":
        lines.append("It was never taught to follow instructions: the Complete tab suits it best.")
    return "\n\n".join(lines)


# --- Generation, one token at a time --------------------------------------------------------------


@torch.no_grad()
def stream_tokens(model: GPTModel, ids: list[int], max_new_tokens: int, temperature: float = 0.0,
                  top_k: int | None = None, top_p: float | None = None, eos_id: int | None = None,
                  generator: torch.Generator | None = None) -> Iterator[int]:
    """Yield the token ids that follow `ids` one at a time, each as soon as it is chosen.

    The same decoding as `ch05_pretrain.generate` for a batch of one (tests check the tokens are
    equal): the prompt is read once into a fresh KV cache, then each step feeds only the newest
    token; `eos_id` is yielded and ends the stream. Past the window the cache is stale (absolute
    positions shift), so each step re-reads the last `context_length` tokens, as `generate` does.
    Only the last position goes through the output head: the others' logits are never used.
    """
    if not ids:
        raise ValueError("ids is empty; give at least one token id")
    n_ctx = model.cfg.context_length
    device = next(model.parameters()).device
    idx = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T)
    cache = model.new_kv_cache()  # this request's own cache: nothing is shared between requests
    was_training = model.training
    model.eval()
    try:
        for step in range(max_new_tokens):
            if idx.size(1) > n_ctx:  # the window slid: recompute it without the cache
                hidden = model.hidden_states(idx[:, -n_ctx:])
            elif step == 0:  # prefill: the whole prompt into the cache
                hidden = model.hidden_states(idx, cache, start_pos=0)
            else:  # decode: the newest token only
                hidden = model.hidden_states(idx[:, -1:], cache, start_pos=idx.size(1) - 1)
            logits = model.out_head(hidden[:, -1, :])  # (1, V)
            next_id = sample_next_token(logits, temperature, top_k, top_p, generator)  # (1, 1)
            yield int(next_id)
            if eos_id is not None and int(next_id) == eos_id:
                return
            idx = torch.cat([idx, next_id], dim=1)  # (1, T + 1)
    finally:
        model.train(was_training)


def decode(tokenizer, ids: list[int], final: bool = True) -> str:
    """Text of token ids. A token can end in the middle of a UTF-8 character (an emoji takes
    several); while streaming (`final=False`) such an unfinished character is left out."""
    return tokenizer.decode_bytes(ids).decode("utf-8", errors="replace" if final else "ignore")
