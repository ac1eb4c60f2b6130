"""Bad input and faults in chapter 2: no hangs, no lost work, one clear sentence for every mistake."""

import hashlib
import io
import os
import random
import socket
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tiktoken
import torch

from ch02_data import (
    BPETokenizer,
    DownloadError,
    GPTDataset,
    SimpleTokenizer,
    build_vocab,
    create_dataloader,
    download,
    fetch,
)


@pytest.fixture(scope="module")
def gpt2():
    return BPETokenizer.from_gpt2_files(fetch("encoder.json"), fetch("vocab.bpe"))


@pytest.fixture(scope="module")
def tiktoken_gpt2():
    return tiktoken.get_encoding("gpt2")


# ---------------------------------------------------------------- BPE on very long chunks
# Before the heap-based merge, one chunk of n bytes cost O(n^2): "a" * 100_000 took minutes and
# these tests did not finish. Now each takes about a second; finishing is the check.


def test_long_run_of_one_letter_is_encoded_like_tiktoken(gpt2, tiktoken_gpt2):
    text = "a" * 200_000  # one pre-token: nothing splits a run of letters
    assert gpt2.encode(text) == tiktoken_gpt2.encode(text)


def test_million_character_chunk_is_encoded_like_tiktoken(gpt2, tiktoken_gpt2):
    rng = random.Random(0)
    text = "".join(rng.choices("!#$%&()*+,-./:;<=>?@[]^_{|}~", k=1_000_000))
    assert len(gpt2._regex.findall(text)) == 1  # a single pre-token of symbols
    ids = gpt2.encode(text)
    assert ids == tiktoken_gpt2.encode(text)
    assert len(ids) < 900_000  # many merges happened, so the merge loop was exercised


@pytest.mark.parametrize("alphabet", ["ab", "etaoin", "0123456789", "é🙂a", "aab!?"])
def test_random_long_chunks_are_encoded_like_tiktoken(gpt2, tiktoken_gpt2, alphabet):
    rng = random.Random(alphabet)
    for length in (2, 3, 17, 500, 20_000):
        text = "".join(rng.choices(alphabet, k=length))
        assert gpt2.encode(text) == tiktoken_gpt2.encode(text), (alphabet, length)


@pytest.mark.parametrize("text", [b"Hello", None, 5, ["Hello"]])
def test_bpe_encode_of_something_else_than_a_str_is_named(gpt2, text):
    with pytest.raises(TypeError, match=rf"^text is a {type(text).__name__}; encode takes a str$"):
        gpt2.encode(text)


@pytest.mark.parametrize("vocab_size", [10, 256, 300.5, None, "300"])
def test_bpe_training_vocab_size_must_be_an_int_above_the_bytes_and_specials(vocab_size):
    # 300.5 used to train 44 merges: a vocabulary of 301 ids, one more than asked for.
    with pytest.raises(ValueError, match=rf"^vocab_size={vocab_size!r}; use an integer >= 257 \(256 bytes \+ 1 special"):
        BPETokenizer.train("ab ab", vocab_size)


# ---------------------------------------------------------------- decoding ids that are no tokens


@pytest.mark.parametrize("bad", [50257, -1, 10**30, 1.5, "7", None])
def test_bpe_decode_names_an_id_outside_the_vocabulary(gpt2, bad):
    with pytest.raises(ValueError, match=rf"ids\[1\]={bad!r} is not a token id; use ints from 0 to 50256"):
        gpt2.decode([15496, bad])
    with pytest.raises(ValueError, match="ids\\[1\\]"):
        gpt2.decode_bytes(iter([15496, bad]))


def test_bpe_decode_takes_a_1d_tensor_and_names_a_2d_one(gpt2):
    assert gpt2.decode(torch.tensor([15496, 11])) == "Hello,"
    with pytest.raises(ValueError, match=r"ids\[0\]=tensor\(\[15496,    11\]\) is not a token id"):
        gpt2.decode(torch.tensor([[15496, 11]]))


