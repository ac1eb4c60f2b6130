"""Preference entries: loading, checks, split, tokenized pairs, collate (masks, shared T,
truncation, dropped rows) and the loader."""

import pytest
import torch

from bonus_dpo import (
    DPOLoss,
    PreferenceDataset,
    check_preference_entries,
    load_preference_data,
    make_preference_loader,
    preference_collate,
    split_preference,
)
from ch02_data import EOT_ID, gpt2_encoding
from ch05_pretrain import NoTargetsError
from ch07_instruct import format_prompt

TOK = gpt2_encoding()
E = EOT_ID
ENTRY = {"instruction": "Rewrite politely.", "input": "Give me the salt.", "output": "x",
         "chosen": "Could you pass the salt, please?", "rejected": "Salt. Now."}

# Hand-made items: prompt, then the response ending in the end token.
A = {"prompt": [1, 2, 3], "chosen": [10, 11, E], "rejected": [20, E]}
B = {"prompt": [4, 5], "chosen": [30, E], "rejected": [40, 41, 42, 43, E]}


# --- loading, checks, split ---


def test_real_file_loads_and_splits_like_chapter_7():
    entries = load_preference_data()
    assert len(entries) == 1100
    assert all(isinstance(e["chosen"], str) and isinstance(e["rejected"], str) for e in entries)
    train, val, test = split_preference(entries)
    assert (len(train), len(val), len(test)) == (935, 55, 110)
    again = split_preference(entries)
    assert train == again[0] and test == again[2]  # seeded
    assert split_preference(entries, seed=None)[0] == entries[:935]


@pytest.mark.parametrize("bad, match", [
    ("text", "entries is a str"),
    ([["a"]], r"entries\[0\] is a list"),
    ([{"instruction": "x", "chosen": "y"}], r"entries\[0\] has no 'rejected'"),
    ([{"instruction": "x", "chosen": "y", "rejected": 3}], r"entries\[0\]\['rejected'\] is a int"),
    ([{"instruction": "x", "input": None, "chosen": "y", "rejected": "z"}], r"\['input'\] is a NoneType"),
])
def test_bad_entries_are_named(bad, match):
    with pytest.raises(ValueError, match=match):
        check_preference_entries(bad)


def test_input_may_be_missing_and_output_absent():
    entry = {"instruction": "x", "chosen": "y", "rejected": "z"}
    assert check_preference_entries([entry]) == [entry]


# --- tokenized pairs ---


@pytest.mark.parametrize("style", ["alpaca", "phi3"])
def test_dataset_on_the_real_file(style):
    entries = load_preference_data()[:20]
    ds = PreferenceDataset(entries, TOK, style=style)
    assert len(ds) == 20 and ds.truncated == [] and ds.empty == []
    for entry, item in zip(entries, ds):
        assert set(item) == {"prompt", "chosen", "rejected"}
        assert item["prompt"] == TOK.encode(format_prompt(entry, style))
        assert item["chosen"] == TOK.encode(entry["chosen"]) + [E]
        assert item["rejected"] == TOK.encode(entry["rejected"]) + [E]
        assert item["chosen"][-1] == E and item["chosen"].count(E) == 1


def test_end_token_typed_in_a_response_is_ordinary_text():
    item = PreferenceDataset([{**ENTRY, "chosen": "<|endoftext|>"}], TOK)[0]
    assert item["chosen"].count(E) == 1 and item["chosen"][-1] == E


def test_dataset_truncates_to_the_window():
    long_prompt = {**ENTRY, "instruction": "Repeat. " * 100}
    prompt_len = len(TOK.encode(format_prompt(ENTRY)))
    ds = PreferenceDataset([ENTRY, long_prompt], TOK, max_length=prompt_len + 3)
    assert ds.truncated == [0, 1] and ds.empty == [1]
    assert ds[0]["chosen"] == TOK.encode(ENTRY["chosen"])[:3]  # cut, losing its end token
    assert ds[0]["rejected"] == TOK.encode(ENTRY["rejected"])[:3]
    assert len(ds[1]["prompt"]) == prompt_len + 3 and ds[1]["chosen"] == []
    batch = preference_collate([ds[0], ds[1]])  # the window holds without collate's max_length
    assert batch["chosen"].shape == (1, prompt_len + 3) and batch["dropped"] == 1


@pytest.mark.parametrize("kwargs, match", [
    ({"style": "chatml"}, "style='chatml'"),
    ({"max_length": 1}, "max_length=1"),
])
def test_bad_dataset_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PreferenceDataset([ENTRY], TOK, **kwargs)


# --- collate ---


def test_collate_masks_exactly_the_response_tokens_with_one_shared_T():
    batch = preference_collate([A, B])
    # lengths: A 6 / 5, B 4 / 7 -> one T = 7 for chosen and rejected
    assert batch["chosen"].dtype == torch.int64 and batch["chosen_mask"].dtype == torch.bool
    assert batch["chosen"].tolist() == [[1, 2, 3, 10, 11, E, E], [4, 5, 30, E, E, E, E]]
    assert batch["rejected"].tolist() == [[1, 2, 3, 20, E, E, E], [4, 5, 40, 41, 42, 43, E]]
    F_, T_ = False, True
    assert batch["chosen_mask"].tolist() == [[F_, F_, F_, T_, T_, T_, F_], [F_, F_, T_, T_, F_, F_, F_]]
    assert batch["rejected_mask"].tolist() == [[F_, F_, F_, T_, T_, F_, F_], [F_, F_, T_, T_, T_, T_, T_]]
    assert batch["dropped"] == 0 and "ref_chosen_logps" not in batch


