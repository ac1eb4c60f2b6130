"""Bad input and faults in chapter 2: no hangs, no lost work, one clear sentence for every mistake."""

import random

import pytest
import tiktoken

from ch02_data import BPETokenizer, fetch


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
