"""The teacher's predictions, computed once and stored on disk for the student to stream.

Logit distillation needs the teacher's next-token distribution at every position of the training
text. Running a large teacher beside the student at every step doubles the memory and most of the
compute; instead we run the teacher *once* over the corpus and keep, for every position, only
its k most likely next tokens (or k tokens sampled from it) and their log-probabilities:

    file = header (4,096 bytes: a magic line and JSON, padded with spaces)
         + ids       uint16  (n_positions, k)   GPT-2's 50,257 ids fit in 16 bits
         + logprobs  float16 (n_positions, k)

so a position costs 4·k bytes, against 4·50,257 = 201 kB for a full fp32 distribution. The
arrays are read through `numpy.memmap`: the operating system pages in only the rows a batch
touches, so a file larger than memory streams as well as a small one.

Positions follow the token stream: the corpus is cut into windows of `context_length` tokens
that touch but do not overlap (as `GPTDataset` does with stride = context_length), the teacher
reads each window, and row i of the file is its prediction for token i + 1 given the tokens of
i's window up to i. The student, trained on the same windows, sees the same contexts.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm  # plain text bar: works in terminals, notebooks and CI logs

from ch02_data.checks import finite_number, is_int, positive_int

MAGIC = b"GPT-DISTILL-TARGETS v1\n"
HEADER_BYTES = 4096
FORMAT_NOTE = "ids uint16 (n_positions, k), then logprobs float16 (n_positions, k), row-major"
PAD_LOGPROB = -65504.0  # float16's most negative finite value: an empty slot (sampled files)


def as_token_tensor(token_ids) -> torch.Tensor:
    """A 1-D int64 CPU tensor of token ids, from a list, numpy array or tensor."""
    ids = torch.as_tensor(np.asarray(token_ids) if not torch.is_tensor(token_ids) else token_ids)
    if ids.dim() != 1 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"token_ids has shape {tuple(ids.shape)} and dtype {ids.dtype}; "
                         "use a 1-D sequence of integer token ids")
    return ids.to(torch.int64).cpu()


def corpus_fingerprint(token_ids) -> str:
    """sha256 of the token ids (as int64 bytes), shortened: names the exact corpus a file is for."""
    ids = as_token_tensor(token_ids)
    return hashlib.sha256(ids.numpy().tobytes()).hexdigest()[:16]


def teacher_identity(model: nn.Module, name: str | None = None) -> dict:
    """Who made the targets: a name, the configuration and a fingerprint of the weights."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().flatten()[:1024].float().cpu().numpy().tobytes())  # a sample
    cfg = getattr(model, "cfg", None)
    config = cfg.to_dict() if hasattr(cfg, "to_dict") else None
    return {"name": name or type(model).__name__, "config": config,
            "weights_sha256": digest.hexdigest()[:16]}


