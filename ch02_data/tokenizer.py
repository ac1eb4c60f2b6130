"""A word-level tokenizer for teaching: split on a regular expression, look words up in a vocabulary.

It shows the two problems a real tokenizer must solve: words missing from the vocabulary (here
they all become `<|unk|>`, losing information) and document boundaries (`<|endoftext|>`).
Byte-pair encoding (`bpe.py`) solves the first one properly.
"""

from __future__ import annotations

import re

UNK = "<|unk|>"
ENDOFTEXT = "<|endoftext|>"

# A special token such as <|endoftext|> stays whole; otherwise split off punctuation, the
# double dash and whitespace, keeping them (the capturing group) so punctuation becomes tokens.
_SPLIT = re.compile(r'(<\|[^|\s]+\|>|--|[,.:;?_!"()\']|\s)')

_NO_SPACE_BEFORE = {",", ".", ":", ";", "?", "!", ")", "'", "--"}  # attach to the previous token
_NO_SPACE_AFTER = {"(", "'", "--"}  # attach to the next token


def tokenize(text: str) -> list[str]:
    """Split `text` into words and punctuation marks; whitespace is dropped.

    >>> tokenize("Hello, world. Is this-- a test?")
    ['Hello', ',', 'world', '.', 'Is', 'this', '--', 'a', 'test', '?']
    """
    return [tok for tok in (t.strip() for t in _SPLIT.split(text)) if tok]


def build_vocab(text: str, special_tokens: tuple[str, ...] = (ENDOFTEXT, UNK)) -> dict[str, int]:
    """Map every distinct token of `text`, sorted, to an id; the special tokens come last."""
    words = sorted(set(tokenize(text)) - set(special_tokens))
    return {tok: i for i, tok in enumerate([*words, *special_tokens])}


class UnknownWordError(KeyError, ValueError):
    """A word missing from a vocabulary that has no `<|unk|>`.

    A KeyError (a failed look-up, as the notebook shows) and a ValueError (bad input), so
    either `except` catches it.
    """


class SimpleTokenizer:
    """Encode text to ids with a fixed word vocabulary, and decode ids back to text.

    Words missing from the vocabulary become `<|unk|>` when the vocabulary has that token;
    without it they raise UnknownWordError, a KeyError (the problem `<|unk|>` was added to solve).
    """

    def __init__(self, vocab: dict[str, int]):
        self.str_to_int = dict(vocab)
        self.int_to_str = {i: s for s, i in vocab.items()}

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; unknown words map to the id of `<|unk|>`."""
        tokens = tokenize(text)
        if UNK in self.str_to_int:
            tokens = [tok if tok in self.str_to_int else UNK for tok in tokens]
        missing = [tok for tok in tokens if tok not in self.str_to_int]
        if missing:
            raise UnknownWordError(f"not in the vocabulary: {missing[:5]} (add {UNK!r} to map them)")
        return [self.str_to_int[tok] for tok in tokens]

    def decode(self, ids: list[int]) -> str:
        """Join the tokens of `ids` with spaces, except around punctuation.

        Commas, full stops and the like attach to the word before them, apostrophes and
        double dashes to both neighbours, and a straight double quote alternately opens
        (attaching to the next word) and closes (attaching to the previous one).
        The original whitespace is gone, so only single spaces come back.
        """
        out: list[str] = []
        glue_next = True  # no space before the very first token
        quote_open = False
        for k, i in enumerate(ids):
            tok = self.int_to_str.get(i)
            if tok is None:
                raise ValueError(
                    f"ids[{k}]={i!r} is not in the vocabulary; its ids run from "
                    f"{min(self.int_to_str)} to {max(self.int_to_str)}"
                )
            if tok == '"':
                glue_prev, quote_open = quote_open, not quote_open
                glue_after = quote_open  # an opening quote sticks to the word after it
            else:
                glue_prev = tok in _NO_SPACE_BEFORE
                glue_after = tok in _NO_SPACE_AFTER
            if not (glue_next or glue_prev):
                out.append(" ")
            out.append(tok)
            glue_next = glue_after
        return "".join(out)
