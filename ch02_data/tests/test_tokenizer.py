"""The word-level teaching tokenizer."""

import pytest

from ch02_data import SimpleTokenizer, build_vocab, fetch, tokenize


def test_tokenize_splits_punctuation_and_keeps_special_tokens_whole():
    assert tokenize("Hello, world. Is this-- a test?") == [
        "Hello", ",", "world", ".", "Is", "this", "--", "a", "test", "?"
    ]
    assert tokenize("tea?<|endoftext|>In") == ["tea", "?", "<|endoftext|>", "In"]


def test_vocab_of_the_verdict():
    vocab = build_vocab(fetch("the-verdict.txt").read_text(encoding="utf-8"))
    assert len(vocab) == 1132  # 1,130 distinct tokens + <|endoftext|> + <|unk|>
    assert vocab["<|endoftext|>"] == 1130 and vocab["<|unk|>"] == 1131
    assert sorted(vocab.values()) == list(range(1132))


def test_encode_decode_round_trip_of_known_words():
    text = '"It\'s the last he painted, you know," Mrs. Gisburn said--with pride (really).'
    tok = SimpleTokenizer(build_vocab(text))
    assert tok.decode(tok.encode(text)) == text


def test_unknown_words():
    vocab = build_vocab("do you like tea ?")
    tok = SimpleTokenizer(vocab)
    ids = tok.encode("Hello, do you like tea? <|endoftext|> In")
    assert ids.count(vocab["<|unk|>"]) == 3  # Hello , In
    assert vocab["<|endoftext|>"] in ids
    assert tok.decode(ids) == "<|unk|> <|unk|> do you like tea? <|endoftext|> <|unk|>"

    no_unk = SimpleTokenizer(build_vocab("do you like tea", special_tokens=()))
    with pytest.raises(KeyError, match="Hello"):
        no_unk.encode("Hello")