def n_positions_for(n_tokens: int, context_length: int) -> int:
    """Positions covered by whole windows: a window needs context_length + 1 tokens (inputs and
    the last target), and the windows start every context_length tokens."""
    n_windows = max(0, (n_tokens - 1) // context_length)
    return n_windows * context_length


def _write_header(f, header: dict) -> None:
    text = json.dumps(header, sort_keys=True).encode()
    if len(MAGIC) + len(text) + 1 > HEADER_BYTES:
        raise ValueError(f"the header is {len(text)} bytes of JSON; at most "
                         f"{HEADER_BYTES - len(MAGIC) - 1} fit (shorten teacher_name)")
    f.write(MAGIC + text + b"\n" + b" " * (HEADER_BYTES - len(MAGIC) - len(text) - 1))


def read_header(path: str | os.PathLike) -> dict:
    """The JSON header of a targets file; ValueError if the file is not one of ours."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(HEADER_BYTES)
    if not head.startswith(MAGIC) or len(head) < HEADER_BYTES:
        raise ValueError(f"{path} is not a teacher-targets file (no {MAGIC[:-1].decode()!r} "
                         "header); make one with precompute_teacher")
    try:
        header = json.loads(head[len(MAGIC):].decode().strip())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}'s header is not valid JSON ({e}); the file was edited or "
                         "damaged: run precompute_teacher again") from None
    _check_layout(path, header)
    return header


def _check_layout(path: Path, h: dict) -> None:
    """Refuse a header whose fields disagree with each other (a hand edit): the arrays would
    otherwise be read with the wrong shape, even when the file has the size the header implies."""
    try:
        k, n, n_tokens, context = (h[key] for key in ("k", "n_positions", "n_tokens",
                                                       "context_length"))
        consistent = (all(is_int(v) and v >= 1 for v in (k, n, n_tokens, context))
                      and h["format"] == FORMAT_NOTE and h["ids_dtype"] == "uint16"
                      and h["values_dtype"] == "float16" and h["bytes_per_position"] == 4 * k
                      and n == n_positions_for(n_tokens, context) and k <= h["vocab_size"])
    except (KeyError, TypeError):
        consistent = False
    if not consistent:
        raise ValueError(f"{path}'s header does not describe a layout precompute_teacher writes "
                         "(k, n_positions, n_tokens, context_length, bytes_per_position or the "
                         "dtypes disagree): it was edited or damaged; run precompute_teacher again")


def _sample_rows(logprobs: torch.Tensor, k: int, temperature: float,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """k draws (with replacement) from each row's softmax(logprobs / temperature), merged into
    (ids, log of the draw frequency); ids that came up several times fill one slot, the spare
    slots get id 0 and PAD_LOGPROB (weight 0)."""
    probs = torch.softmax(logprobs / temperature, dim=-1)  # (N, V)
    draws = torch.multinomial(probs, k, replacement=True, generator=generator)  # (N, k)
    draws, _ = draws.sort(dim=-1)
    # A slot keeps the count of its id if it is the first of a run of equal ids, else 0.
    first = torch.ones_like(draws, dtype=torch.bool)
    first[:, 1:] = draws[:, 1:] != draws[:, :-1]
    counts = torch.zeros_like(draws, dtype=torch.float32).scatter_add_(
        1, torch.cumsum(first, dim=1) - 1, torch.ones_like(draws, dtype=torch.float32))
    ids = torch.zeros_like(draws)
    n_unique = first.sum(dim=1, keepdim=True)
    ids.scatter_(1, torch.cumsum(first, dim=1) - 1, draws)  # unique ids to the front
    slot = torch.arange(k).expand_as(draws)
    ids = ids.masked_fill(slot >= n_unique, 0)
    weights = counts / k
    logw = torch.where(slot < n_unique, weights.clamp_min(1e-30).log(),
                       torch.full_like(weights, PAD_LOGPROB))
    return ids, logw


@torch.no_grad()
def precompute_teacher(
    model: nn.Module,
    token_ids: Sequence[int] | torch.Tensor,
    path: str | os.PathLike,
    k: int,
    context_length: int,
    batch_size: int,
    sampled: bool = False,
    temperature: float = 1.0,
    teacher_name: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Run `model` once over `token_ids` and store its next-token predictions at `path`.

    Args:
        model: the teacher, mapping ids (B, T) to logits (B, T, V); run in eval mode without
            gradients, on the device its parameters are on.
        token_ids: the corpus as one stream of token ids.
        path: the file to write; written to a temporary name and renamed when complete, so an
            interrupted run never leaves a file that looks finished.
        k: slots per position. Top-k (default): the k most likely next tokens and their
            log-probabilities, most likely first. `sampled=True`: k draws from the teacher's
            distribution at `temperature`, stored as unique ids and log(frequency), an unbiased
            estimate of that distribution.
        context_length: tokens per window; the student must train on the same windows.
        batch_size: windows per teacher forward pass.
        teacher_name: recorded in the header (default: the model's class name).
        seed: the sampling seed (sampled files only).
    Returns:
        The header written, including bytes per position and the file's size.
    """
    k = positive_int("k", k, "the predictions stored per position")
    context_length = positive_int("context_length", context_length, "tokens per teacher window")
    batch_size = positive_int("batch_size", batch_size, "windows per forward pass")
    finite_number("temperature", temperature, 0, above=True)
    ids = as_token_tensor(token_ids)
    vocab_size = int(getattr(getattr(model, "cfg", None), "vocab_size", 0)) or None
    if vocab_size is None:
        raise ValueError("model has no cfg.vocab_size; use a ch04_gpt.GPTModel (or any model "
                         "with cfg.vocab_size)")
    if vocab_size > 2 ** 16:
        raise ValueError(f"the teacher's vocabulary has {vocab_size} tokens; uint16 ids hold at "
                         f"most {2 ** 16}")
    if k > vocab_size:
        raise ValueError(f"k={k}; use at most the vocabulary size, {vocab_size}")
    n_positions = n_positions_for(len(ids), context_length)
    if n_positions == 0:
        raise ValueError(f"token_ids has {len(ids)} tokens; one window needs context_length + 1 "
                         f"= {context_length + 1}")
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"path={str(path)!r}: the folder {str(path.parent)!r} does not exist; "
                         "create it first")
    if path.is_dir():  # the rename at the end would fail and discard the whole pass
        raise ValueError(f"path={str(path)!r} is a folder; give the file to write, such as "
                         f"{str(path / 'teacher_targets.bin')!r}")
    if path.exists() and not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        raise ValueError(f"path={str(path)!r} cannot be written (no permission); choose another "
                         "file")

    header = {
        "format": FORMAT_NOTE, "k": k, "vocab_size": vocab_size, "values_dtype": "float16",
        "ids_dtype": "uint16", "n_tokens": len(ids), "n_positions": n_positions,
        "context_length": context_length, "corpus_sha256": corpus_fingerprint(ids),
        "sampled": bool(sampled), "temperature": float(temperature) if sampled else 1.0,
        "seed": int(seed) if sampled else None,
        "teacher": teacher_identity(model, teacher_name),
        "bytes_per_position": 4 * k,
    }
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    windows = ids[: n_positions + 1]
    starts = range(0, n_positions, context_length)
    tmp = path.with_name(path.name + ".partial")
    was_training = model.training
    model.eval()
    try:
        with open(tmp, "wb") as f:
            _write_header(f, header)
        out_ids = np.memmap(tmp, dtype=np.uint16, mode="r+", offset=HEADER_BYTES,
                            shape=(n_positions, k))
        out_lp = np.memmap(tmp, dtype=np.float16, mode="r+",
                           offset=HEADER_BYTES + 2 * n_positions * k, shape=(n_positions, k))
        bar = tqdm(total=n_positions, unit="tok", desc=f"teacher {'sampled' if sampled else 'top'}"
                   f"-{k}", disable=not progress)
        for b in range(0, len(starts), batch_size):
            batch_starts = starts[b: b + batch_size]
            x = torch.stack([windows[s: s + context_length] for s in batch_starts]).to(device)
            logprobs = torch.log_softmax(model(x).float(), dim=-1).flatten(0, 1).cpu()  # (n, V)
            if sampled:
                top_ids, top_lp = _sample_rows(logprobs, k, temperature, generator)
            else:
                top_lp, top_ids = logprobs.topk(k, dim=-1)  # sorted, most likely first
            rows = slice(batch_starts[0], batch_starts[-1] + context_length)
            out_ids[rows] = top_ids.numpy().astype(np.uint16)
            out_lp[rows] = top_lp.clamp_min(PAD_LOGPROB).numpy().astype(np.float16)
            bar.update(x.numel())
        bar.close()
        out_ids.flush()
        out_lp.flush()
        del out_ids, out_lp
        os.replace(tmp, path)
    finally:
        model.train(was_training)
        if tmp.exists():
            tmp.unlink()
    header["file_bytes"] = path.stat().st_size
    return header


