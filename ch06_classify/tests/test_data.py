"""The SMS Spam Collection: verified download through a zip, exact reading, splits, batches."""

import collections
import os
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch

from ch02_data import EOT_ID, DownloadError, gpt2_encoding, sha256_of
from ch06_classify.data import (
    LABELS,
    SMS_NAME,
    SMS_SHA256,
    SMS_ZIP_NAME,
    SpamDataset,
    balance,
    collate_longest,
    load_sms_spam,
    make_loader,
    read_sms_file,
    read_sms_naively,
    sms_spam_path,
    split,
)


REAL_MIRROR = os.environ.get("DATA_MIRROR")  # read before any test changes it


@pytest.fixture(scope="module")
def sms_bytes():
    """The real file's bytes (from the repository's data folder, DATA_MIRROR or the web)."""
    return sms_spam_path().read_bytes()


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """An empty data folder and no mirror: nothing can come from the usual places."""
    folder = tmp_path / "data"
    monkeypatch.setenv("DATA_DIR", str(folder))
    monkeypatch.delenv("DATA_MIRROR", raising=False)
    return folder


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.part*"))


def missing_url(tmp_path: Path) -> str:
    return (tmp_path / "no-such.zip").as_uri()  # fails like a dead link, with no network


# --- Download ---------------------------------------------------------------------------------


def test_mirror_copy_of_the_extracted_file(data_dir, monkeypatch):
    if not REAL_MIRROR or not (Path(REAL_MIRROR) / SMS_NAME).is_file():
        pytest.skip(f"DATA_MIRROR={REAL_MIRROR} holds no {SMS_NAME}")
    monkeypatch.setenv("DATA_MIRROR", REAL_MIRROR)
    path = sms_spam_path(urls=("http://127.0.0.1:9/never-used.zip",))
    assert path == data_dir / SMS_NAME and sha256_of(path) == SMS_SHA256
    assert sms_spam_path(urls=("http://127.0.0.1:9/never-used.zip",)) == path  # second call: no work


def test_zip_in_mirror_is_extracted_and_verified(data_dir, tmp_path, monkeypatch, sms_bytes):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    make_zip(mirror / SMS_ZIP_NAME, {"readme": b"about", SMS_NAME: sms_bytes})
    monkeypatch.setenv("DATA_MIRROR", str(mirror))
    data_dir.mkdir()
    (data_dir / SMS_NAME).write_bytes(b"a corrupt earlier copy")  # replaced, not trusted
    path = sms_spam_path(urls=(missing_url(tmp_path),))
    assert path.read_bytes() == sms_bytes
    assert leftovers(data_dir) == []


def test_zip_from_the_next_url_when_the_first_fails(data_dir, tmp_path, sms_bytes):
    zip_path = make_zip(tmp_path / SMS_ZIP_NAME, {SMS_NAME: sms_bytes})
    path = sms_spam_path(urls=(missing_url(tmp_path), zip_path.as_uri()))
    assert sha256_of(path) == SMS_SHA256
    assert sorted(p.name for p in data_dir.iterdir()) == [SMS_NAME]  # the zip is not kept


@pytest.mark.parametrize(
    "members, expected",
    [
        ({SMS_NAME: b"ham\tnot the real file\n"}, "sha256"),
        ({"readme": b"no data here"}, f"no member {SMS_NAME!r}"),
        (None, "not a readable zip"),  # e.g. an HTML error page served with status 200
    ],
)
def test_wrong_zip_is_refused_and_nothing_is_written(data_dir, tmp_path, members, expected):
    bad = tmp_path / "bad.zip"
    if members is None:
        bad.write_bytes(b"<html>Service unavailable</html>")
    else:
        make_zip(bad, members)
    with pytest.raises(DownloadError, match=expected) as info:
        sms_spam_path(urls=(bad.as_uri(),))
    assert "DATA_MIRROR" in str(info.value)
    assert not (data_dir / SMS_NAME).exists() and leftovers(data_dir) == []


