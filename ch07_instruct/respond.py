"""Responses from a fine-tuned model: generate, extract and save them.

Generation is chapter 5's `generate` (greedy, with the KV cache), stopped by `<|endoftext|>`.
The response is decoded from the *new* token ids only, never by cutting the prompt text out of
the decoded whole: decoding is not always the exact inverse of tokenizing (invalid byte
sequences, for one), so a string search could cut in the wrong place.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm  # plain text bar: no ipywidgets warning in notebooks

from ch02_data import EOT_ID, gpt2_encoding
from ch05_pretrain import check_checkpoint_path, generate

from .data import STYLES, check_entries, format_prompt

# Where a model that keeps going after its answer usually starts the next turn of its format.
NEXT_TURN_MARKERS = {"alpaca": ("\n### ", "### Instruction:"), "phi3": ("<|user|>", "<|assistant|>", "<|end|>")}


def extract_response(text: str, style: str = "alpaca") -> str:
    """The answer in `text` (what the model wrote after the prompt): cut at the first marker of
    a new turn in the prompt format (a model that has not learned to stop often starts writing
    another instruction), then stripped of surrounding whitespace."""
    if style not in STYLES:
        raise ValueError(f"style={style!r}; use one of {STYLES}")
    for marker in NEXT_TURN_MARKERS[style]:
        text = text.split(marker, 1)[0]
    return text.strip()


def generate_from_prompt(model, prompt: str, tokenizer=None, max_new_tokens: int = 256) -> tuple[str, int]:
    """(decoded new text, number of new tokens) for one prompt text, greedy, stopped by <|endoftext|>.

    The end token itself is neither decoded nor counted. A prompt longer than the model's window
    keeps its end (chapter 5's `generate` crops it).
    """
    tokenizer = tokenizer or gpt2_encoding()
    device = next(model.parameters()).device
    ids = tokenizer.encode(prompt, disallowed_special=()) or [EOT_ID]
    idx = torch.tensor([ids], device=device)
    out = generate(model, idx, max_new_tokens=max_new_tokens, eos_id=EOT_ID)[0, len(ids) :].tolist()
    if EOT_ID in out:
        out = out[: out.index(EOT_ID)]
    return tokenizer.decode(out), len(out)


def generate_response(model, entry: dict, tokenizer=None, max_new_tokens: int = 256,
                      style: str = "alpaca") -> str:
    """The model's answer to one entry: its prompt (`format_prompt`, the training format), then
    greedy generation until <|endoftext|> or `max_new_tokens`, then `extract_response`."""
    check_entries([entry], "entry", need_output=False)
    text, _ = generate_from_prompt(model, format_prompt(entry, style), tokenizer, max_new_tokens)
    return extract_response(text, style)


def generate_responses(model, entries: Sequence[dict], tokenizer=None, max_new_tokens: int = 256,
                       style: str = "alpaca", progress: bool = True) -> list[str]:
    """`generate_response` for every entry, with a progress bar."""
    entries = check_entries(entries, need_output=False)
    prompts = [format_prompt(e, style) for e in entries]
    return respond_and_count(model, prompts, tokenizer, max_new_tokens, style, progress)[0]


def respond_and_count(model, prompts: Sequence[str], tokenizer=None, max_new_tokens: int = 256,
                      style: str = "alpaca", progress: bool = True) -> tuple[list[str], list[int]]:
    """(responses, new-token counts) for prompt texts given as they are: what `generate_responses`
    does, for prompts that need not come from `format_prompt` (chapter 7's pitfalls), and with
    the number of tokens each answer took before its end token (`max_new_tokens` if it never
    ended)."""
    tokenizer = tokenizer or gpt2_encoding()
    texts, counts = [], []
    for prompt in tqdm(prompts, desc="responses", disable=not progress):
        text, n = generate_from_prompt(model, prompt, tokenizer, max_new_tokens)
        texts.append(extract_response(text, style))
        counts.append(n)
    return texts, counts


def check_output_path(path: str | os.PathLike) -> Path:
    """`path` as a Path, after checking a file can be written there (before a long run starts)."""
    return check_checkpoint_path(path, name="path")


def save_responses(path: str | os.PathLike, entries: Sequence[dict], responses: Sequence[str],
                   key: str = "model_response") -> Path:
    """Write the entries with each response added under `key` to a JSON file, atomically (a
    temporary file renamed into place), and return the path. An existing file is replaced."""
    entries = check_entries(entries, need_output=False)
    if len(responses) != len(entries):
        raise ValueError(f"responses has {len(responses)} items but entries has {len(entries)}; give one response per entry")
    path = check_output_path(path)
    records = [{**entry, key: response} for entry, response in zip(entries, responses)]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(records, f, indent=1, ensure_ascii=False)
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; results are for reading
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_responses(path: str | os.PathLike, key: str = "model_response") -> tuple[list[dict], list[str]]:
    """(entries, responses) from a file written by `save_responses`."""
    with open(path, encoding="utf-8") as f:
        try:
            records = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:  # cut short, or not JSON at all
            raise ValueError(f"{str(path)!r} is not valid JSON ({e}); it is truncated or not a "
                             "file written by save_responses: write it again") from None
    entries = check_entries(records, str(path), need_output=False)
    missing = [i for i, r in enumerate(entries) if key not in r]
    if missing:
        raise ValueError(f"{path}: entry {missing[0]} has no {key!r} key; was it written by save_responses?")
    bad = [i for i, r in enumerate(entries) if not isinstance(r[key], str)]
    if bad:
        raise ValueError(f"{path}: entry {bad[0]}'s {key!r} is a {type(entries[bad[0]][key]).__name__}, "
                         "not a str; was it written by save_responses?")
    return [{k: v for k, v in r.items() if k != key} for r in entries], [r[key] for r in entries]