class TeacherTargets:
    """A targets file opened memory-mapped: `targets[i]` is position i's `(ids, logprobs)`.

    Item i holds the teacher's prediction for token i + 1 of the corpus: k int64 ids and k
    float32 log-probabilities (top-k files: the teacher's log p at temperature 1, most likely
    first; sampled files: log of each id's share of the k draws). Slicing a window of rows is
    cheap: `window(start, length)`.

    `k` (optional) uses only the first k slots of a top-K file: the top-k for any k <= K, as a
    file written for k would hold them (sorted, most likely first), so one teacher pass serves
    every k. The file is refused, before anything is read, if it is truncated or not one of
    ours; and `check_corpus(token_ids)` refuses a corpus other than the one it was made from.
    """

    def __init__(self, path: str | os.PathLike, k: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"path={str(self.path)!r}: no such targets file; make it with "
                                    "precompute_teacher")
        self.header = read_header(self.path)
        h = self.header
        self.stored_k, self.n_positions = int(h["k"]), int(h["n_positions"])
        self.vocab_size, self.context_length = int(h["vocab_size"]), int(h["context_length"])
        self.sampled, self.temperature = bool(h["sampled"]), float(h["temperature"])
        expected = HEADER_BYTES + 4 * self.n_positions * self.stored_k
        actual = self.path.stat().st_size
        if actual != expected:
            raise ValueError(
                f"{self.path} is {actual:,} bytes but its header (k={self.stored_k}, "
                f"{self.n_positions:,} positions) needs {expected:,}: the file is truncated or "
                "damaged; run precompute_teacher again")
        self.k = self.stored_k if k is None else positive_int("k", k, "the slots to use per position")
        if self.k > self.stored_k:
            raise ValueError(f"k={k}; {self.path.name} stores {self.stored_k} per position, so use "
                             f"at most {self.stored_k}")
        if self.sampled and self.k != self.stored_k:
            raise ValueError(f"k={k}; {self.path.name} holds draws, whose slots are not ranked, so "
                             f"only all {self.stored_k} can be used")
        shape = (self.n_positions, self.stored_k)
        self._expected_bytes = expected
        self._file = open(self.path, "rb")  # the maps read this file, even if the path is replaced
        self.ids = np.memmap(self._file, dtype=np.uint16, mode="r", offset=HEADER_BYTES,
                             shape=shape)[:, : self.k]
        self.logprobs = np.memmap(self._file, dtype=np.float16, mode="r",
                                  offset=HEADER_BYTES + 2 * self.n_positions * self.stored_k,
                                  shape=shape)[:, : self.k]

    def _check_still_whole(self) -> None:
        """Refuse to read when the file was truncated since it was opened: reading a mapped page
        past its new end would kill the process (SIGBUS) instead of raising."""
        size = os.fstat(self._file.fileno()).st_size
        if size < self._expected_bytes:
            raise ValueError(f"{self.path} shrank to {size:,} bytes (of {self._expected_bytes:,}) "
                             "while it was open; it was truncated or is being rewritten: run "
                             "precompute_teacher again and reopen it")

    @property
    def bytes_per_position(self) -> int:
        """What a file written for this k stores per position: a uint16 id and an fp16 value."""
        return 4 * self.k

    def __len__(self) -> int:
        return self.n_positions

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not is_int(i) or not -self.n_positions <= i < self.n_positions:
            raise IndexError(f"position {i!r} is outside 0..{self.n_positions - 1}")
        self._check_still_whole()
        return (torch.from_numpy(self.ids[i].astype(np.int64)),
                torch.from_numpy(self.logprobs[i].astype(np.float32)))

    def __iter__(self):
        for i in range(self.n_positions):
            yield self[i]

    def window(self, start: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows start .. start + length - 1 as (ids (length, k) int64, logprobs (length, k) fp32)."""
        if start < 0 or start + length > self.n_positions:
            raise IndexError(f"rows {start}..{start + length - 1} are outside "
                             f"0..{self.n_positions - 1}")
        rows = slice(start, start + length)
        self._check_still_whole()
        return (torch.from_numpy(self.ids[rows].astype(np.int64)),
                torch.from_numpy(self.logprobs[rows].astype(np.float32)))

    def check_corpus(self, token_ids) -> None:
        """Refuse (ValueError) a corpus other than the one the file was computed from."""
        ids = as_token_tensor(token_ids)
        made_for = f"{self.header['n_tokens']:,} tokens, sha256 {self.header['corpus_sha256']}"
        given = f"{len(ids):,} tokens, sha256 {corpus_fingerprint(ids)}"
        if made_for != given:
            raise ValueError(f"{self.path.name} was computed for a corpus of {made_for}, but the "
                             f"corpus given has {given}; run precompute_teacher on this corpus")

    def describe(self) -> str:
        t = self.header["teacher"]
        kind = (f"{self.k} samples at T={self.temperature:g}" if self.sampled
                else f"top-{self.k}" + (f" (of {self.stored_k} stored)" if self.k < self.stored_k else ""))
        return (f"{self.path.name}: {kind} from {t['name']} over {self.n_positions:,} positions, "
                f"{self.bytes_per_position} bytes per position, "
                f"{(HEADER_BYTES + self.n_positions * self.bytes_per_position) / 1e6:.2f} MB as its own file")
