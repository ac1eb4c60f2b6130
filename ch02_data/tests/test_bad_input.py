"""Bad input and faults in chapter 2: no hangs, no lost work, one clear sentence for every mistake."""

import random

import pytest
import tiktoken

from ch02_data import BPETokenizer, SimpleTokenizer, build_vocab, fetch


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


# ---------------------------------------------------------------- decoding ids that are no tokens


@pytest.mark.parametrize("bad", [50257, -1, 10**30, 1.5, "7", None])
def test_bpe_decode_names_an_id_outside_the_vocabulary(gpt2, bad):
    with pytest.raises(ValueError, match=rf"ids\[1\]={bad!r} is not a token id; use ints from 0 to 50256"):
        gpt2.decode([15496, bad])
    with pytest.raises(ValueError, match="ids\\[1\\]"):
        gpt2.decode_bytes(iter([15496, bad]))


def test_bpe_decode_takes_a_1d_tensor_and_names_a_2d_one(gpt2):
    torch = pytest.importorskip("torch")
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
