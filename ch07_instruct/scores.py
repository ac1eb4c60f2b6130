"""Reference-based scores: compare each model response with the dataset's answer, no server needed.

Two scores, both between 0 and 1:

* ROUGE-L (`rouge_l`) counts the words the response shares with the reference *in the same
  order* (their longest common subsequence, LCS) and turns that count into an F1 score:
  precision = LCS / words in the response, recall = LCS / words in the reference,
  F1 = 2 * precision * recall / (precision + recall). It rewards overlap, not meaning: a correct
  answer worded differently scores low, a wrong answer that copies the reference's words high.
* Exact match (`exact_match`) asks whether the response *is* the reference, after
  `normalize_answer` has removed differences in case, spacing, quotes and a final full stop.

Both are cheap and repeatable, which makes them a useful companion to the LLM judge of
`judge.py` (slower, needs a local server, but it judges meaning).
"""

from __future__ import annotations

from collections.abc import Sequence

from rouge_score import rouge_scorer

from ch02_data.checks import positive_int

QUOTES = "\"'`“”‘’«»"
FINAL_PUNCTUATION = ".!?,;:…"

_scorers: dict[bool, rouge_scorer.RougeScorer] = {}  # built by _rouge_scorer() on first use


def _rouge_scorer(use_stemmer: bool = True) -> rouge_scorer.RougeScorer:
    """The ROUGE-L scorer, built once per setting: stemming lets "runs" match "running"."""
    if use_stemmer not in _scorers:
        _scorers[use_stemmer] = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)
    return _scorers[use_stemmer]


def _check_texts(texts, name: str) -> None:
    """Raise ValueError unless `texts` is a non-empty list (or tuple) of strings."""
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise ValueError(f"{name} is a {type(texts).__name__}; give a list of strings")
    if len(texts) == 0:
        raise ValueError(f"{name} is empty; give at least one string")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(
                f"{name}[{i}] is a {type(text).__name__} ({text!r}); every item must be a str (empty is allowed)"
            )


def _check_pairs(predictions, references) -> None:
    """Raise ValueError unless predictions and references are lists of strings of the same length."""
    _check_texts(predictions, "predictions")
    _check_texts(references, "references")
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions has {len(predictions)} items but references has {len(references)}; "
            "give one prediction per reference"
        )


def rouge_l_scores(predictions: Sequence[str], references: Sequence[str],
                   use_stemmer: bool = True) -> list[float]:
    """ROUGE-L F1 (0 to 1) of each prediction against its reference.

    The `rouge-score` package lower-cases both texts, keeps only letters and digits, splits them
    into words and (with `use_stemmer`, the default) stems them before finding the longest
    common subsequence. A text with no words (an empty response, say) scores 0.
    """
    _check_pairs(predictions, references)
    scorer = _rouge_scorer(bool(use_stemmer))
    # score(target, prediction): the reference comes first.
    return [float(scorer.score(ref, pred)["rougeL"].fmeasure) for pred, ref in zip(predictions, references)]


def rouge_l(predictions: Sequence[str], references: Sequence[str], use_stemmer: bool = True) -> float:
    """Mean ROUGE-L F1 (0 to 1) over the prediction/reference pairs; see `rouge_l_scores`."""
    scores = rouge_l_scores(predictions, references, use_stemmer)
    return sum(scores) / len(scores)


def normalize_answer(text: str) -> str:
    """`text` in a canonical form for exact match: lower case, inner whitespace collapsed to
    single spaces, and surrounding whitespace, surrounding quotes and final punctuation
    removed, e.g. ' "Paris." ' -> 'paris'. Punctuation inside the text is kept ("3.14", "U.S.A")."""
    if not isinstance(text, str):
        raise ValueError(f"text is a {type(text).__name__} ({text!r}); normalize_answer needs a str")
    text = " ".join(text.lower().split())
    previous = None
    while text != previous:  # repeat: '"Paris".' needs the quote, the stop, then the quote again
        previous = text
        text = text.strip().strip(QUOTES).rstrip(FINAL_PUNCTUATION)
    return text


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share (0 to 1) of pairs whose texts are equal after `normalize_answer`.

    Exact match is only meaningful for *short* answers (a word, a number, a name): a correct
    sentence-long answer almost never repeats the reference word for word, so on long answers
    the score is near 0 whatever the quality. Apply it to the pairs picked by
    `short_answer_indices` (references of at most a few words).
    """
    _check_pairs(predictions, references)
    hits = [normalize_answer(pred) == normalize_answer(ref) for pred, ref in zip(predictions, references)]
    return sum(hits) / len(hits)


def short_answer_indices(references: Sequence[str], max_words: int = 3) -> list[int]:
    """Indices of the references with 1 to `max_words` words (split on whitespace): the pairs
    on which `exact_match` means something."""
    _check_texts(references, "references")
    positive_int("max_words", max_words)
    return [i for i, ref in enumerate(references) if 1 <= len(ref.split()) <= max_words]
