"""The sliding-window dataset and its DataLoader."""

import pytest
import torch

from ch02_data import BPETokenizer, GPTDataset, create_dataloader

IDS = list(range(100, 121))  # 21 distinct token ids: easy to follow by eye


def test_windows_and_shift_by_one():
    ds = GPTDataset(IDS, max_length=4, stride=1)
    assert len(ds) == 17  # starts 0..16: the last window needs one more token for its target
    x, y = ds[3]
    assert x.tolist() == [103, 104, 105, 106] and y.tolist() == [104, 105, 106, 107]
    assert x.dtype == y.dtype == torch.int64
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_stride_equal_to_max_length_covers_each_token_once():
    ds = GPTDataset(IDS, max_length=4, stride=4)
    inputs = torch.cat([ds[i][0] for i in range(len(ds))]).tolist()
    assert inputs == IDS[:20]  # every token once, in order; 120 is only ever a target
    assert len(set(inputs)) == len(inputs)


def test_text_is_encoded_with_gpt2_and_endoftext_allowed():
    ds = GPTDataset("Hello, I am<|endoftext|> a test of the loader", max_length=4, stride=4)
    assert ds.ids[:5].tolist() == [15496, 11, 314, 716, 50256]


def test_custom_tokenizer():
    tok = BPETokenizer.train("aaaa bbbb " * 20, vocab_size=260)
    ds = GPTDataset("aaaa bbbb " * 5, tokenizer=tok, max_length=3, stride=3)
    assert ds.ids.tolist() == tok.encode("aaaa bbbb " * 5)


def test_dataloader_shapes_and_drop_last():
    kwargs = dict(batch_size=4, max_length=3, stride=2, shuffle=False)
    n_windows = len(GPTDataset(IDS, max_length=3, stride=2))  # starts 0, 2, ..., 16: 9 windows
    assert n_windows == 9
    batches = list(create_dataloader(IDS, **kwargs))
    assert len(batches) == 2 and all(x.shape == y.shape == (4, 3) for x, y in batches)
    assert torch.equal(batches[0][1][:, :-1], batches[0][0][:, 1:])  # targets = inputs shifted
    kept = list(create_dataloader(IDS, drop_last=False, **kwargs))
    assert [x.shape[0] for x, _ in kept] == [4, 4, 1]


def test_shuffle_is_reproducible_with_a_seed():
    torch.manual_seed(123)
    a = [x for x, _ in create_dataloader(IDS, batch_size=2, max_length=2, stride=2)]
    torch.manual_seed(123)
    b = [x for x, _ in create_dataloader(IDS, batch_size=2, max_length=2, stride=2)]
    assert all(torch.equal(p, q) for p, q in zip(a, b))


def test_too_short_text_is_a_clear_error():
    with pytest.raises(ValueError, match="max_length"):
        GPTDataset(IDS[:4], max_length=4, stride=1)
