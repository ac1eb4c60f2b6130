"""Byte-level byte-pair encoding (BPE), written from scratch, as GPT-2 uses it.

Text is turned into UTF-8 bytes, so every string can be encoded and no word is ever unknown.
A BPE vocabulary starts with the 256 single bytes; training then repeatedly merges the most
frequent adjacent pair of tokens into a new token (Sennrich et al. 2016, "Neural Machine
Translation of Rare Words with Subword Units"; byte-level as in Radford et al. 2019, GPT-2).

Encoding applies the learned merges to each pre-tokenized chunk of text, earliest-learned
first. Because a merged token's id is 256 + the index of its merge, "earliest learned" means
"lowest id": the rule tiktoken uses, and the reason `BPETokenizer.from_gpt2_files` produces
exactly tiktoken's "gpt2" ids.
"""

from __future__ import annotations

import heapq
import json
import operator
import os
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable
from typing import Literal

import regex  # the `regex` package: `re` has no \p{L} (letter) or \p{N} (number) classes

from .checks import int_at_least

# GPT-2's pre-tokenizer (openai/gpt-2, src/encoder.py): English contractions, then runs of
# letters, of digits, or of other symbols, each with at most one leading space, then
# whitespace. "\s+(?!\S)" leaves the last space of a run to start the next word.
# Contractions are case-sensitive: "'S" is not special, as in GPT-2.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
ENDOFTEXT = "<|endoftext|>"

_MAX_RANK = 1 << 62  # "no such token": larger than any id
_CACHE_SIZE = 100_000  # chunks remembered by encode before the cache is emptied
_CACHE_MAX_LEN = 100  # longer chunks are rare and not remembered: they would only fill memory


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character, used to store tokens in its files.

    Printable Latin-1 bytes map to themselves; the other 68 (control bytes, space, ...) map to
    the characters from U+0100 on, in byte order. So the space byte 0x20 becomes "Ġ" (U+0120)
    and newline 0x0A becomes "Ċ" (U+010A): "Ġthe" in vocab.bpe is the token b" the".
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + n)
            n += 1
    return mapping


def _merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of `pair` in `ids`, left to right, by `new_id`."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


