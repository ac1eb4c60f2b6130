"""Reference-based scores: ROUGE-L against hand-computed values, exact match, and bad input."""

import pytest

from ch07_instruct.scores import exact_match, normalize_answer, rouge_l, rouge_l_scores, short_answer_indices

# --- ROUGE-L ---------------------------------------------------------------------------------


def lcs_f1(lcs: int, n_prediction: int, n_reference: int) -> float:
    """ROUGE-L F1 from the longest common subsequence and the two lengths (in words)."""
    precision, recall = lcs / n_prediction, lcs / n_reference
    return 2 * precision * recall / (precision + recall)


def test_rouge_l_identical_and_disjoint_texts():
    assert rouge_l(["The cat sat on the mat."], ["the cat sat on the mat"]) == pytest.approx(1.0)
    assert rouge_l(["red green blue"], ["one two three"]) == 0.0


def test_rouge_l_matches_a_hand_computed_lcs():
    # prediction: the cat sat on the mat (6 words); reference: a cat on a mat (5 words).
    # Longest common subsequence: "cat on mat", 3 words.
    prediction, reference = "the cat sat on the mat", "a cat on a mat"
    assert rouge_l_scores([prediction], [reference]) == [pytest.approx(lcs_f1(3, 6, 5))]
    # Order matters: "mat on cat" and "cat on mat" share all words but only one in order
    # (a unigram overlap would give 1.0 here).
    assert rouge_l(["mat on cat"], ["cat on mat"]) == pytest.approx(lcs_f1(1, 3, 3))


def test_rouge_l_stems_words():
    assert rouge_l(["running dogs"], ["run dog"]) == pytest.approx(1.0)


def test_rouge_l_is_the_mean_of_the_pair_scores():
    predictions = ["the cat sat on the mat", "mat on cat", "", "same words"]
    references = ["a cat on a mat", "cat on mat", "an answer", "same words"]
    scores = rouge_l_scores(predictions, references)
    assert scores == [pytest.approx(lcs_f1(3, 6, 5)), pytest.approx(1 / 3), 0.0, pytest.approx(1.0)]
    assert rouge_l(predictions, references) == pytest.approx(sum(scores) / 4)


# --- exact match -----------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("Paris", "paris"),
    ("  Paris.  ", "paris"),
    ('"Paris"', "paris"),
    ('"Paris".', "paris"),
    ("'Paris!'", "paris"),
    ("New   York\n City", "new york city"),
    ("3.14", "3.14"),  # a point inside the text stays
    ("U.S.A.", "u.s.a"),
    ("", ""),
])
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_counts_normalised_equal_pairs():
    predictions = ["Paris.", " rome ", "4", "The answer is Paris", ""]
    references = ["paris", '"Rome"', "four", "Paris", "Berlin"]
    assert exact_match(predictions, references) == pytest.approx(2 / 5)
    assert exact_match(["yes"], ["Yes!"]) == 1.0


def test_short_answer_indices_keeps_references_of_one_to_max_words():
    references = ["Paris", "The capital of France is Paris.", "New York City", "", "one two three four"]
    assert short_answer_indices(references) == [0, 2]
    assert short_answer_indices(references, max_words=4) == [0, 2, 4]
    with pytest.raises(ValueError, match="max_words=0"):
        short_answer_indices(references, max_words=0)


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("score", [rouge_l, rouge_l_scores, exact_match])
@pytest.mark.parametrize("predictions, references, message", [
    (["a", "b", "c"], ["a", "b", "c", "d"], "predictions has 3 items but references has 4"),
    ([], [], "predictions is empty"),
    (["a"], [], "references is empty"),
    (["a", 5], ["a", "b"], r"predictions\[1\] is a int \(5\)"),
    (["a"], [None], r"references\[0\] is a NoneType"),
    ("abc", ["a"], "predictions is a str"),
])
def test_bad_input_is_named_in_one_sentence(score, predictions, references, message):
    with pytest.raises(ValueError, match=message):
        score(predictions, references)


def test_stemming_can_be_switched_off():
    assert rouge_l(["He runs"], ["he running"]) == 1.0
    assert rouge_l(["He runs"], ["he running"], use_stemmer=False) == pytest.approx(0.5)