def test_simple_tokenizer_decode_names_an_id_outside_the_vocabulary():
    tok = SimpleTokenizer(build_vocab("do you like tea ?"))  # ids 0..6: 5 words, 2 specials
    assert tok.decode([0, 1]) == "? do"
    for bad in (7, -1, 2.5):
        with pytest.raises(ValueError, match=rf"ids\[1\]={bad!r} is not in the vocabulary; its ids run from 0 to 6"):
            tok.decode([0, bad])


def test_simple_tokenizer_unknown_word_without_unk_is_a_value_error_and_a_key_error():
    tok = SimpleTokenizer(build_vocab("do you like tea", special_tokens=()))
    with pytest.raises(ValueError, match=r"not in the vocabulary: \['Hello'\]"):
        tok.encode("Hello do you like tea")
    with pytest.raises(KeyError):  # what the notebook catches
        tok.encode("Hello")


# ---------------------------------------------------------------- downloads: what to retry, what to clean
# urlopen is replaced by a script of outcomes, and time.sleep by a recorder: no network, no waiting.

CONTENT = b"a tiny stand-in for a data file\n"
SHA = hashlib.sha256(CONTENT).hexdigest()
URL = "https://example.invalid/x.txt"


class _Response(io.BytesIO):
    headers = {"Content-Length": str(len(CONTENT))}


def _http_error(code, reason):
    return urllib.error.HTTPError(URL, code, reason, {}, None)


@pytest.fixture
def network(monkeypatch):
    """`network.outcomes`: what each urlopen call does (an exception to raise, else CONTENT)."""
    monkeypatch.delenv("DATA_MIRROR", raising=False)
    state = type("Network", (), {"outcomes": [], "calls": 0, "sleeps": []})()

    def urlopen(request, timeout):
        state.calls += 1
        outcome = state.outcomes.pop(0) if state.outcomes else None
        if outcome is not None:
            raise outcome
        return _Response(CONTENT)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(time, "sleep", state.sleeps.append)
    return state


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if ".part" in p.name)


@pytest.mark.parametrize(
    "error, reason",
    [
        (urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution")), "name resolution"),
        (urllib.error.URLError(socket.gaierror(-2, "Name or service not known")), "not known"),
        (urllib.error.URLError(ssl.SSLCertVerificationError(1, "certificate verify failed")), "certificate"),
        (urllib.error.URLError(ConnectionRefusedError(111, "Connection refused")), "refused"),
        (_http_error(404, "Not Found"), "HTTP 404 Not Found"),
        (_http_error(403, "Forbidden"), "HTTP 403 Forbidden"),
    ],
)
def test_errors_that_cannot_heal_are_not_retried(network, tmp_path, error, reason):
    network.outcomes = [error] * 4
    with pytest.raises(DownloadError, match=reason):
        download(URL, tmp_path / "x.txt", SHA, retries=3)
    assert network.calls == 1 and network.sleeps == []  # no 1 + 2 + 4 s of waiting for nothing
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "error",
    [
        urllib.error.URLError(TimeoutError("timed out")),
        TimeoutError("The read operation timed out"),
        ConnectionResetError(104, "Connection reset by peer"),
        _http_error(503, "Service Unavailable"),
        _http_error(429, "Too Many Requests"),
    ],
)
def test_transient_errors_are_retried(network, tmp_path, error):
    network.outcomes = [error, error]
    dest = download(URL, tmp_path / "x.txt", SHA, retries=3)
    assert dest.read_bytes() == CONTENT
    assert network.calls == 3 and network.sleeps == [1, 2]
    network.outcomes, network.calls = [error] * 3, 0
    with pytest.raises(DownloadError):
        download(URL, tmp_path / "y.txt", SHA, retries=2)
    assert network.calls == 3  # retries=2: three tries in all
    assert leftovers(tmp_path) == []


