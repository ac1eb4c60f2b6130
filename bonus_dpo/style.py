"""A stated measure of the style DPO targets: how polite a text reads, learned from the pairs.

The book's pairs differ in tone only: one side is chapter 7's answer, the other an LLM's politer
or ruder rewrite of it. A classifier trained to tell the chosen side from the rejected side of
the *training* pairs is therefore a politeness detector for this data set's idea of politeness.
`politeness_scorer` fits chapter 6's TF-IDF + logistic-regression pipeline on those texts and
returns a function giving each text the probability that it is the polite kind (0 to 1).

Check it before trusting it: its accuracy on the held-out pairs' own chosen and rejected texts
(`scorer.accuracy(test_entries)`) says how well it separates the two styles. It measures word
choice ("please", "happy to", "obviously"), not meaning; a wrong answer can read as polite.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ch06_classify.baseline import tfidf_pipeline

from .data import check_preference_entries, distinct_pairs

__all__ = ["politeness_scorer"]


class _Scorer:
    def __init__(self, pipeline):
        self.pipeline = pipeline

    def __call__(self, texts: Sequence[str]) -> list[float]:
        """The probability that each text is of the chosen (polite) kind."""
        texts = list(texts)
        if not texts:
            return []
        return [float(p) for p in self.pipeline.predict_proba(texts)[:, 1]]

    def accuracy(self, entries: Sequence[dict]) -> float:
        """Share of the distinct pairs of `entries` whose chosen text scores above its rejected one."""
        pairs = distinct_pairs(entries)
        if not pairs:
            raise ValueError("entries hold no pair with two different responses; nothing to compare")
        chosen, rejected = self([e["chosen"] for e in pairs]), self([e["rejected"] for e in pairs])
        return sum(c > r for c, r in zip(chosen, rejected)) / len(pairs)


def politeness_scorer(train_entries: Sequence[dict]) -> Callable[[Sequence[str]], list[float]]:
    """Fit the TF-IDF classifier on the training pairs (chosen = 1, rejected = 0; identical pairs
    left out) and return the scorer: `scorer(texts)` -> probabilities, `scorer.accuracy(entries)`."""
    pairs = distinct_pairs(check_preference_entries(train_entries, "train_entries"))
    if not pairs:
        raise ValueError("train_entries hold no pair with two different responses; the scorer needs some")
    texts = [e["chosen"] for e in pairs] + [e["rejected"] for e in pairs]
    labels = [1] * len(pairs) + [0] * len(pairs)
    return _Scorer(tfidf_pipeline().fit(texts, labels))
