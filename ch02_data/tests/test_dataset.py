"""The sliding-window dataset and its DataLoader."""

import pytest
import torch

from ch02_data import BPETokenizer, GPTDataset, SeededSampler, create_dataloader, seeded_loader

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


# --- seeded_loader: an order that depends only on (seed, epoch) ---


def orders(loader, passes=3):
    """The batches of `passes` passes over `loader` (a batch of (inputs, targets): its inputs)."""
    return [[(b[0] if isinstance(b, list) else b).tolist() for b in loader] for _ in range(passes)]


def test_seeded_loader_order_depends_only_on_seed_and_epoch():
    data = list(range(20))
    plain = orders(seeded_loader(data, 5, shuffle=True, seed=123))
    assert plain[0] != plain[1] != plain[2]  # each epoch its own order
    assert sorted(sum(plain[0], [])) == data  # every item once per epoch

    peeked = seeded_loader(data, 5, shuffle=True, seed=123)
    next(iter(peeked))  # a peek at one batch
    for batch in peeked:  # a pass cut short is not counted either
        break
    torch.manual_seed(999)
    torch.rand(3)  # anything else drawing from torch's global random state
    assert orders(peeked) == plain

    jumped = seeded_loader(data, 5, shuffle=True, seed=123)
    jumped.sampler.set_epoch(2)
    assert [b.tolist() for b in jumped] == plain[2]
    assert orders(seeded_loader(data, 5, shuffle=True, seed=124)) != plain
    assert orders(seeded_loader(data, 5, seed=123), 1) == [[data[i:i + 5] for i in range(0, 20, 5)]]


def test_seeded_loader_leaves_the_global_random_state_alone():
    loader = seeded_loader(list(range(10)), 3, shuffle=True, seed=1)
    state = torch.get_rng_state()
    orders(loader, 2)
    next(iter(loader))
    assert torch.equal(torch.get_rng_state(), state)


def test_seeded_loader_without_seed_takes_one_from_torch_once():
    torch.manual_seed(5)
    a = seeded_loader(list(range(10)), 3, shuffle=True, seed=None)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    b = seeded_loader(list(range(10)), 3, shuffle=True, seed=None)
    assert torch.equal(torch.get_rng_state(), state)  # a model built next gets the same weights
    torch.rand(7)
    assert orders(a) == orders(b)
    torch.manual_seed(123)
    c = create_dataloader(IDS, batch_size=2, max_length=2, stride=2)
    next(iter(c))
    torch.manual_seed(123)
    assert orders(c) == orders(create_dataloader(IDS, batch_size=2, max_length=2, stride=2))


@pytest.mark.parametrize("kwargs, message", [
    (dict(seed=-1), r"seed=-1; use an int in \[0, 2\*\*63\)"),
    (dict(seed=1.5), r"seed=1.5"),
    (dict(batch_size=0), "batch_size=0"),
    (dict(collate_fn="stack"), "collate_fn is str"),
])
def test_seeded_loader_bad_input(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        seeded_loader(list(range(4)), **{"batch_size": 2, "shuffle": True, **kwargs})


def test_set_epoch_bad_input():
    with pytest.raises(ValueError, match="epoch=-1; use an integer >= 0"):
        SeededSampler(4, seed=0).set_epoch(-1)
