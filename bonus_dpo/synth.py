"""Making preference pairs without human labels: a local LLM rewrites a response two ways.

Human preference labels are expensive, so practitioners often let a stronger model write the
pairs: keep the content of a reference answer and change only the quality to be preferred (here
politeness). The chosen response is the polite rewrite, the rejected one the impolite rewrite.
The book's preference data set was made this way, with Llama 3.1 70B served by Ollama.
"""

from __future__ import annotations

from collections.abc import Sequence

from ch07_instruct import ask_local_llm, check_entries, format_prompt
from ch07_instruct.judge import DEFAULT_JUDGE

TONES = ("polite", "impolite")


def rewrite_prompt(entry: dict, tone: str) -> str:
    """The request sent to the local model: rewrite the entry's output in `tone`, same content."""
    if tone not in TONES:
        raise ValueError(f"tone={tone!r}; use one of {TONES}")
    task = format_prompt(entry).split("### Instruction:\n", 1)[1].removesuffix("\n\n### Response:\n")
    return (
        f"Here is a task and a correct answer to it.\n\nTask:\n{task}\n\nAnswer:\n{entry['output']}\n\n"
        f"Rewrite the answer so that it is {'more polite' if tone == 'polite' else 'less polite, curt or rude'}, "
        "keeping its content and length about the same. Reply with the rewritten answer only."
    )


def clean_reply(text: str) -> str:
    """The rewritten answer alone: surrounding whitespace and one pair of enclosing quotes removed."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def make_preference_pairs(entries: Sequence[dict], model: str = DEFAULT_JUDGE, host: str | None = None,
                          progress: bool = True, **options) -> list[dict]:
    """Each entry with "chosen" (polite rewrite) and "rejected" (impolite rewrite) added.

    Needs an Ollama server (see chapter 7's judge): without one, `JudgeUnavailable` says how to
    start it, before any request. `options` go to `ask_local_llm` (timeout, seed, temperature).
    """
    entries = check_entries(entries)
    prompts = [rewrite_prompt(e, tone) for e in entries for tone in TONES]
    replies = [clean_reply(r) for r in ask_local_llm(prompts, model, host, progress=progress, **options)]
    return [{**e, "chosen": replies[2 * i], "rejected": replies[2 * i + 1]} for i, e in enumerate(entries)]