def test_collate_pads_with_the_given_id_and_never_past_the_longest():
    batch = preference_collate([A], pad_id=0, max_length=50)
    assert batch["chosen"].tolist() == [[1, 2, 3, 10, 11, E]]
    assert batch["rejected"].tolist() == [[1, 2, 3, 20, E, 0]]
    assert batch["rejected_mask"].tolist()[0] == [False, False, False, True, True, False]


def test_collate_truncates_and_drops_rows_without_a_response():
    batch = preference_collate([A, B], max_length=4)
    assert batch["chosen"].tolist() == [[1, 2, 3, 10], [4, 5, 30, E]]
    assert batch["rejected"].tolist() == [[1, 2, 3, 20], [4, 5, 40, 41]]
    assert batch["chosen_mask"].sum(dim=1).tolist() == [1, 2]
    assert batch["rejected_mask"].sum(dim=1).tolist() == [1, 2]

    batch = preference_collate([A, B], max_length=3)  # A's prompt fills the window: dropped
    assert batch["dropped"] == 1
    assert batch["chosen"].tolist() == [[4, 5, 30]] and batch["rejected"].tolist() == [[4, 5, 40]]
    assert batch["chosen_mask"].tolist() == [[False, False, True]]


def test_a_row_is_dropped_when_either_response_is_empty():
    only_chosen = {"prompt": [7, 8], "chosen": [9, E], "rejected": []}
    batch = preference_collate([only_chosen, B])
    assert batch["dropped"] == 1 and batch["chosen"].shape[0] == 1
    assert batch["chosen"][0, :3].tolist() == [4, 5, 30]


def test_a_response_at_position_0_is_not_counted():
    no_prompt = {"prompt": [], "chosen": [9, E], "rejected": [8, 7, E]}
    batch = preference_collate([no_prompt])
    assert batch["chosen_mask"].tolist() == [[False, True, False]]  # token 0 has no prediction
    assert batch["rejected_mask"].tolist() == [[False, True, True]]
    single = preference_collate([{"prompt": [], "chosen": [9, E], "rejected": [8]}])
    assert single["dropped"] == 1  # rejected = [8] alone has no token to score


def test_all_rows_dropped_gives_an_empty_batch_that_the_loss_refuses():
    batch = preference_collate([A, B], max_length=2)
    assert batch["dropped"] == 2
    assert batch["chosen"].shape == (0, 2) and batch["rejected_mask"].shape == (0, 2)
    # Raised by the loss, not by collate: chapter 5's train skips a batch only when its loss_fn
    # raises NoTargetsError (an error raised while the DataLoader builds the batch would stop it).
    with pytest.raises(NoTargetsError, match="every pair of this batch was dropped"):
        DPOLoss(torch.nn.Linear(1, 1))(torch.nn.Linear(1, 1), batch)


def test_collate_refuses_an_empty_list_and_bad_max_length():
    with pytest.raises(ValueError, match="items is empty"):
        preference_collate([])
    with pytest.raises(ValueError, match="max_length=0"):
        preference_collate([A], max_length=0)


def test_collate_carries_reference_logps_only_with_a_matching_max_length():
    a = {**A, "ref_chosen_logp": -1.5, "ref_rejected_logp": -2.5, "ref_max_length": 3}
    b = {**B, "ref_chosen_logp": -3.0, "ref_rejected_logp": -4.0, "ref_max_length": 3}
    batch = preference_collate([a, b], max_length=3)  # a is dropped, b's values stay
    assert batch["ref_chosen_logps"].tolist() == [-3.0] and batch["ref_rejected_logps"].tolist() == [-4.0]
    with pytest.raises(ValueError, match="computed with max_length=3 but this batch uses max_length=None"):
        preference_collate([a, b])
    with pytest.raises(ValueError, match="only 1 of the 2 items carry"):
        preference_collate([a, B], max_length=3)


# --- loader ---


def test_loader_is_seeded_and_passes_max_length():
    ds = PreferenceDataset([{**ENTRY, "chosen": f"Answer number {i}."} for i in range(10)], TOK)
    first = [b["chosen"] for b in make_preference_loader(ds, batch_size=4, shuffle=True, seed=1)]
    again = [b["chosen"] for b in make_preference_loader(ds, batch_size=4, shuffle=True, seed=1)]
    other = [b["chosen"] for b in make_preference_loader(ds, batch_size=4, shuffle=True, seed=2)]
    assert len(first) == 3 and all(torch.equal(x, y) for x, y in zip(first, again))
    assert not all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(first, other))
    window = len(ds[0]["prompt"]) + 2
    short = next(iter(make_preference_loader(ds, batch_size=4, max_length=window)))
    assert short["chosen"].shape == (4, window) and short["chosen_mask"].sum().item() == 4 * 2
    assert len(make_preference_loader(ds, batch_size=4, drop_last=True)) == 2
    with pytest.raises(ValueError, match="batch_size=0"):
        make_preference_loader(ds, batch_size=0)


@pytest.mark.parametrize("items, words", [
    ([{"prompt": [1], "chosen": [2]}], r"items\[0\] has keys \['chosen', 'prompt'\]"),
    ([{"prompt": [1], "chosen": "yes", "rejected": [3]}], r"items\[0\]\['chosen'\] is 'yes'"),
    ([[1, 2, 3]], r"items\[0\] has list"),
])
def test_collate_names_a_bad_item(items, words):
    with pytest.raises(ValueError, match=words):
        preference_collate(items)