def test_failed_final_rename_leaves_no_temporary_copy(network, tmp_path, monkeypatch):
    def refuse(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(DownloadError, match="Could not move the verified file onto"):
        download(URL, tmp_path / "x.txt", SHA, retries=0)
    assert leftovers(tmp_path) == [] and not (tmp_path / "x.txt").exists()


def test_destination_that_is_a_folder_is_refused_before_downloading(network, tmp_path):
    (tmp_path / "x.txt").mkdir()
    with pytest.raises(DownloadError, match=r"dest='.*x.txt' is a folder; give the path of the file"):
        download(URL, tmp_path / "x.txt", SHA)
    assert network.calls == 0


def test_temporary_copies_of_a_killed_download_are_removed_next_time(network, tmp_path):
    stale = tmp_path / "x.txt.partk1ll3d_0"  # as tempfile.mkstemp names ours
    stale.write_bytes(b"half a file")
    others = [tmp_path / "y.txt.partabcdefgh", tmp_path / "x.txt.partial-notes.txt"]
    for path in others:  # another file's copy, and a name that is not ours: left alone
        path.write_bytes(b"keep")
    download(URL, tmp_path / "x.txt", SHA)
    assert not stale.exists() and all(path.exists() for path in others)


@pytest.mark.skipif(os.name == "nt", reason="POSIX file locks")
def test_temporary_copy_of_a_live_download_is_left_alone(network, tmp_path):
    import fcntl

    live = tmp_path / "x.txt.partl1vedown"
    with open(live, "wb") as f:  # another download, still running, holds its lock
        fcntl.flock(f, fcntl.LOCK_EX)
        download(URL, tmp_path / "x.txt", SHA)
        assert live.exists()


# ---------------------------------------------------------------- the sliding-window dataset and loader

IDS = list(range(100, 121))  # 21 token ids


@pytest.mark.parametrize("name", ["max_length", "stride"])
@pytest.mark.parametrize("value", [0, -3, 2.0, None, True])
def test_window_sizes_must_be_positive_ints(name, value):
    kwargs = {"max_length": 4, "stride": 2, name: value}
    with pytest.raises(ValueError, match=rf"^{name}={value!r}; use an integer >= 1 \("):
        GPTDataset(IDS, **kwargs)


@pytest.mark.parametrize("value", [0, -1, 2.0, None, False])
def test_batch_size_must_be_a_positive_int(value):
    # batch_size=None used to turn batching off silently: items of shape (T,) instead of (B, T).
    with pytest.raises(ValueError, match=rf"^batch_size={value!r}; use an integer >= 1 \(the windows per batch\)"):
        create_dataloader(IDS, batch_size=value, max_length=4, stride=2, drop_last=False)


def test_numpy_ints_are_accepted_as_sizes():
    loader = create_dataloader(IDS, batch_size=np.int64(2), max_length=np.int64(4), stride=np.int32(4))
    assert next(iter(loader))[0].shape == (2, 4)


def test_text_without_a_single_window_says_how_many_tokens_it_has():
    with pytest.raises(ValueError, match=r"^the text has 4 tokens; one window needs max_length \+ 1 = 5$"):
        GPTDataset(IDS[:4], max_length=4, stride=1)
    with pytest.raises(ValueError, match=r"^the text has 0 tokens"):
        create_dataloader("", max_length=4)
    assert len(GPTDataset(IDS[:5], max_length=4, stride=1)) == 1  # max_length + 1 tokens: one window


def test_drop_last_with_fewer_windows_than_batch_size_is_refused():
    # It used to give a loader of length 0: an epoch over it trained on nothing, silently.
    with pytest.raises(ValueError, match=r"^batch_size=32 is more than the 5 windows of the text, so "
                                         r"drop_last=True leaves no batch; use batch_size <= 5"):
        create_dataloader(IDS, batch_size=32, max_length=4, stride=4)
    assert [x.shape for x, _ in create_dataloader(IDS, batch_size=32, max_length=4, stride=4, drop_last=False)] == [
        (5, 4)
    ]


@pytest.mark.parametrize(
    "text_or_ids, message",
    [
        (Path("the-verdict.txt"), r"^text_or_ids is the path 'the-verdict.txt'; read the text first"),
        (b"Hello, world. " * 5, r"^text_or_ids is bytes; decode the text first"),
        (None, r"^text_or_ids is not a str nor a sequence of token ids"),
        (["Hello world"] * 10, r"^text_or_ids is not a str nor a sequence of token ids"),
        (7, r"^text_or_ids has shape \(\); give one 1-D sequence of token ids"),
        (torch.arange(60).view(6, 10), r"^text_or_ids has shape \(6, 10\); give one 1-D sequence"),
        (torch.rand(30) * 100, r"^text_or_ids holds torch.float32 values; token ids must be integers"),
        ([True] * 30, r"^text_or_ids holds torch.bool values"),
        ([5] * 20 + [-1], r"^text_or_ids holds the id -1; token ids are >= 0"),
    ],
)
def test_text_that_is_neither_a_str_nor_token_ids_is_named(text_or_ids, message):
    # 2-D ids used to give windows of whole rows, and floats were cut to ints, both silently.
    with pytest.raises(ValueError, match=message):
        GPTDataset(text_or_ids, max_length=4, stride=4)


def test_a_tokenizer_without_tiktoken_options_is_used_plainly():
    tok = SimpleTokenizer(build_vocab("a b c d e f"))
    inputs, targets = GPTDataset("a b c d e f", tokenizer=tok, max_length=2, stride=2)[0]
    assert inputs.tolist() == tok.encode("a b") and targets.tolist() == tok.encode("b c")


# --- still open from round two ----------------------------------------------------------------------


def test_sha256_with_spaces_around_is_accepted_and_a_wrong_one_named(tmp_path, monkeypatch):
    content = b"a file"
    src = tmp_path / "mirror"
    src.mkdir()
    (src / "f.txt").write_bytes(content)
    digest = hashlib.sha256(content).hexdigest()
    monkeypatch.setenv("DATA_MIRROR", str(src))
    dest = download("http://127.0.0.1:9/f.txt", tmp_path / "out" / "f.txt", f"  {digest.upper()}\n",
                    retries=0)
    assert dest.read_bytes() == content
    for bad in ("abc", None, digest[:-1] + "g"):
        with pytest.raises(ValueError, match="give the file's SHA-256 as 64 hexadecimal digits"):
            download("http://127.0.0.1:9/f.txt", tmp_path / "g.txt", bad, retries=0)


def test_tiktoken_cache_dir_that_is_a_file_is_named(tmp_path, monkeypatch):
    from ch02_data import gpt2_encoding
    (tmp_path / "cache").write_text("not a folder", encoding="utf-8")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "cache"))
    gpt2_encoding.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"TIKTOKEN_CACHE_DIR='.*cache' is a file; point it to a folder"):
            gpt2_encoding()
    finally:
        gpt2_encoding.cache_clear()


@pytest.mark.parametrize("special_tokens, words", [
    ([""], "special_tokens holds ''; each special token must be a non-empty str"),
    (["<|endoftext|>", "<|endoftext|>"], r"lists \['<\|endoftext\|>'\] more than once"),
    ("<|endoftext|>", "is one str; give a list"),
    ([None], "special_tokens holds None"),
])
def test_bpe_training_refuses_empty_or_repeated_special_tokens(special_tokens, words):
    with pytest.raises(ValueError, match=words):
        BPETokenizer.train("aaaa bbbb " * 10, vocab_size=300, special_tokens=special_tokens)


def test_swapped_gpt2_files_are_named():
    with pytest.raises(ValueError, match="paths look swapped"):
        BPETokenizer.from_gpt2_files(fetch("vocab.bpe"), fetch("encoder.json"))
