"""What the chat page accepts from the browser, checked on the server.

The page's sliders keep honest visitors in range, but anyone can send any value straight to the
API, so every value is checked here: a bad one raises `BadInput`, whose one sentence the page
shows instead of a reply. Text is cleaned (control characters and lone surrogates removed, an
overlong text cut) and the chat history is fitted into the model's window.
"""

from __future__ import annotations

import math
import unicodedata
from numbers import Real

from .data import encode_example, format_prompt

# (lowest, highest, default) of each control; the sliders and the server-side checks share them.
LIMITS = {
    "temperature": (0.0, 2.0, 0.0),  # 0 = greedy, as chapter 7 evaluates its answers
    "top_k": (0, 200, 50),  # 0 = off: every token can be drawn
    "top_p": (0.05, 1.0, 1.0),  # 1 = off
    "max_new_tokens": (1, 1024, 128),
}
MAX_PROMPT_CHARS = 20_000  # longer text is cut (from the start) before it is even tokenized


class BadInput(ValueError):
    """An input the page answers with a message instead of a reply."""


def clean_text(text, what: str = "prompt") -> tuple[str, list[str]]:
    """(text fit for the tokenizer, notes for the page). Refuses non-text and empty text.

    Control characters other than newline and tab are removed, and so are lone surrogates,
    which is what invalid UTF-8 becomes in JSON ("\\udcff"); the tokenizer cannot encode them.
    Text longer than MAX_PROMPT_CHARS keeps its end.
    """
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise BadInput(f"The {what} must be text, not {type(text).__name__}.")
    notes = []
    if len(text) > MAX_PROMPT_CHARS:
        notes.append(f"The {what} has {len(text):,} characters: only its last {MAX_PROMPT_CHARS:,} are used.")
        text = text[-MAX_PROMPT_CHARS:]
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    kept = "".join(c for c in text if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cs"))
    if len(kept) != len(text):
        notes.append(f"Removed {len(text) - len(kept)} control or invalid (non-UTF-8) characters from the {what}.")
    if not kept.strip():
        raise BadInput(f"The {what} is empty: type something first.")
    return kept, notes


def _number(name: str, value, integer: bool = False) -> float | int:
    """`value` if it is a number within LIMITS[name] (a whole one if `integer`), else BadInput."""
    lo, hi, _ = LIMITS[name]
    kind = "a whole number" if integer else "a number"
    ok = isinstance(value, Real) and not isinstance(value, bool) and lo <= value <= hi
    # Compared before any float(): an int of 400 digits has no float (OverflowError).
    if not ok or not math.isfinite(value) or (integer and value != int(value)):
        raise BadInput(f"{name}={value!r:.40} is not allowed: use {kind} from {lo:g} to {hi:g}.")
    return int(value) if integer else float(value)


def check_settings(temperature, top_k, top_p, max_new_tokens) -> dict:
    """The sampling settings as `stream_tokens` takes them (0 / 1 mean "off"), or BadInput."""
    top_k = _number("top_k", top_k, integer=True)
    top_p = _number("top_p", top_p)
    return {"temperature": _number("temperature", temperature),
            "top_k": top_k or None, "top_p": None if top_p == 1.0 else top_p,
            "max_new_tokens": _number("max_new_tokens", max_new_tokens, integer=True)}


def chat_prompt(tokenizer, history: list, message: str, n_ctx: int, max_new_tokens: int) -> tuple[list[int], list[str]]:
    """(prompt ids, notes): the earlier turns laid out as training examples (`encode_example`:
    prompt, answer, end token), then the new message in the training format (`format_prompt`).

    Only the latest turns that leave the answer room in the window (`n_ctx` tokens) are kept. A
    message longer than the window on its own keeps its last `n_ctx` tokens.
    """
    ids = tokenizer.encode(format_prompt({"instruction": message, "input": ""}), disallowed_special=())
    if len(ids) > n_ctx:
        return ids[-n_ctx:], [f"The prompt is {len(ids)} tokens, longer than the model's window of "
                              f"{n_ctx}: the model sees only its last {n_ctx} tokens."]
    room, kept = n_ctx - len(ids) - max_new_tokens, []
    for question, answer in reversed(history):  # newest first; stop at the first that does not fit
        turn = encode_example({"instruction": question, "input": "", "output": answer}, tokenizer)[0]
        if len(turn) > room:
            break
        kept.insert(0, turn)
        room -= len(turn)
    notes = []
    if len(kept) < len(history):
        notes.append(f"The conversation no longer fits the window of {n_ctx} tokens: the model does "
                     f"not see the first {len(history) - len(kept)} of its turns.")
    return [t for turn in kept for t in turn] + ids, notes
