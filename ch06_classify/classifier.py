"""A pretrained GPT as a text classifier: a new output head, pooling, loss, accuracy, prediction.

The language model's head maps each position's vector to V next-token logits. For classification
`to_classifier` swaps it for a small (C -> num_classes) layer, so the model returns (B, T, K)
class logits, one set per position, and `pool` decides which position (or average of positions)
speaks for the whole message. Training reuses chapter 5's `train` unchanged: only the batches
(`{"input_ids", "labels", "lengths"}`) and the loss (`classification_loss`) are new.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ch02_data import EOT_ID, gpt2_encoding
from ch03_attention.attention import MultiHeadAttention
from ch04_gpt import GPTConfig, GPTModel
from ch02_data.checks import int_at_least
from ch05_pretrain import load_checkpoint, save_checkpoint, unwrap
from ch05_pretrain.losses import evaluation_batches

from .data import LABELS
from .lora import LoRALinear, add_lora

POOLINGS = ("last", "first", "mean", "last_nonpad")
TRAINABLE = ("head", "last_block", "all")


def to_classifier(model: GPTModel, num_classes: int = 2, trainable: str = "last_block") -> GPTModel:
    """Turn a GPT language model into a classifier in place and return it.

    `model.out_head` becomes a fresh `nn.Linear(C, num_classes)` (with bias), so the forward pass
    returns (B, T, num_classes) logits. A head tied to the token embedding is untied by this:
    the embedding stays, the old head is gone. Then parameters are frozen except:
        "head":       the new head only (a linear probe on the pretrained features);
        "last_block": the last transformer block, the final norm and the head (the book's default);
        "all":        every parameter (full fine-tuning).
    Layers added by `add_lora` keep LoRA's split in every mode: the wrapped weights frozen, the
    adapters A and B trainable. Draw the head's random init under a seed (`torch.manual_seed`)
    for reproducible runs.
    """
    int_at_least("num_classes", num_classes, 2)
    if trainable not in TRAINABLE:
        raise ValueError(f"trainable={trainable!r}; choose one of {', '.join(TRAINABLE)}")
    if not all(hasattr(model, name) for name in ("out_head", "blocks", "final_norm")):
        raise ValueError(f"model is a {type(model).__name__}; to_classifier needs a ch04_gpt.GPTModel")
    old = model.out_head.weight
    C = old.shape[1]
    # Created where the old head lives, in its dtype, so a GPU or bfloat16 model stays one piece.
    model.out_head = nn.Linear(C, num_classes, device=old.device, dtype=old.dtype)

    model.requires_grad_(trainable == "all")
    if trainable in ("head", "last_block"):
        model.out_head.requires_grad_(True)
    if trainable == "last_block":
        # The last block and the final norm sit right below the head: adapting them lets the
        # features change a little for the new task at a fraction of full fine-tuning's cost.
        model.blocks[-1].requires_grad_(True)
        model.final_norm.requires_grad_(True)
    for layer in model.modules():  # after add_lora: its layers keep LoRA's split, whatever the mode
        if isinstance(layer, LoRALinear):
            layer.linear.requires_grad_(False)  # the pretrained weight stays frozen
            layer.A.requires_grad_(True)
            layer.B.requires_grad_(True)
    return model


def _check_is_classifier(model: nn.Module, where: str) -> None:
    """Refuse a language model that never went through `to_classifier`: its "class logits"
    would be next-token logits over the whole vocabulary, and the numbers meaningless."""
    inner = unwrap(model)
    head, cfg = getattr(inner, "out_head", None), getattr(inner, "cfg", None)
    classes = getattr(head, "out_features", None)
    if cfg is not None and classes is not None and classes == getattr(cfg, "vocab_size", None):
        raise ValueError(f"{where} got a language model (its head gives {classes:,} logits, one "
                         "per vocabulary token), not a classifier; pass it through "
                         "to_classifier(model) first")


def count_trainable(model: nn.Module) -> int:
    """Number of parameters with requires_grad=True (shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def pool(logits: torch.Tensor, lengths: torch.Tensor | None, pooling: str = "last") -> torch.Tensor:
    """Per-position logits (B, T, K) -> one row of logits per message (B, K).

    pooling:
        "last":        position T-1. With padding this may be a pad token; under causal attention
                       it still sees the whole message before it, which is why it works at all.
        "first":       position 0. Under causal attention it sees only the first token.
        "mean":        the mean over the real (non-padding) positions 0..lengths-1.
        "last_nonpad": position lengths-1, the message's own last token.
    lengths: (B,) number of real tokens per row (1..T); None means no padding (all T).
    Averaging logits equals averaging the final hidden states and then applying the head,
    because the head is linear.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r}; choose one of {', '.join(POOLINGS)}")
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
        got = f"shape {tuple(logits.shape)}" if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits has {got}; pool needs per-position class logits (B, T, K), "
                         "as a classifier returns them")
    B, T, K = logits.shape
    if pooling == "last":
        return logits[:, -1, :]
    if pooling == "first":
        return logits[:, 0, :]
    if lengths is None:
        lengths = torch.full((B,), T, device=logits.device)
    lengths = lengths.to(logits.device).long()
    if lengths.shape != (B,) or bool(((lengths < 1) | (lengths > T)).any()):
        raise ValueError(f"lengths={lengths.tolist()}; need {B} values between 1 and T={T}")
    if pooling == "last_nonpad":
        return logits[torch.arange(B, device=logits.device), lengths - 1]  # (B, K)
    real = torch.arange(T, device=logits.device) < lengths[:, None]  # (B, T): True = real token
    summed = (logits * real[:, :, None]).sum(dim=1)  # (B, K); padding contributes zeros
    return summed / lengths[:, None].to(logits.dtype)


def _check_batch(batch, needs: tuple[str, ...]) -> None:
    """Refuse anything but a dict holding the keys `needs` (a chapter-5 (inputs, targets)
    tuple, say), in one sentence."""
    if not isinstance(batch, dict):
        raise ValueError(f"batch is a {type(batch).__name__}; a classification batch is a dict "
                         f"with {', '.join(map(repr, needs))} (SpamDataset's, via make_loader)")
    missing = [key for key in needs if key not in batch]
    if missing:
        raise ValueError(f"batch has keys {sorted(batch)} but lacks {missing}; a classification "
                         f"batch needs {', '.join(map(repr, needs))} (SpamDataset's, via make_loader)")


def class_logits(model: nn.Module, batch: dict, pooling: str = "last") -> torch.Tensor:
    """(B, K) class logits of a batch dict with "input_ids" (B, T) and optionally "lengths" (B,)."""
    _check_batch(batch, ("input_ids",))
    _check_is_classifier(model, "class_logits")
    logits = model(batch["input_ids"])  # (B, T, K)
    return pool(logits, batch.get("lengths"), pooling)


def classification_loss(model: nn.Module, batch: dict, pooling: str = "last") -> torch.Tensor:
    """Mean cross-entropy of the pooled class logits against batch["labels"] (B,) int64.

    Plugs into chapter 5's loop: `train(..., loss_fn=partial(classification_loss, pooling=...))`.
    """
    _check_batch(batch, ("input_ids", "labels"))
    return F.cross_entropy(class_logits(model, batch, pooling), batch["labels"])


@torch.no_grad()
def accuracy(model: nn.Module, loader, pooling: str = "last", max_batches: int | None = None) -> float:
    """Fraction of correctly classified messages over the first `max_batches` batches of
    `loader` (None: all), in eval mode (no dropout); the model's mode is restored afterwards.
    Batches are moved to the model's device."""
    _check_is_classifier(model, "accuracy")
    correct, total = 0, 0
    with evaluation_batches(model, loader, max_batches) as batches:
        for batch in batches:
            _check_batch(batch, ("input_ids", "labels"))
            predicted = class_logits(model, batch, pooling).argmax(dim=-1)  # (B,)
            correct += int((predicted == batch["labels"]).sum())
            total += batch["labels"].numel()
    if total == 0:
        raise ValueError("the loader yielded no examples; accuracy is undefined")
    return correct / total


def _encode(tokenizer, text: str) -> list[int]:
    """Token ids of `text`; with a tiktoken encoding, "<|endoftext|>" typed in a message is
    encoded as ordinary text instead of raising (it is data here, not a control token)."""
    try:
        return tokenizer.encode(text, disallowed_special=())
    except TypeError:  # a tokenizer without tiktoken's special-token options
        return tokenizer.encode(text)


@torch.no_grad()
def classify(
    text: str,
    model: nn.Module,
    tokenizer=None,
    max_length: int | None = None,
    pooling: str = "last",
    pad_id: int = EOT_ID,
    class_names: Sequence[str] = LABELS,
) -> tuple[str, float]:
    """Classify one message; return (class name, probability of that predicted class).

    The text is encoded (GPT-2's tokenizer by default) and prepared as in training:
    - longer than `max_length` tokens: only the LAST `max_length` tokens are kept, so the
      position that "last" pooling reads still sees the message's final words (training data
      is cut at the end instead: SpamDataset keeps the first tokens);
    - shorter: right-padded with `pad_id` up to `max_length`, so "last" pooling reads the same
      position it was trained on. Pass the training dataset's max_length here.
    `max_length=None` means the model's context length, without padding.
    Empty text becomes a single `pad_id` token; emoji and other non-ASCII text are fine
    (byte-level BPE encodes any string).
    """
    if not isinstance(text, str):
        raise TypeError(f"text is a {type(text).__name__}; pass a str")
    context = unwrap(model).cfg.context_length if hasattr(unwrap(model), "cfg") else None
    if max_length is not None and (
        isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1
        or (context is not None and max_length > context)
    ):
        raise ValueError(f"max_length={max_length!r}; use None or an integer from 1 to the "
                         f"model's context length {context}")
    window = max_length or context
    if window is None:
        raise ValueError("the model has no cfg.context_length; pass max_length")
    tokenizer = tokenizer or gpt2_encoding()
    ids = _encode(tokenizer, text)[-window:] or [pad_id]  # keep the end
    length = len(ids)
    if max_length is not None:
        ids = ids + [pad_id] * (max_length - length)
    device = next(model.parameters()).device
    batch = {"input_ids": torch.tensor([ids], device=device),
             "lengths": torch.tensor([length], device=device)}
    was_training = model.training
    model.eval()
    try:
        probs = torch.softmax(class_logits(model, batch, pooling).float(), dim=-1)[0]  # (K,)
    finally:
        model.train(was_training)
    if len(class_names) != probs.numel():
        raise ValueError(f"class_names={tuple(class_names)!r} names {len(class_names)} classes; "
                         f"the model has {probs.numel()}")
    k = int(probs.argmax())
    return class_names[k], float(probs[k])


def _lora_settings(model: nn.Module) -> dict | None:
    """{"rank", "alpha"} of the model's LoRA layers, or None without LoRA."""
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    if not layers:
        return None
    settings = {(m.rank, m.alpha) for m in layers}
    if len(settings) > 1:
        raise ValueError(f"LoRA layers with different (rank, alpha) {sorted(settings)} cannot be saved")
    (rank, alpha), = settings
    return {"rank": rank, "alpha": alpha}


def save_classifier(path: str | os.PathLike, model: nn.Module, **extra) -> Path:
    """Save a classifier with what it takes to rebuild it: the GPT config, the number of
    classes, its LoRA rank/alpha (if any) and whether attention is causal. `extra` values
    (plain Python: e.g. max_length=120, pooling="last") are stored too. Written atomically."""
    model = unwrap(model)
    if not isinstance(model, GPTModel):
        raise ValueError(f"model is a {type(model).__name__}; save_classifier needs a GPTModel")
    _check_is_classifier(model, "save_classifier")
    reserved = {"num_classes", "lora", "causal", "model", "config", "optimizer"} & set(extra)
    if reserved:
        raise ValueError(f"extra keys {sorted(reserved)} are reserved; rename them")
    causal = all(m.causal for m in model.modules() if isinstance(m, MultiHeadAttention))
    return save_checkpoint(path, model, None, num_classes=model.out_head.out_features,
                           lora=_lora_settings(model), causal=causal, extra=dict(extra))


def load_classifier(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[GPTModel, dict]:
    """Rebuild a classifier saved by `save_classifier`; return (model in eval mode, extra dict).

    Loaded with `weights_only=True` (ch05's load_checkpoint): nothing in the file is executed.
    """
    ckpt = load_checkpoint(path, device)
    if "num_classes" not in ckpt or ckpt.get("config") is None:
        raise ValueError(f"{path} is not a classifier checkpoint (written by save_classifier)")
    vocab = ckpt["config"].get("vocab_size") if isinstance(ckpt["config"], dict) else None
    if ckpt["num_classes"] == vocab:
        raise ValueError(f"{str(path)!r} was saved from a model never passed through "
                         f"to_classifier (its {vocab:,} classes are the vocabulary); load it with "
                         "ch05_pretrain.load_model, or save a classifier made by to_classifier")
    model = to_classifier(GPTModel(GPTConfig.from_dict(ckpt["config"])), ckpt["num_classes"], "all")
    if ckpt["lora"] is not None:
        add_lora(model, **ckpt["lora"])
    model.set_causal(ckpt["causal"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), dict(ckpt["extra"])

