"""Prompt formats, tokenized examples, collate (padding, -100, prompt masking, truncation), splits."""

import pytest
import torch

from ch02_data import EOT_ID, gpt2_encoding
from ch07_instruct.data import (
    ALPACA_PREAMBLE,
    InstructionDataset,
    check_entries,
    collate,
    encode_example,
    format_example,
    format_prompt,
    load_instruction_data,
    make_loader,
    split_entries,
)

TOK = gpt2_encoding()
SIMILE = {"instruction": "Rewrite the sentence using a simile.", "input": "The car is very fast.",
          "output": "The car is as fast as lightning."}
NO_INPUT = {"instruction": "Name a color.", "input": "", "output": "Blue."}


def item(ids, prompt_len):
    return {"input_ids": list(ids), "prompt_len": prompt_len}


# --- formats ---


def test_alpaca_prompt_is_exactly_the_documented_text():
    assert format_prompt(SIMILE) == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nRewrite the sentence using a simile."
        "\n\n### Input:\nThe car is very fast.\n\n### Response:\n"
    )
    assert format_prompt(NO_INPUT) == f"{ALPACA_PREAMBLE}\n\n### Instruction:\nName a color.\n\n### Response:\n"
    assert format_example(NO_INPUT) == format_prompt(NO_INPUT) + "Blue."


def test_phi3_prompt():
    assert format_prompt(SIMILE, "phi3") == (
        "<|user|>\nRewrite the sentence using a simile.\nThe car is very fast.\n<|assistant|>\n")
    assert format_prompt(NO_INPUT, "phi3") == "<|user|>\nName a color.\n<|assistant|>\n"


def test_missing_input_key_is_an_empty_input():
    assert format_prompt({"instruction": "Name a color."}) == format_prompt(NO_INPUT)


def test_unknown_style_is_refused():
    with pytest.raises(ValueError, match="style='chatml'"):
        format_prompt(SIMILE, "chatml")


# --- tokenized examples ---


@pytest.mark.parametrize("style", ["alpaca", "phi3"])
def test_training_ids_start_with_exactly_the_generation_prompt(style):
    ids, prompt_len = encode_example(SIMILE, TOK, style)
    prompt_ids = TOK.encode(format_prompt(SIMILE, style))
    assert ids[:prompt_len] == prompt_ids  # what generate_response feeds the model
    assert TOK.decode(ids[:prompt_len]).encode() == format_prompt(SIMILE, style).encode()
    assert ids[prompt_len:-1] == TOK.encode(SIMILE["output"]) and ids[-1] == EOT_ID
    assert ids.count(EOT_ID) == 1


def test_end_token_typed_in_a_text_is_ordinary_text():
    ids, _ = encode_example({"instruction": "Say <|endoftext|>", "input": "", "output": "<|endoftext|>"}, TOK)
    assert ids.count(EOT_ID) == 1 and ids[-1] == EOT_ID


def test_dataset_items_and_empty_fields():
    ds = InstructionDataset([SIMILE, NO_INPUT, {"instruction": "Say nothing.", "input": "", "output": ""}], TOK)
    assert len(ds) == 3 and set(ds[0]) == {"input_ids", "prompt_len"}
    assert ds[2]["input_ids"] == TOK.encode(format_prompt({"instruction": "Say nothing."})) + [EOT_ID]
    assert ds.truncated == []


def test_dataset_truncates_long_examples_and_counts_them():
    long = {"instruction": "Repeat. " * 400, "input": "", "output": "ok"}
    ds = InstructionDataset([NO_INPUT, long], TOK, max_length=64)
    assert ds.truncated == [1]
    assert len(ds[1]["input_ids"]) == 64 and ds[1]["prompt_len"] == 64
    x, y = collate([ds[0], ds[1]])  # the window is respected without collate's max_length
    assert x.shape == y.shape == (2, 64)


def test_non_utf8_text_does_not_crash():
    weird = {"instruction": "bad surrogate \ud800 and emoji 🙂 and \x00", "input": "é" * 3, "output": "ok"}
    ids, prompt_len = encode_example(weird, TOK)
    assert ids[-1] == EOT_ID and 0 < prompt_len < len(ids)


@pytest.mark.parametrize("bad, match", [
    ("text", "entries is a str"),
    ([["a"]], r"entries\[0\] is a list"),
    ([{"input": "", "output": "x"}], r"entries\[0\] has no 'instruction'"),
    ([{"instruction": "x", "input": None, "output": "y"}], r"entries\[0\]\['input'\] is a NoneType"),
])
def test_bad_entries_are_named(bad, match):
    with pytest.raises(ValueError, match=match):
        check_entries(bad)


def test_bad_max_length():
    with pytest.raises(ValueError, match="max_length=0"):
        InstructionDataset([SIMILE], TOK, max_length=0)


# --- collate ---