def test_a_url_that_times_out_is_tried_once_more_then_the_next(data_dir, tmp_path, monkeypatch,
                                                               sms_bytes):
    import time
    import urllib.request

    real_urlopen, calls, sleeps = urllib.request.urlopen, [], []

    def urlopen(request, timeout):
        calls.append(request.full_url)
        if request.full_url.startswith("http:"):
            raise TimeoutError("The read operation timed out")
        return real_urlopen(request, timeout=timeout)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(time, "sleep", sleeps.append)
    good = make_zip(tmp_path / SMS_ZIP_NAME, {SMS_NAME: sms_bytes}).as_uri()
    path = sms_spam_path(urls=("http://127.0.0.1:9/slow.zip", good), timeout=1)
    assert sha256_of(path) == SMS_SHA256
    assert calls == ["http://127.0.0.1:9/slow.zip"] * 2 + [good] and sleeps == [1]


def test_every_url_failing_names_them_all(data_dir, tmp_path):
    urls = (missing_url(tmp_path), (tmp_path / "other.zip").as_uri())
    with pytest.raises(DownloadError) as info:
        sms_spam_path(urls=urls)
    assert all(url in str(info.value) for url in urls) and SMS_SHA256[:12] in str(info.value)
    with pytest.raises(ValueError, match="urls"):
        sms_spam_path(urls=())


# --- Reading ----------------------------------------------------------------------------------


def test_every_message_is_read():
    df = load_sms_spam()
    assert list(df.columns) == ["label", "text"]
    assert len(df) == 5574
    assert df["label"].value_counts().to_dict() == {"ham": 4827, "spam": 747}
    assert df["text"].str.contains('"').sum() > 0  # quote characters stay inside messages
    naive = read_sms_naively(sms_spam_path())
    assert len(naive) == 5572  # the pitfall: quoted fields swallow line ends


def test_quotes_do_not_merge_lines(tmp_path):
    path = tmp_path / "sms.txt"
    path.write_text('ham\t"Hello\nspam\tWIN now\nham\tbye" he said\r\n', encoding="utf-8")
    df = read_sms_file(path)
    assert df["text"].tolist() == ['"Hello', "WIN now", 'bye" he said']  # CRLF ending removed
    assert len(read_sms_naively(path)) < 3


@pytest.mark.parametrize(
    "bad_line, why",
    [
        (b"ham no tab here", "0 TABs"),
        (b"spam\tone\ttwo", "2 TABs"),
        (b"Ham\tcapital label", "label 'Ham'"),
        (b"", "0 TABs"),
        (b"ham\t\xff\xfe", "not valid UTF-8"),
    ],
)
def test_malformed_line_is_reported_with_its_number(tmp_path, bad_line, why):
    path = tmp_path / "sms.txt"
    path.write_bytes(b"ham\tfine\nspam\talso fine\n" + bad_line + b"\nham\tafter\n")
    with pytest.raises(ValueError, match="line 3 of") as info:
        read_sms_file(path)
    assert why in str(info.value) and str(path) in str(info.value)


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="holds no messages"):
        read_sms_file(path)


# --- Balance and split ------------------------------------------------------------------------


def rows(df):
    return collections.Counter(zip(df["label"], df["text"]))


def test_balance_and_split_counts_are_the_books():
    df = load_sms_spam()
    balanced = balance(df)
    assert balanced["label"].value_counts().to_dict() == {"ham": 747, "spam": 747}
    train, val, test = split(balanced)
    assert (len(train), len(val), len(test)) == (1045, 149, 300)
    assert rows(train) + rows(val) + rows(test) == rows(balanced)  # disjoint, nothing lost
    again = split(balance(df))
    assert all(a.equals(b) for a, b in zip((train, val, test), again))  # same seed, same rows
    assert not split(balanced, seed=1)[0].equals(train)
    assert SpamDataset(train["text"], train["label"]).longest == 120  # as printed in the book


@pytest.mark.parametrize("fractions", [(0.7, 0.3), (0.7, 0.2, 0.2), (1.2, -0.1, -0.1)])
def test_split_refuses_bad_fractions(fractions):
    df = pd.DataFrame({"label": ["ham", "spam"] * 5, "text": list("abcdefghij")})
    with pytest.raises(ValueError, match="fractions="):
        split(df, fractions)


def test_balance_refuses_a_frame_without_labels():
    with pytest.raises(ValueError, match="'label' column"):
        balance(pd.DataFrame({"text": ["a"]}))


# --- Dataset ----------------------------------------------------------------------------------


