"""gpt2_encoding(): tiktoken's GPT-2 encoding, rebuilt from fetched files when tiktoken cannot load."""

import tiktoken

import ch02_data.encoding as encoding
from ch02_data import EOT_ID, gpt2_encoding

TEXT = "Hello, world! It's 2026 — naïve café 🤖\n\n  <|endoftext|> The end."


def test_same_ids_as_tiktoken():
    ref = tiktoken.get_encoding("gpt2")
    assert gpt2_encoding().encode(TEXT, allowed_special="all") == ref.encode(TEXT, allowed_special="all")
    assert gpt2_encoding().encode("<|endoftext|>", allowed_special="all") == [EOT_ID]


def test_offline_fallback_builds_the_same_encoding(monkeypatch):
    def offline(name):
        raise ConnectionError("no network")

    ref = tiktoken.get_encoding("gpt2").encode(TEXT, allowed_special="all")
    monkeypatch.setattr(encoding.tiktoken, "get_encoding", offline)
    encoding.gpt2_encoding.cache_clear()
    try:
        enc = encoding.gpt2_encoding()
        assert enc.encode(TEXT, allowed_special="all") == ref
        assert enc.n_vocab == 50257
    finally:
        encoding.gpt2_encoding.cache_clear()