def test_collate_pads_shifts_and_ignores_padding_after_the_first_end_token():
    a = item([1, 2, 3, EOT_ID], prompt_len=2)
    b = item([4, 5, EOT_ID], prompt_len=1)
    x, y = collate([a, b])
    assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == (2, 4)  # longest (4) + 1, minus one
    assert x.tolist() == [[1, 2, 3, EOT_ID], [4, 5, EOT_ID, EOT_ID]]
    assert y.tolist() == [[2, 3, EOT_ID, -100], [5, EOT_ID, -100, -100]]


def test_collate_masks_the_prompt():
    a = item([10, 11, 12, 20, 21, EOT_ID], prompt_len=3)  # prompt 10 11 12, response 20 21
    x, y = collate([a], mask_prompt=True)
    assert y.tolist() == [[-100, -100, 20, 21, EOT_ID, -100]]  # only response tokens and the end count
    assert x.tolist() == [[10, 11, 12, 20, 21, EOT_ID]]  # inputs are never masked


def test_collate_truncates_and_uses_custom_ids():
    a = item([1, 2, 3, 4, 5, 9], prompt_len=2)
    x, y = collate([a], pad_id=9, ignore_index=-1, max_length=3)
    assert x.tolist() == [[1, 2, 3]] and y.tolist() == [[2, 3, 4]]
    _, y_full = collate([a, item([7, 9], 1)], pad_id=9, ignore_index=-1)
    assert y_full.tolist()[1] == [9, -1, -1, -1, -1, -1]


def test_collate_matches_the_dataset():
    ds = InstructionDataset([SIMILE, NO_INPUT], TOK)
    x, y = collate([ds[0], ds[1]], mask_prompt=True)
    n1, p1 = len(ds[1]["input_ids"]), ds[1]["prompt_len"]
    counted = (y[1] != -100).nonzero().flatten().tolist()
    assert counted == list(range(p1 - 1, n1 - 1))  # the response tokens and the end token
    assert y[1, n1 - 2] == EOT_ID


def test_collate_bad_input():
    with pytest.raises(ValueError, match="items is empty"):
        collate([])
    with pytest.raises(ValueError, match="max_length=-1"):
        collate([item([1, 2], 1)], max_length=-1)


def test_loader_is_seeded_and_yields_tensors():
    ds = InstructionDataset([SIMILE, NO_INPUT] * 4, TOK)
    first = [x.tolist() for x, _ in make_loader(ds, 3, shuffle=True, seed=5)]
    torch.manual_seed(999)  # the global state does not matter
    again = [x.tolist() for x, _ in make_loader(ds, 3, shuffle=True, seed=5)]
    assert first == again and len(first) == 3
    peeked = make_loader(ds, 3, shuffle=True, seed=5)
    next(iter(peeked))  # a look at one batch does not change the order that follows
    assert [x.tolist() for x, _ in peeked] == first
    with pytest.raises(ValueError, match="batch_size=0"):
        make_loader(ds, 0)


# --- the real data set ---


def test_real_data_loads_and_splits_85_10_5():
    entries = load_instruction_data()
    assert len(entries) == 1100 and all(set(e) == {"instruction", "input", "output"} for e in entries)
    train, val, test = split_entries(entries)
    assert (len(train), len(val), len(test)) == (935, 55, 110)
    assert split_entries(entries)[2] == test  # the same seed gives the same split
    assert sorted(map(str, train + val + test)) == sorted(map(str, entries))
    assert split_entries(entries, seed=None)[0] == entries[:935]


def test_split_bad_fractions():
    with pytest.raises(ValueError, match=r"fractions=\(0.9, 0.2\)"):
        split_entries([SIMILE] * 10, fractions=(0.9, 0.2))


# --- a wrong entry or item: one sentence, not a KeyError or TypeError ------------------------------


@pytest.mark.parametrize("entry, words", [
    ({"input": ""}, r"entry has no 'instruction' key"),
    ({"instruction": 5, "output": "x"}, r"entry\['instruction'\] is a int"),
    ({"instruction": "Say hi.", "input": None, "output": "hi"}, r"entry\['input'\] is a NoneType"),
    ("Say hi.", "entry is a str"),
])
def test_format_functions_name_a_bad_entry(entry, words):
    from ch07_instruct.data import encode_example, format_example
    for fn in (format_prompt, format_example, encode_example):
        with pytest.raises(ValueError, match=words):
            fn(entry)
    with pytest.raises(ValueError, match="entry has no 'output' key"):
        format_example({"instruction": "Say hi."})
    with pytest.raises(ValueError, match="entry has no 'output' key"):
        encode_example({"instruction": "Say hi."})


@pytest.mark.parametrize("items, words", [
    ([{"input_ids": [1, 2]}], r"items\[0\] has keys \['input_ids'\]"),
    ([(1, 2)], r"items\[0\] has tuple"),
    ([{"input_ids": "hello", "prompt_len": 1}], r"items\[0\]\['input_ids'\] is 'hello'"),
    ([{"input_ids": [1, 2], "prompt_len": 5}], r"items\[0\]\['prompt_len'\] is 5; use an int from 0 to"),
])
def test_collate_names_a_bad_item(items, words):
    with pytest.raises(ValueError, match=words):
        collate(items)