def test_padding_truncation_and_lengths():
    enc = gpt2_encoding()
    texts = ["Hi", "one two three four five six", "", "<|endoftext|>"]
    ds = SpamDataset(texts, ["ham", "spam", 0, 1], max_length=4)
    assert ds.input_ids.shape == (4, 4) and ds.n_truncated == 2  # 6 and 7 tokens
    assert ds[0]["input_ids"].tolist() == enc.encode("Hi") + [EOT_ID] * 3
    assert ds[1]["input_ids"].tolist() == enc.encode("one two three four five six")[:4]  # the start
    assert ds[2]["input_ids"].tolist() == [EOT_ID] * 4 and ds[2]["lengths"] == 1  # empty: one token
    special = enc.encode("<|endoftext|>", disallowed_special=())
    assert EOT_ID not in special[:4] and ds[3]["lengths"] == min(4, len(special))  # plain text
    assert [int(ds[i]["lengths"]) for i in range(2)] == [1, 4]
    assert ds.labels.tolist() == [0, 1, 0, 1]
    assert ds[0]["input_ids"].dtype == ds[0]["labels"].dtype == ds[0]["lengths"].dtype == torch.long


def test_max_length_none_is_the_longest_message():
    ds = SpamDataset(["a", "a b c d e"], ["ham", "spam"])
    assert ds.max_length == ds.longest == 5 and ds.n_truncated == 0
    assert ds.lengths.tolist() == [1, 5]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(texts=["a", "b"], labels=["ham"]), "2 texts but 1 labels"),
        (dict(texts=["a"], labels=["eggs"]), "labels\\[0\\]='eggs'"),
        (dict(texts=["a"], labels=[2]), "labels\\[0\\]=2"),
        (dict(texts=["a"], labels=["ham"], max_length=0), "max_length=0"),
        (dict(texts=["a"], labels=["ham"], pad_id=50257), "pad_id=50257"),
        (dict(texts=["a"], labels=["ham"], pad_id=-1), "pad_id=-1"),
        (dict(texts=[float("nan")], labels=["ham"]), "texts\\[0\\]=nan"),
        (dict(texts=[], labels=[]), "texts is empty"),
    ],
)
def test_dataset_bad_input_gets_one_sentence(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SpamDataset(**kwargs)


# --- Batches ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
    texts = ["a", "a b", "a b c", "a b c d", "a b c d e f g h", "hello", "spam spam", "x y z"]
    return SpamDataset(texts, [i % 2 for i in range(len(texts))], max_length=6)


def test_fixed_padding_batches(small):
    batch = next(iter(make_loader(small, batch_size=4)))
    assert batch["input_ids"].shape == (4, 6) and batch["labels"].shape == batch["lengths"].shape == (4,)


def test_collate_longest_trims_to_the_longest(small):
    batch = collate_longest([small[i] for i in range(3)])
    assert batch["input_ids"].shape == (3, 3)
    assert torch.equal(batch["input_ids"], small.input_ids[:3, :3])
    loader = make_loader(small, batch_size=4, pad="longest")
    assert [b["input_ids"].shape[1] for b in loader] == [4, 6]  # the 8-token text was cut to 6
    with pytest.raises(ValueError, match="items is empty"):
        collate_longest([])


def test_make_loader_shuffles_deterministically(small):
    def order(loader):
        return [b["input_ids"][:, 0].tolist() + b["lengths"].tolist() for b in loader]

    first = make_loader(small, batch_size=3, shuffle=True, seed=7)
    epochs = [order(first), order(first)]
    torch.manual_seed(999)  # the global random state does not matter
    second = make_loader(small, batch_size=3, shuffle=True, seed=7)
    assert [order(second), order(second)] == epochs
    assert epochs[0] != epochs[1]  # each epoch its own order
    peeked = make_loader(small, batch_size=3, shuffle=True, seed=7)
    next(iter(peeked))  # a look at one batch does not change the order that follows
    assert [order(peeked), order(peeked)] == epochs
    unshuffled = [b["lengths"].tolist() for b in make_loader(small, batch_size=3)]
    assert unshuffled == [small.lengths[i : i + 3].tolist() for i in (0, 3, 6)]
    assert len(make_loader(small, batch_size=3, drop_last=True)) == 2


@pytest.mark.parametrize("kwargs, message", [(dict(pad="max"), "pad='max'"), (dict(batch_size=0), "batch_size=0")])
def test_make_loader_bad_input(small, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_loader(small, **kwargs)


def test_labels_are_ham_then_spam():
    assert LABELS == ("ham", "spam")
