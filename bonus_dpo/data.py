"""Preference data: load and split it, tokenize prompt/chosen/rejected, collate pairs of sequences.

The data set is 1,100 entries `{"instruction", "input", "output", "chosen", "rejected"}`
published with *Build a Large Language Model (From Scratch)*: for each instruction a preferred
response ("chosen", polite) and a dispreferred one ("rejected", impolite). DPO never generates
text while training; it only scores the two given responses, so a training example is a PAIR of
token sequences that share their prompt:

    chosen   = prompt tokens + chosen-response tokens   + <|endoftext|>
    rejected = prompt tokens + rejected-response tokens + <|endoftext|>

and a mask per sequence saying which positions are response tokens: only those are scored.
The prompt uses chapter 7's `format_prompt`, so a model instruction-tuned there is asked in the
text it was trained on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import partial

import torch
from torch.utils.data import DataLoader, Dataset

from ch02_data import EOT_ID, fetch, gpt2_encoding, seeded_loader
from ch02_data.checks import int_at_least, is_int
from ch07_instruct import STYLES, format_prompt, split_entries

DATA_NAME = "instruction-data-with-preference.json"  # a key of ch02_data.SOURCES (sha256 pinned)
KEYS = ("instruction", "input", "chosen", "rejected")  # "input" may be missing; "output" is ignored
REF_KEYS = ("ref_chosen_logp", "ref_rejected_logp")  # item keys set by precompute_reference_logps


# --- Loading and splitting --------------------------------------------------------------------


def check_preference_entries(entries, name: str = "entries") -> list[dict]:
    """Return `entries` as a list after checking each is a dict with str values for the keys.

    Required: "instruction", "chosen", "rejected". "input" may be missing (taken as empty) and
    "output" (chapter 7's reference answer) may be present; both must be str when present.
    Raises ValueError naming the first bad entry.
    """
    if isinstance(entries, (str, bytes, dict)) or not isinstance(entries, Sequence):
        raise ValueError(f"{name} is a {type(entries).__name__}; give a list of dicts with the "
                         f"keys {KEYS}")
    required = ("instruction", "chosen", "rejected")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"{name}[{i}] is a {type(entry).__name__}; each entry must be a dict "
                             f"with the keys {KEYS}")
        for key in required:
            if key not in entry:
                raise ValueError(f"{name}[{i}] has no {key!r} key (it has {sorted(entry)}); each "
                                 f"entry needs {required}")
        for key in (*KEYS, "output"):
            if key in entry and not isinstance(entry[key], str):
                raise ValueError(f"{name}[{i}][{key!r}] is a {type(entry[key]).__name__}; it must "
                                 "be a str (empty is allowed)")
    return list(entries)


def load_preference_data() -> list[dict]:
    """The 1,100 preference entries, downloaded once (sha256-verified) or taken from DATA_MIRROR."""
    with open(fetch(DATA_NAME), encoding="utf-8") as f:
        return check_preference_entries(json.load(f), DATA_NAME)


def pair_origins(entries: Sequence[dict]) -> dict[str, int]:
    """How the book made each pair: it kept chapter 7's `output` as one side and had an LLM
    rewrite it, politer or ruder, for the other. Counts of entries whose "chosen" is the original
    output, whose "rejected" is, and whose two sides are identical (nothing to prefer)."""
    entries = check_preference_entries(entries)
    with_output = [e for e in entries if "output" in e]
    return {
        "entries": len(entries),
        "chosen is the original output": sum(e["chosen"] == e["output"] for e in with_output),
        "rejected is the original output": sum(e["rejected"] == e["output"] for e in with_output),
        "neither is": sum(e["output"] not in (e["chosen"], e["rejected"]) for e in with_output),
        "identical pairs": sum(e["chosen"] == e["rejected"] for e in entries),
    }


def distinct_pairs(entries: Sequence[dict]) -> list[dict]:
    """The entries whose chosen and rejected responses differ. An identical pair has margin 0
    whatever the model does: its loss stays log 2 and its gradients cancel, so it only dilutes
    the batch."""
    return [e for e in check_preference_entries(entries) if e["chosen"] != e["rejected"]]


def split_preference(
    entries: Sequence[dict], seed: int | None = 123
) -> tuple[list[dict], list[dict], list[dict]]:
    """Shuffle (with `seed`; None keeps the order) and split into (train, val, test).

    The same rule as chapter 7's `split_entries`: 85% train, 10% test, the rest (5%) validation;
    for 1,100 entries that is 935 / 55 / 110.
    """
    return split_entries(check_preference_entries(entries), seed=seed)


# --- Tokenized data set -----------------------------------------------------------------------


def _check_max_length(max_length) -> None:
    int_at_least("max_length", max_length, 2, "a prompt token and a response token",
                 none_means="no limit")


def encode_preference(entry: dict, tokenizer=None, style: str = "alpaca") -> dict:
    """{"prompt", "chosen", "rejected"}: lists of token ids of one entry.

    prompt = tokens of `format_prompt(entry, style)`; chosen/rejected = tokens of that response
    followed by one <|endoftext|> (50256), so the model is also scored on stopping. Prompt and
    responses are tokenized separately: the prompt's tokens are exactly what generation feeds
    the model. `<|endoftext|>` typed inside a text is ordinary text, never the end token.
    """
    tokenizer = tokenizer or gpt2_encoding()
    prompt = tokenizer.encode(format_prompt(entry, style), disallowed_special=())
    chosen = tokenizer.encode(entry["chosen"], disallowed_special=()) + [EOT_ID]
    rejected = tokenizer.encode(entry["rejected"], disallowed_special=()) + [EOT_ID]
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


class PreferenceDataset(Dataset):
    """Pre-tokenized preference pairs; item i is {"prompt", "chosen", "rejected"}: lists of ids.

    chosen and rejected hold the response only (ending in <|endoftext|>); the collate function
    puts the prompt in front. With `max_length` (the model's window), a response that would make
    prompt + response longer than max_length tokens is cut (losing its end token), and a prompt
    longer than the window is cut too, leaving no response. Indices of the entries cut are kept
    in `self.truncated`; those left with an empty chosen or rejected response (which
    `preference_collate` drops) in `self.empty`.
    """

    def __init__(self, entries: Sequence[dict], tokenizer=None, style: str = "alpaca",
                 max_length: int | None = None):
        if style not in STYLES:
            raise ValueError(f"style={style!r}; use one of {STYLES}")
        _check_max_length(max_length)
        entries = check_preference_entries(entries)
        tokenizer = tokenizer or gpt2_encoding()
        self.style = style
        self.max_length = max_length
        self.items: list[dict] = []
        self.truncated: list[int] = []
        self.empty: list[int] = []
        for i, entry in enumerate(entries):
            item = encode_preference(entry, tokenizer, style)
            if max_length is not None:
                room = max(0, max_length - len(item["prompt"]))  # response tokens that still fit
                cut = {key: item[key][:room] for key in ("chosen", "rejected")}
                if len(item["prompt"]) > max_length or cut["chosen"] != item["chosen"] \
                        or cut["rejected"] != item["rejected"]:
                    self.truncated.append(i)
                item = {"prompt": item["prompt"][:max_length], **cut}
                if not (item["chosen"] and item["rejected"]):
                    self.empty.append(i)
            self.items.append(item)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


# --- Batches ----------------------------------------------------------------------------------


def _pad_and_mask(items: Sequence[dict], key: str, T: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask), both (B, T): prompt + items[key] cut to T and padded; mask marks the response."""
    ids = torch.full((len(items), T), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(items), T), dtype=torch.bool)
    for row, item in enumerate(items):
        seq = (list(item["prompt"]) + list(item[key]))[:T]
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.int64)
        mask[row, len(item["prompt"]) : len(seq)] = True  # empty when the prompt fills the window
    # Position 0 has no prediction (nothing comes before it), so it never counts.
    mask[:, 0] = False
    return ids, mask