class BPETokenizer:
    """A byte-level BPE tokenizer with tiktoken's `encode`/`decode` interface.

    vocab:          id -> the bytes of that token; ids 0..255 are the single bytes (any order).
    merges:         the learned merges in order; merge i joins tokens (a, b) into token 256 + i.
    special_tokens: text such as "<|endoftext|>" -> its id; never produced by merging.
    Build one with `BPETokenizer.train(text, vocab_size)` or `BPETokenizer.from_gpt2_files(...)`.
    """

    def __init__(
        self,
        vocab: dict[int, bytes],
        merges: list[tuple[int, int]],
        special_tokens: dict[str, int] | None = None,
        pattern: str = GPT2_PATTERN,
    ):
        self.vocab = dict(vocab)
        self.merges = list(merges)
        self.special_tokens = dict(special_tokens or {})
        self.pattern = pattern
        # The encoding rule relies on this layout (256 bytes, then one new token per merge).
        if sorted(len(self.vocab[i]) for i in range(256)) != [1] * 256:
            raise ValueError("ids 0..255 must be the 256 single bytes")
        for i, (a, b) in enumerate(self.merges):
            if self.vocab.get(256 + i) != self.vocab[a] + self.vocab[b]:
                raise ValueError(f"merge {i} {(a, b)} does not produce token {256 + i}")
        self._ranks = {tok: i for i, tok in self.vocab.items()}  # bytes -> id, lower = earlier
        if len(self._ranks) != len(self.vocab):
            raise ValueError("two ids share the same bytes")
        self._regex = regex.compile(pattern)
        self._decoder = {**self.vocab, **{i: s.encode("utf-8") for s, i in self.special_tokens.items()}}
        self._cache: dict[str, list[int]] = {}

    @property
    def n_vocab(self) -> int:
        """Number of token ids, special tokens included (50257 for GPT-2)."""
        return max(self._decoder) + 1

    @property
    def special_tokens_set(self) -> set[str]:
        return set(self.special_tokens)

    # ---------------------------------------------------------------- building a vocabulary

    @classmethod
    def train(
        cls, text: str, vocab_size: int, special_tokens: Iterable[str] = (ENDOFTEXT,)
    ) -> BPETokenizer:
        """Learn merges from `text` until the vocabulary has `vocab_size` ids, specials included.

        Pairs are counted inside pre-tokenized chunks only, so no token spans two words.
        Each distinct chunk is stored once with its frequency, and after a merge only the
        chunks that held the merged pair are updated. Ties in frequency go to the pair with
        the smallest ids, so training is deterministic. Training stops early, with a smaller
        vocabulary, if no pair is left to merge.
        """
        if not isinstance(text, str):
            raise ValueError(f"text is a {type(text).__name__}; train on a str")
        if isinstance(special_tokens, str):  # would be read as one special token per character
            raise ValueError(f"special_tokens={special_tokens!r} is one str; give a list of them, "
                             f"e.g. [{special_tokens!r}]")
        special_tokens = list(special_tokens)
        for token in special_tokens:
            if not isinstance(token, str) or not token:
                raise ValueError(f"special_tokens holds {token!r}; each special token must be a "
                                 "non-empty str, such as '<|endoftext|>'")
        repeated = sorted({t for t in special_tokens if special_tokens.count(t) > 1})
        if repeated:
            raise ValueError(f"special_tokens lists {repeated} more than once; give each special "
                             "token once (each gets one id)")
        smallest = 256 + len(special_tokens)  # the single bytes and the special tokens
        vocab_size = int_at_least("vocab_size", vocab_size, smallest,
                                  f"256 bytes + {len(special_tokens)} special tokens")
        n_merges = vocab_size - smallest
        pattern = regex.compile(GPT2_PATTERN)
        segments = regex.split("|".join(map(regex.escape, special_tokens)), text) if special_tokens else [text]
        chunk_freq = Counter(chunk for seg in segments for chunk in pattern.findall(seg))

        words = [list(chunk.encode("utf-8")) for chunk in chunk_freq]  # each distinct chunk, as ids
        freqs = list(chunk_freq.values())
        pair_freq: Counter[tuple[int, int]] = Counter()  # pair -> occurrences in the whole text
        where: defaultdict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> words holding it
        for w, (word, f) in enumerate(zip(words, freqs)):
            for pair in zip(word, word[1:]):
                pair_freq[pair] += f
                where[pair].add(w)

        vocab = {i: bytes([i]) for i in range(256)}
        known = set(vocab.values())
        merges: list[tuple[int, int]] = []
        while len(merges) < n_merges and pair_freq:
            pair = max(pair_freq, key=lambda p: (pair_freq[p], -p[0], -p[1]))
            new_token = vocab[pair[0]] + vocab[pair[1]]
            if new_token in known:  # same bytes as an existing token (rare): keep ids one-to-one
                del pair_freq[pair]
                continue
            new_id = 256 + len(merges)
            merges.append(pair)
            vocab[new_id] = new_token
            known.add(new_token)
            touched = set()
            for w in where.pop(pair):
                word, f = words[w], freqs[w]
                for p in zip(word, word[1:]):  # forget this word's old pairs ...
                    pair_freq[p] -= f
                    touched.add(p)
                word = words[w] = _merge_pair(word, pair, new_id)
                for p in zip(word, word[1:]):  # ... and count its new ones
                    pair_freq[p] += f
                    where[p].add(w)
            for p in touched:  # pairs that no longer occur leave the candidates
                if pair_freq[p] <= 0:
                    del pair_freq[p]
        specials = {s: 256 + len(merges) + i for i, s in enumerate(special_tokens)}
        return cls(vocab, merges, specials)

    @classmethod
    def from_gpt2_files(cls, encoder_json_path: str | os.PathLike, vocab_bpe_path: str | os.PathLike) -> BPETokenizer:
        """Load OpenAI's GPT-2 vocabulary: encoder.json (token -> id) and vocab.bpe (50,000 merges).

        Both files write bytes through `bytes_to_unicode`; they are translated back here.
        """
        byte_of = {c: b for b, c in bytes_to_unicode().items()}

        def to_bytes(token: str) -> bytes:
            return bytes(byte_of[c] for c in token)

        swapped = ("the paths look swapped; call from_gpt2_files(encoder_json_path, "
                   "vocab_bpe_path), encoder.json first")
        with open(encoder_json_path, encoding="utf-8") as f:
            text = f.read()
        if text.startswith("#version"):
            raise ValueError(f"encoder_json_path={str(encoder_json_path)!r} holds GPT-2's merges "
                             f"(vocab.bpe), not its vocabulary; {swapped}")
        try:
            encoder = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"encoder_json_path={str(encoder_json_path)!r} is not JSON ({e}); "
                             "give GPT-2's encoder.json") from None
        if not isinstance(encoder, dict):
            raise ValueError(f"encoder_json_path={str(encoder_json_path)!r} holds a "
                             f"{type(encoder).__name__}, not GPT-2's token -> id dict")
        specials = {s: encoder.pop(s) for s in (ENDOFTEXT, "<|startoftext|>") if s in encoder}
        vocab = {i: to_bytes(tok) for tok, i in encoder.items()}

        with open(vocab_bpe_path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        if not lines[0].startswith("#version"):
            hint = f"; {swapped}" if lines[0].startswith("{") else ""
            raise ValueError(f"{vocab_bpe_path} does not look like GPT-2's vocab.bpe{hint}")
        merges = [(encoder[a], encoder[b]) for a, b in (line.split() for line in lines[1:] if line)]
        return cls(vocab, merges, specials)

    # ---------------------------------------------------------------- encoding and decoding

    def _bpe(self, piece: bytes) -> list[int]:
        """Ids of one pre-tokenized chunk: merge adjacent parts, lowest rank first, until none fits.

        The rule is the notebook's `encode_chunk`: join the adjacent pair whose joined bytes
        have the lowest id (the leftmost of equal ids), repeat. Searching all pairs for the
        minimum after every merge would cost O(n^2) for a chunk of n bytes ("a" * 100_000 took
        minutes), so the parts form a linked list and the candidate pairs wait in a heap keyed
        by (rank, position): O(n log n). A merge changes only the two pairs touching the new
        part; their old heap entries stay and are skipped when popped ("lazy deletion").
        """
        ranks = self._ranks
        if piece in ranks:  # the whole chunk is one token (tiktoken takes this shortcut too)
            return [ranks[piece]]
        n = len(piece)
        # Part s covers piece[s:nxt[s]]; parts are named by their first byte. Start with one
        # part per byte. prv[s] is the part before part s.
        nxt = list(range(1, n + 1))
        prv = list(range(-1, n - 1))
        # pair_rank[s] = rank of part s joined with the part after it (_MAX_RANK if that is not
        # a token, or part s is last); -1 once part s has been swallowed by its left neighbour.
        pair_rank = [ranks.get(piece[s : s + 2], _MAX_RANK) for s in range(n - 1)] + [_MAX_RANK]
        # A heap entry is the int rank * n + s: ordered by rank, then by position, so the
        # smallest entry is the lowest rank and, among equal ranks, the leftmost pair.
        heap = [r * n + s for s, r in enumerate(pair_rank) if r != _MAX_RANK]
        heapq.heapify(heap)
        while heap:
            rank, s = divmod(heapq.heappop(heap), n)
            if pair_rank[s] != rank:  # stale: part s was swallowed or its pair changed
                continue
            right = nxt[s]
            end = nxt[right]
            nxt[s] = end  # part s swallows the part to its right
            pair_rank[right] = -1
            if end < n:
                prv[end] = s
                r = pair_rank[s] = ranks.get(piece[s : nxt[end]], _MAX_RANK)
                if r != _MAX_RANK:
                    heapq.heappush(heap, r * n + s)
            else:
                pair_rank[s] = _MAX_RANK
            left = prv[s]
            if left >= 0:
                r = pair_rank[left] = ranks.get(piece[left:end], _MAX_RANK)
                if r != _MAX_RANK:
                    heapq.heappush(heap, r * n + left)
        ids, s = [], 0
        while s < n:
            ids.append(ranks[piece[s : nxt[s]]])
            s = nxt[s]
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of `text`, treating special-token text as ordinary text."""
        ids: list[int] = []
        for chunk in self._regex.findall(text):
            cached = self._cache.get(chunk)
            if cached is None:
                cached = self._bpe(chunk.encode("utf-8"))
                if len(chunk) <= _CACHE_MAX_LEN:
                    if len(self._cache) >= _CACHE_SIZE:
                        self._cache.clear()
                    self._cache[chunk] = cached
            ids.extend(cached)
        return ids

    def encode(
        self,
        text: str,
        *,
        allowed_special: Literal["all"] | Collection[str] = frozenset(),
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> list[int]:
        """Token ids of `text`, with tiktoken's rules for special tokens.

        By default text that spells a special token raises ValueError, as in tiktoken (a
        document could otherwise inject "<|endoftext|>"). `allowed_special={"<|endoftext|>"}`
        or `"all"` encodes it as its special id (50256 in GPT-2); `disallowed_special=()`
        encodes it as plain text.
        """
        if not isinstance(text, str):  # bytes or None would fail below with a puzzling message
            raise TypeError(f"text is a {type(text).__name__}; encode takes a str")
        if allowed_special == "all":
            allowed_special = self.special_tokens_set
        if disallowed_special == "all":
            disallowed_special = self.special_tokens_set - set(allowed_special)
        for token in disallowed_special:
            if token in text:
                raise ValueError(
                    f"Encountered text corresponding to disallowed special token {token!r}. "
                    f"Pass allowed_special={{{token!r}}} to encode it as a special token, "
                    "or disallowed_special=() to encode it as normal text."
                )
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: replace them with U+FFFD, as tiktoken does
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")

        allowed = sorted((s for s in allowed_special if s in self.special_tokens), key=len, reverse=True)
        if not allowed:
            return self.encode_ordinary(text)
        ids: list[int] = []
        # The capturing group keeps the special tokens: odd items are specials, even items text.
        for k, part in enumerate(regex.split("(" + "|".join(map(regex.escape, allowed)) + ")", text)):
            if k % 2:
                ids.append(self.special_tokens[part])
            else:
                ids.extend(self.encode_ordinary(part))
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes of `ids` joined together; `ids` may also be a 1-D integer tensor."""
        ids = list(ids)
        decoder = self._decoder
        try:
            return b"".join([decoder[i] for i in ids])
        except (KeyError, TypeError):  # not all plain ints of this vocabulary: look at each one
            return b"".join([decoder[self._token_id(i, k)] for k, i in enumerate(ids)])

    def _token_id(self, i: object, k: int) -> int:
        """`i`, the k-th id given to decode, as an int of this vocabulary, else a ValueError."""
        try:
            i = operator.index(i)  # ints, numpy ints and one-element integer tensors
        except TypeError:
            pass
        if not isinstance(i, int) or i not in self._decoder:
            raise ValueError(f"ids[{k}]={i!r} is not a token id; use ints from 0 to {self.n_vocab - 1}")
        return i

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """Text of `ids`; a cut-off UTF-8 character becomes U+FFFD, as in tiktoken."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    def __repr__(self) -> str:
        return f"BPETokenizer(n_vocab={self.n_vocab}, merges={len(self.merges)}, special_tokens={self.special_tokens})"
