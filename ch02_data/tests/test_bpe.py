"""BPE from scratch: GPT-2's files give tiktoken's ids exactly; training is deterministic."""

import json

import pytest
import tiktoken

from ch02_data import BPETokenizer, fetch
from ch02_data.bpe import bytes_to_unicode

EOT = "<|endoftext|>"

TRICKY = [
    "",
    " ",
    "\n",
    "Hello, world!",
    "Akwirw ier",
    "  two leading spaces",
    "trailing spaces   ",
    "many     spaces    between",
    "line1\nline2\n\n\nline3\n",
    "windows\r\nline\r\nendings\r\n",
    "\ttabs\tand\t\tmore \t mixed",
    " \n \t \r\n  \n",
    "123 4567 89012345 3.14159 1,000,000 0x1F",
    "I'm you're we've he'll she'd it's don't",
    "I'M YOU'RE WE'VE HE'LL SHE'D IT'S DON'T",
    "'s 's's ''s' 'S 'tis rock'n'roll",
    "Punctuation!!! ??? ... --- ((())) [x]{y}",
    "email@example.com https://example.com/path?q=1&x=2#frag",
    "naïve café résumé Ångström",
    "e\u0301 combining acute, n\u0303, a\u0308\u0304 stacked",
    "中文字符和日本語のテキスト、한국어 텍스트",
    "Ελληνικά Русский العربية עברית हिन्दी ไทย",
    "emoji 🙂👍🏽 family 👨\u200d👩\u200d👧\u200d👦 flag 🇺🇸",
    "non\u00a0breaking\u2003em space\u3000ideographic space",
    "zero\u200bwidth\ufeffbom",
    "def f(x):\n    return x ** 2  # comment\n",
    "\x00\x01\x1f\x7f control bytes",
    "replacement \ufffd and private use \ue000",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛 ①②③ ½ ²",
    "ｆｕｌｌｗｉｄｔｈ　ｔｅｘｔ",
    "a" * 1000,
    " " * 200 + "x",
]
WITH_SPECIAL = [
    EOT,
    EOT + EOT,
    f"x {EOT}y",
    f"Hello, do you like tea? {EOT} In the sunlit terraces of someunknownPlace.",
    f"<|endoftext {EOT}|> <|endoftext| <|",
]


@pytest.fixture(scope="module")
def gpt2():
    return BPETokenizer.from_gpt2_files(fetch("encoder.json"), fetch("vocab.bpe"))


@pytest.fixture(scope="module")
def tiktoken_gpt2():
    return tiktoken.get_encoding("gpt2")


@pytest.fixture(scope="module")
def verdict():
    return fetch("the-verdict.txt").read_text(encoding="utf-8")


def test_bytes_to_unicode():
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256))
    assert len(set(table.values())) == 256
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[ord("A")] == "A"


def test_loaded_vocabulary(gpt2):
    assert gpt2.n_vocab == 50257 and len(gpt2.merges) == 50000
    assert gpt2.special_tokens == {EOT: 50256}
    assert gpt2.vocab[15496] == b"Hello" and gpt2.vocab[gpt2.merges[0][0]] == b" "


@pytest.mark.parametrize("name", ["the-verdict.txt", "tinyshakespeare.txt"])
def test_same_ids_as_tiktoken_on_books(gpt2, tiktoken_gpt2, name):
    text = fetch(name).read_text(encoding="utf-8")
    ids = gpt2.encode(text)
    assert ids == tiktoken_gpt2.encode(text)
    assert gpt2.decode(ids) == text


def test_same_ids_as_tiktoken_on_instruction_data(gpt2, tiktoken_gpt2):
    records = json.loads(fetch("instruction-data.json").read_text(encoding="utf-8"))
    texts = [r[key] for r in records for key in ("instruction", "input", "output")]
    assert len(texts) == 3300
    mismatched = [t for t in texts if gpt2.encode(t) != tiktoken_gpt2.encode(t)]
    assert mismatched == []
    assert all(gpt2.decode(gpt2.encode(t)) == t for t in texts)


@pytest.mark.parametrize("text", TRICKY)
def test_same_ids_as_tiktoken_on_tricky_text(gpt2, tiktoken_gpt2, text):
    ids = gpt2.encode(text)
    assert ids == tiktoken_gpt2.encode(text)
    assert gpt2.decode(ids) == text


@pytest.mark.parametrize("text", WITH_SPECIAL)
def test_special_tokens_follow_tiktoken(gpt2, tiktoken_gpt2, text):
    with pytest.raises(ValueError):  # by default special-token text is refused, as in tiktoken
        gpt2.encode(text)
    for kwargs in ({"allowed_special": {EOT}}, {"allowed_special": "all"}, {"disallowed_special": ()}):
        ids = gpt2.encode(text, **kwargs)
        assert ids == tiktoken_gpt2.encode(text, **kwargs), kwargs
        assert gpt2.decode(ids) == text
    assert 50256 in gpt2.encode(text, allowed_special="all")
    assert 50256 not in gpt2.encode(text, disallowed_special=())


def test_known_ids(gpt2):
    assert gpt2.encode("Hello, I am") == [15496, 11, 314, 716]
    assert gpt2.encode("Akwirw ier") == [33901, 86, 343, 86, 220, 959]
    assert gpt2.decode([33901, 86, 343, 86, 220, 959]) == "Akwirw ier"


def test_lone_surrogate_becomes_replacement_character(gpt2, tiktoken_gpt2):
    assert gpt2.encode("a\ud800b") == tiktoken_gpt2.encode("a\ud800b") == gpt2.encode("a\ufffdb")


def test_trained_tokenizer(verdict):
    tok = BPETokenizer.train(verdict, vocab_size=1000)
    assert tok.n_vocab == 1000
    assert len(tok.merges) == 1000 - 256 - 1 and tok.special_tokens == {EOT: 999}
    assert tok.vocab[256] == b" t"  # the most frequent pair in English text
    ids = tok.encode(verdict)
    assert tok.decode(ids) == verdict
    assert len(ids) < len(verdict.encode("utf-8")) / 2  # merges compress the text
    for text in TRICKY:  # bytes never seen in training still encode, as single-byte tokens
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode(EOT, allowed_special="all") == [999]


def test_training_is_deterministic(verdict):
    a = BPETokenizer.train(verdict[:3000], vocab_size=300)
    b = BPETokenizer.train(verdict[:3000], vocab_size=300)
    assert a.merges == b.merges and a.n_vocab == 300


def test_training_stops_when_nothing_is_left_to_merge():
    tok = BPETokenizer.train("ab ab", vocab_size=1000)
    assert [tok.vocab[i] for i in range(256, 258)] == [b"ab", b" ab"]
    assert tok.n_vocab == 259  # 256 bytes, 2 merges, <|endoftext|>
    assert tok.encode("ab ab ba") == [256, 257, 32, 98, 97]


def test_training_never_merges_across_special_tokens():
    tok = BPETokenizer.train(f"xy{EOT}xy{EOT}xy", vocab_size=300)
    assert all(b"<|" not in t for t in tok.vocab.values())


def test_inconsistent_merges_are_rejected():
    vocab = {i: bytes([i]) for i in range(256)}
    vocab[256] = b"ab"
    with pytest.raises(ValueError):
        BPETokenizer(vocab, [(ord("a"), ord("c"))])