def _pairs(items: Sequence[dict], pad_id: int, max_length: int | None) -> tuple[dict, torch.Tensor]:
    """The padded sequences and masks of the rows kept, and `keep` (B,) bool over all rows."""
    T = max(len(item["prompt"]) + max(len(item["chosen"]), len(item["rejected"])) for item in items)
    if max_length is not None:
        T = min(T, max_length)
    chosen, chosen_mask = _pad_and_mask(items, "chosen", T, pad_id)
    rejected, rejected_mask = _pad_and_mask(items, "rejected", T, pad_id)
    keep = chosen_mask.any(dim=1) & rejected_mask.any(dim=1)  # rows with both responses left
    return {"chosen": chosen[keep], "rejected": rejected[keep],
            "chosen_mask": chosen_mask[keep], "rejected_mask": rejected_mask[keep]}, keep


def _check_pair_item(item, i: int) -> None:
    """Refuse an item that is not PreferenceDataset's {"prompt", "chosen", "rejected"}: lists of ids."""
    keys = ("prompt", "chosen", "rejected")
    if not isinstance(item, dict) or not set(keys) <= set(item):
        got = f"keys {sorted(map(str, item))}" if isinstance(item, dict) else type(item).__name__
        raise ValueError(f"items[{i}] has {got}; preference_collate takes PreferenceDataset "
                         f"items, dicts with {keys} as lists of token ids")
    for key in keys:
        ids = item[key]
        if isinstance(ids, (str, bytes)) or not isinstance(ids, (Sequence, torch.Tensor)) \
                or not all(is_int(t) or isinstance(t, torch.Tensor) and t.dim() == 0 for t in ids):
            raise ValueError(f"items[{i}][{key!r}] is {ids!r:.60}; use a list of int token ids "
                             "(encode the text first: PreferenceDataset does)")


