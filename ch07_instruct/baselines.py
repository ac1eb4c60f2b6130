"""Answers that need no model: the scores a fine-tuned model has to beat before it counts.

A ROUGE-L of 0.2 says nothing alone. Many references in this data set repeat words of their
instruction or input ("Rewrite the sentence ...": the answer is mostly the input sentence), so
echoing the prompt already scores well. Each baseline here gives one response per entry; score
them with the same `rouge_l` on the same entries as the model.

- "fixed answer": one answer for every entry, chosen on the validation set: the training
  output with the highest mean ROUGE-L against the validation references (all 935 training
  outputs are distinct, so "the most frequent output" would be an arbitrary one).
- "instruction echoed", "instruction and input echoed", "input echoed (else instruction)".
"""

from __future__ import annotations

from collections.abc import Sequence

from .data import check_entries
from .scores import rouge_l

__all__ = ["best_fixed_answer", "baseline_responses"]


def best_fixed_answer(train_entries: Sequence[dict], val_entries: Sequence[dict]) -> str:
    """The training output whose mean ROUGE-L against the validation references is highest
    (the first such, in training order)."""
    train_entries, val_entries = check_entries(train_entries, "train_entries"), check_entries(val_entries, "val_entries")
    if not train_entries or not val_entries:
        raise ValueError(f"train_entries has {len(train_entries)} and val_entries {len(val_entries)} entries; "
                         "best_fixed_answer needs at least one of each")
    references = [e["output"] for e in val_entries]
    candidates = list(dict.fromkeys(e["output"] for e in train_entries))  # distinct, in order
    return max(candidates, key=lambda answer: rouge_l([answer] * len(references), references))


def baseline_responses(entries: Sequence[dict], fixed_answer: str) -> dict[str, list[str]]:
    """{baseline name: one response per entry} for the four baselines (see the module docstring)."""
    entries = check_entries(entries, need_output=False)
    return {
        "fixed answer": [fixed_answer] * len(entries),
        "instruction echoed": [e["instruction"] for e in entries],
        "instruction and input echoed": [f"{e['instruction']} {e.get('input', '')}".strip() for e in entries],
        "input echoed (else instruction)": [e.get("input") or e["instruction"] for e in entries],
    }
