"""Instruction data: load and split it, format it as prompts, tokenize it and collate batches.

The data set is 1,100 entries `{"instruction", "input", "output"}` (the `input` is often empty),
published with *Build a Large Language Model (From Scratch)*. One prompt format is used for
training, generation and evaluation alike (`format_prompt`), so the model is asked questions in
exactly the text it was trained on. A training example is the prompt's tokens, then the output's
tokens, then one `<|endoftext|>`; `collate` pads a batch, shifts the targets by one and marks
with -100 the targets the loss must ignore.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from functools import partial

import torch
from torch.utils.data import DataLoader, Dataset

from ch02_data import EOT_ID, fetch, gpt2_encoding, seeded_loader
from ch02_data.checks import is_int, positive_int
from ch05_pretrain import IGNORE_INDEX

DATA_NAME = "instruction-data.json"  # a key of ch02_data.SOURCES (URL and sha256 pinned there)
KEYS = ("instruction", "input", "output")
STYLES = ("alpaca", "phi3")

ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)


# --- Loading and splitting --------------------------------------------------------------------


def check_entries(entries, name: str = "entries", need_output: bool = True) -> list[dict]:
    """Return `entries` as a list after checking each is a dict of strings with the keys.

    "input" may be missing (taken as empty); "output" may be missing only when `need_output`
    is False (generation needs no reference). Raises ValueError naming the first bad entry.
    """
    if isinstance(entries, (str, bytes, dict)) or not isinstance(entries, Sequence):
        raise ValueError(
            f"{name} is a {type(entries).__name__}; give a list of dicts with the keys {KEYS}"
        )
    for i, entry in enumerate(entries):
        check_entry(entry, f"{name}[{i}]", need_output)
    return list(entries)


def check_entry(entry, name: str = "entry", need_output: bool = True) -> dict:
    """Return `entry` after checking it is a dict of strings with the keys `check_entries` needs;
    a ValueError names `name`, the key and what it holds instead."""
    required = ("instruction", "output") if need_output else ("instruction",)
    if not isinstance(entry, dict):
        raise ValueError(f"{name} is a {type(entry).__name__}; each entry must be a dict with the keys {KEYS}")
    for key in required:
        if key not in entry:
            raise ValueError(f"{name} has no {key!r} key (it has {sorted(map(str, entry))}); each entry needs {required}")
    for key in KEYS:
        if key in entry and not isinstance(entry[key], str):
            raise ValueError(f"{name}[{key!r}] is a {type(entry[key]).__name__}; it must be a str (empty is allowed)")
    return entry


def load_instruction_data() -> list[dict]:
    """The 1,100 instruction entries, downloaded once (sha256-verified) or taken from DATA_MIRROR."""
    with open(fetch(DATA_NAME), encoding="utf-8") as f:
        return check_entries(json.load(f), DATA_NAME)


def split_entries(
    entries: Sequence[dict], fractions: tuple[float, float] = (0.85, 0.10), seed: int | None = 123
) -> tuple[list[dict], list[dict], list[dict]]:
    """Shuffle (with `seed`; None keeps the order) and split into (train, val, test).

    `fractions` are those of train and test, as in the book: 85% train, 10% test and the rest,
    5%, validation. For 1,100 entries that is 935 / 55 / 110.
    """
    train_frac, test_frac = fractions
    if not (0 < train_frac < 1 and 0 < test_frac < 1 and train_frac + test_frac < 1):
        raise ValueError(
            f"fractions={fractions!r}; give (train, test), both in (0, 1), summing to less than 1"
        )
    entries = list(entries)
    if seed is not None:
        random.Random(seed).shuffle(entries)
    n_train = int(len(entries) * train_frac)
    n_test = int(len(entries) * test_frac)
    train = entries[:n_train]
    test = entries[n_train : n_train + n_test]
    val = entries[n_train + n_test :]
    return train, val, test


# --- Prompt formats ---------------------------------------------------------------------------


def _check_style(style: str) -> None:
    if style not in STYLES:
        raise ValueError(f"style={style!r}; use one of {STYLES}")


def format_prompt(entry: dict, style: str = "alpaca") -> str:
    """Everything the model reads before its answer, up to and including the response header.

    alpaca: the preamble, "### Instruction:", the input section only when the input is not
    empty, and "### Response:" followed by a newline. phi3: "<|user|>", the instruction (and
    input), "<|assistant|>" and a newline. Those markers are plain text to GPT-2's tokenizer.
    """
    _check_style(style)
    check_entry(entry, need_output=False)
    instruction, extra = entry["instruction"], entry.get("input", "")
    if style == "alpaca":
        text = f"{ALPACA_PREAMBLE}\n\n### Instruction:\n{instruction}"
        if extra:
            text += f"\n\n### Input:\n{extra}"
        return text + "\n\n### Response:\n"
    text = f"<|user|>\n{instruction}"
    if extra:
        text += f"\n{extra}"
    return text + "\n<|assistant|>\n"


def format_example(entry: dict, style: str = "alpaca") -> str:
    """The training text: the prompt followed by the reference output (without the end token)."""
    check_entry(entry)
    return format_prompt(entry, style) + entry["output"]


# --- Tokenized data set -----------------------------------------------------------------------


def encode_example(entry: dict, tokenizer=None, style: str = "alpaca") -> tuple[list[int], int]:
    """(token ids, prompt length): the prompt's tokens, the output's tokens, one <|endoftext|>.

    The prompt and the output are tokenized separately, so the first `prompt_len` ids are
    exactly what `generate_response` feeds the model; tokenizing the joined text could merge
    tokens across the boundary and train on a prompt the model is never shown.
    `<|endoftext|>` typed inside a text is encoded as ordinary text, never as the end token.
    """
    check_entry(entry)
    tokenizer = tokenizer or gpt2_encoding()
    prompt = tokenizer.encode(format_prompt(entry, style), disallowed_special=())
    output = tokenizer.encode(entry["output"], disallowed_special=())
    return prompt + output + [EOT_ID], len(prompt)


class InstructionDataset(Dataset):
    """Pre-tokenized instruction examples; item i is {"input_ids": list[int], "prompt_len": int}.

    input_ids is prompt + output + <|endoftext|>. With `max_length` (the model's window), an
    example longer than max_length tokens is cut to max_length, losing its end, so that
    `collate`'s inputs (the longest example + 1 padding position, minus the last) never exceed
    the window; the indices of the examples cut are kept in `self.truncated`, so a caller can
    say how many there were.
    """

    def __init__(self, entries: Sequence[dict], tokenizer=None, style: str = "alpaca",
                 max_length: int | None = None):
        _check_style(style)
        positive_int("max_length", max_length, none_means="no limit")
        entries = check_entries(entries)
        tokenizer = tokenizer or gpt2_encoding()
        self.style = style
        self.max_length = max_length
        self.items: list[dict] = []
        self.truncated: list[int] = []
        for i, entry in enumerate(entries):
            ids, prompt_len = encode_example(entry, tokenizer, style)
            if max_length is not None and len(ids) > max_length:
                ids = ids[:max_length]
                self.truncated.append(i)
            self.items.append({"input_ids": ids, "prompt_len": min(prompt_len, len(ids))})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


# --- Batches ----------------------------------------------------------------------------------


def _check_item(item, i: int) -> None:
    """Refuse an item that is not InstructionDataset's {"input_ids": ids, "prompt_len": int}."""
    if not isinstance(item, dict) or not {"input_ids", "prompt_len"} <= set(item):
        got = f"keys {sorted(map(str, item))}" if isinstance(item, dict) else type(item).__name__
        raise ValueError(f"items[{i}] has {got}; collate takes InstructionDataset items, dicts "
                         "with 'input_ids' (a list of token ids) and 'prompt_len' (an int)")
    ids, n = item["input_ids"], item["prompt_len"]
    if isinstance(ids, (str, bytes)) or not isinstance(ids, (Sequence, torch.Tensor)) or len(ids) == 0 \
            or not all(is_int(t) or isinstance(t, torch.Tensor) and t.dim() == 0 for t in ids):
        raise ValueError(f"items[{i}]['input_ids'] is {ids!r:.60}; use a non-empty list of int "
                         "token ids")
    if not (is_int(n) and 0 <= n <= len(ids)):
        raise ValueError(f"items[{i}]['prompt_len'] is {n!r}; use an int from 0 to "
                         f"len(input_ids) = {len(ids)}")


def collate(
    items: Sequence[dict],
    pad_id: int = EOT_ID,
    ignore_index: int = IGNORE_INDEX,
    max_length: int | None = None,
    mask_prompt: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn a list of dataset items into (inputs, targets), both (B, T) int64.

    1. Each example is padded with `pad_id` to the batch's longest example + 1.
    2. inputs drop the last position and targets drop the first: the target at position t is
       the token at t + 1, as in chapter 5.
    3. Every target after the example's own end token is padding and becomes `ignore_index`,
       so the loss counts the one end token (the model learns to stop) and nothing after it.
    4. With `mask_prompt`, the targets that predict prompt tokens become `ignore_index` too:
       the loss then counts the response (and its end token) only.
    5. With `max_length`, both are cut to their first max_length positions.
    """
    if not items:
        raise ValueError("items is empty; collate needs at least one example")
    for i, item in enumerate(items):
        _check_item(item, i)
    positive_int("max_length", max_length, none_means="no limit")
    longest = max(len(item["input_ids"]) for item in items)
    inputs, targets = [], []
    for item in items:
        ids = list(item["input_ids"])
        n = len(ids)
        padded = torch.tensor(ids + [pad_id] * (longest + 1 - n))
        x, y = padded[:-1].clone(), padded[1:].clone()
        y[n - 1 :] = ignore_index  # targets at positions >= n - 1 lie past the end token
        if mask_prompt:
            y[: item["prompt_len"] - 1] = ignore_index  # targets that are prompt tokens 1..prompt_len-1
        inputs.append(x)
        targets.append(y)
    inputs, targets = torch.stack(inputs), torch.stack(targets)
    if max_length is not None:
        inputs, targets = inputs[:, :max_length], targets[:, :max_length]
    return inputs, targets


def make_loader(
    dataset: InstructionDataset,
    batch_size: int = 8,
    shuffle: bool = False,
    drop_last: bool = False,
    seed: int = 123,
    **collate_kwargs,
) -> DataLoader:
    """Chapter 2's `seeded_loader` (an order that depends only on (seed, epoch)) of
    (inputs, targets) batches made by `collate(**collate_kwargs)`."""
    return seeded_loader(dataset, batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed,
                         collate_fn=partial(collate, **collate_kwargs))