def preference_collate(
    items: Sequence[dict], pad_id: int = EOT_ID, max_length: int | None = None
) -> dict:
    """Turn a list of dataset items into a batch dict of pairs of sequences.

    Returns
        "chosen", "rejected": (B, T) int64, prompt + response, padded with `pad_id` to the
            longest of ALL 2B sequences in the batch, so both share one T and can go through
            the model in one forward pass (`torch.cat` along the batch dimension).
        "chosen_mask", "rejected_mask": (B, T) bool, True exactly at the positions of response
            tokens (the response's end token included); False for the prompt and the padding.
            A mask indexes TOKEN positions: the log-probability of token t is read from the
            logits at position t - 1; `sequence_logprobs` does that shift.
        "ref_chosen_logps", "ref_rejected_logps": (B,) float32, only when the items carry
            reference log-probabilities from `precompute_reference_logps`.
        "dropped": int, the number of rows left out (see below).

    With `max_length`, every sequence is cut to its first max_length positions (T <= max_length).
    A row whose chosen or rejected sequence has no response token left (its prompt fills the
    window) has nothing to compare and is dropped rather than scored as 0/0 = nan. When every
    row is dropped the tensors have B = 0 rows; `DPOLoss` then raises `NoTargetsError`, which
    chapter 5's `train` and `evaluate` treat as "skip this batch".
    """
    if not items:
        raise ValueError("items is empty; preference_collate needs at least one pair")
    for i, item in enumerate(items):
        _check_pair_item(item, i)
    _check_max_length(max_length)
    carries_ref = [all(key in item for key in REF_KEYS) for item in items]
    if any(carries_ref) and not all(carries_ref):
        raise ValueError(f"only {sum(carries_ref)} of the {len(items)} items carry reference "
                         "log-probs; run precompute_reference_logps on the whole dataset")
    if all(carries_ref):
        for item in items:
            if item.get("ref_max_length") != max_length:
                raise ValueError(f"the items' reference log-probs were computed with max_length="
                                 f"{item.get('ref_max_length')!r} but this batch uses max_length="
                                 f"{max_length!r}; use the same max_length for both")

    batch, keep = _pairs(items, pad_id, max_length)
    if all(carries_ref):
        for key in REF_KEYS:
            values = torch.tensor([item[key] for item in items], dtype=torch.float32)
            batch[key + "s"] = values[keep]
    batch["dropped"] = int((~keep).sum())
    return batch


def make_preference_loader(
    dataset: PreferenceDataset,
    batch_size: int = 8,
    shuffle: bool = False,
    drop_last: bool = False,
    seed: int = 123,
    max_length: int | None = None,
) -> DataLoader:
    """Chapter 2's `seeded_loader` (an order that depends only on (seed, epoch)) of batch dicts
    made by `preference_collate(max_length=max_length)`."""
    _check_max_length(max_length)
    return seeded_loader(dataset, batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed,
                         collate_fn=partial(preference_collate, max_length=max_length))
