import pytest

from ch07_instruct.baselines import baseline_responses, best_fixed_answer
from ch07_instruct.scores import rouge_l

TRAIN = [{"instruction": "Say hi.", "input": "", "output": "Hello there."},
         {"instruction": "Name a colour.", "input": "", "output": "The colour is blue."},
         {"instruction": "Plural of cat?", "input": "", "output": "Cats."}]
VAL = [{"instruction": "Name a fruit.", "input": "", "output": "The fruit is an apple."},
       {"instruction": "Name a city.", "input": "", "output": "The city is Paris."}]


def test_the_fixed_answer_is_chosen_on_validation():
    assert best_fixed_answer(TRAIN, VAL) == "The colour is blue."  # shares "the ... is" with both


def test_baselines_echo_the_prompt():
    entries = [{"instruction": "Rewrite the sentence.", "input": "The cat sat.", "output": "The cat was sitting."},
               {"instruction": "What is 2 + 2?", "input": "", "output": "4"}]
    b = baseline_responses(entries, "x")
    assert b["fixed answer"] == ["x", "x"]
    assert b["instruction and input echoed"] == ["Rewrite the sentence. The cat sat.", "What is 2 + 2?"]
    assert b["input echoed (else instruction)"] == ["The cat sat.", "What is 2 + 2?"]
    refs = [e["output"] for e in entries]
    assert rouge_l(b["input echoed (else instruction)"], refs) > rouge_l(b["fixed answer"], refs)


def test_no_entries_is_refused():
    with pytest.raises(ValueError, match="train_entries has 0"):
        best_fixed_answer([], VAL)
