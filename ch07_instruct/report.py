"""One row of numbers for a set of responses: reference-based scores, the judge's, and lengths."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .data import check_entries
from .judge import DEFAULT_JUDGE, JudgeUnavailable, judge, judge_summary
from .scores import exact_match, rouge_l, short_answer_indices


def score_responses(
    entries: Sequence[dict],
    responses: Sequence[str],
    lengths: Sequence[int] | None = None,
    max_new_tokens: int | None = None,
    judge_model: str | None = DEFAULT_JUDGE,
    host: str | None = None,
    max_words: int = 3,
) -> dict:
    """Scores of `responses` against the entries' reference outputs, as one dict (a table row).

    "ROUGE-L": mean F1 (0-1). "exact match (short)": over the entries whose reference has at most
    `max_words` words ("short answers", their count in "short answers"); nan if there are none.
    "judge (0-100)" and "judge scored": the Ollama judge's mean and how many it scored; nan and
    "no server" when no judge answers (or `judge_model` is None), so the row always has numbers.
    With `lengths` (new tokens per response): their mean, and, with `max_new_tokens`, the share
    of responses that ran to that limit (they never produced the end token).
    """
    entries = check_entries(entries)
    references = [e["output"] for e in entries]
    rouge = rouge_l(list(responses), references)  # also checks the responses
    short = short_answer_indices(references, max_words)
    row = {
        "ROUGE-L": rouge,
        "exact match (short)": exact_match([responses[i] for i in short], [references[i] for i in short]) if short else math.nan,
        "short answers": len(short),
        "judge (0-100)": math.nan,
        "judge scored": "no server",
    }
    if judge_model is not None:
        try:
            summary = judge_summary(judge(entries, list(responses), model=judge_model, host=host, progress=False))
        except JudgeUnavailable:
            summary = None
        if summary is not None:
            row["judge (0-100)"] = math.nan if summary["mean"] is None else summary["mean"]
            row["judge scored"] = f"{summary['scored']}/{summary['total']}"
    if lengths is not None:
        if len(lengths) != len(entries):
            raise ValueError(f"lengths has {len(lengths)} items but entries has {len(entries)}; give one length per response")
        row["new tokens (mean)"] = sum(lengths) / len(lengths)
        if max_new_tokens is not None:
            row["hit the token limit"] = sum(n >= max_new_tokens for n in lengths) / len(lengths)
    return row
