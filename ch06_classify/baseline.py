"""The reference line: TF-IDF word features and logistic regression (scikit-learn).

Before crediting a fine-tuned GPT with an accuracy, compare it with the classic method. Spam
is largely a matter of words ("free", "prize", "call", "txt"), so counting words, weighting rare
ones up (TF-IDF: term frequency x inverse document frequency) and fitting a linear model takes
a second on a CPU and is hard to beat on this data set.
"""

from __future__ import annotations

from collections.abc import Sequence

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline


def tfidf_pipeline():
    """The fixed, untuned model: unigrams and bigrams, sublinear term frequency, L2-regularised
    logistic regression with scikit-learn's default strength (C=1)."""
    return make_pipeline(
        TfidfVectorizer(lowercase=True, ngram_range=(1, 2), sublinear_tf=True, min_df=1),
        LogisticRegression(C=1.0, max_iter=1000),
    )


def tfidf_baseline(
    train_texts: Sequence[str],
    train_labels: Sequence,
    test_texts: Sequence[str],
    test_labels: Sequence,
) -> float:
    """Fit `tfidf_pipeline()` on the training messages and return its accuracy (0..1) on the
    test messages. Labels may be strings ("ham"/"spam") or ints; both lists must use the same kind.
    The result is deterministic (the solver is, and nothing is sampled)."""
    train_texts, test_texts = list(train_texts), list(test_texts)
    train_labels, test_labels = list(train_labels), list(test_labels)
    for name, texts, labels in (("train", train_texts, train_labels), ("test", test_texts, test_labels)):
        if len(texts) != len(labels) or not texts:
            raise ValueError(f"{name}_texts has {len(texts)} messages and {name}_labels {len(labels)}; "
                             "give one label per message, at least one message")
    if len(set(train_labels)) < 2:
        raise ValueError(f"train_labels holds only {sorted(set(map(str, train_labels)))}; "
                         "a classifier needs examples of at least two classes")
    model = tfidf_pipeline().fit(train_texts, train_labels)
    return float(model.score(test_texts, test_labels))
