"""The SMS Spam Collection: download, read, balance, split, and batch it for a classifier.

The data set (Almeida & Gómez Hidalgo, 2011) is one text file, `SMSSpamCollection`: 5,574 lines
of `ham` or `spam`, a TAB, then the message. It is published inside a zip whose bytes differ from
copy to copy, so the sha256 pinned here is that of the extracted file, not of the zip.

Messages contain quote characters, so a CSV reader with default quoting joins some lines into one
message (`read_sms_naively` shows it); `read_sms_file` splits each line at its TAB instead.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from ch02_data import EOT_ID, DownloadError, data_dir, download, gpt2_encoding, seeded_loader
from ch02_data.checks import is_int, positive_int

SMS_NAME = "SMSSpamCollection"  # the file, and its member name inside the zip
SMS_ZIP_NAME = "sms+spam+collection.zip"
# sha256 of the extracted file (the same in every copy of the zip found; the zips differ).
SMS_SHA256 = "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"
SMS_URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
# The book's fallback copy, for when UCI's site is down; its member is verified the same way.
SMS_FALLBACK_URL = (
    "https://f001.backblazeb2.com/file/LLMs-from-scratch/sms%2Bspam%2Bcollection.zip"
)

LABELS = ("ham", "spam")  # class ids 0 and 1


# --- Download ---------------------------------------------------------------------------------


def _extract_sms(archive: Path, out: Path) -> None:
    """`download`'s unpack step: write the zip's member `SMSSpamCollection` to `out`."""
    try:
        with zipfile.ZipFile(archive) as zf:
            if SMS_NAME not in zf.namelist():
                raise DownloadError(f"the zip has no member {SMS_NAME!r} (it holds {zf.namelist()})")
            with zf.open(SMS_NAME) as member, open(out, "wb") as f:
                shutil.copyfileobj(member, f)
    except zipfile.BadZipFile as e:  # an HTML error page, a truncated file, a bad CRC
        raise DownloadError(f"not a readable zip ({e})") from None


def sms_spam_path(
    urls: Sequence[str] = (SMS_URL, SMS_FALLBACK_URL), timeout: float = 30.0
) -> Path:
    """Local path of the verified `SMSSpamCollection` file in `ch02_data.data_dir()`.

    `ch02_data.download` does the work, with SMS_SHA256 pinned for the extracted file:
    1. Already there with the right sha256: returned at once.
    2. DATA_MIRROR holds `SMSSpamCollection`: copied and verified.
    3. DATA_MIRROR holds `sms+spam+collection.zip`, else each URL of `urls` in turn gives the
       zip (downloaded with a progress bar to a temporary file): its member `SMSSpamCollection`
       is extracted, verified against SMS_SHA256 and renamed into place; the zip is not kept.
    Nothing partial or unverified is ever left at the destination. Raises DownloadError.
    """
    if isinstance(urls, str):
        urls = (urls,)
    if not urls:
        raise ValueError("urls=(); give at least one URL of the SMS Spam Collection zip")
    # One more try per URL after a timeout or a 5xx, not three: the next URL is the better retry.
    return download(list(urls), data_dir() / SMS_NAME, SMS_SHA256, retries=1, timeout=timeout,
                    unpack=_extract_sms, packed_name=SMS_ZIP_NAME)


# --- Reading --------------------------------------------------------------------------------


def read_sms_file(path: str | os.PathLike) -> pd.DataFrame:
    """Every line of a `<ham|spam><TAB><message>` file as a DataFrame with columns label, text.

    Each line is split at its one TAB, so quote characters stay part of the message. A line with
    no TAB, several TABs, another label or invalid UTF-8 raises ValueError naming the file and the
    line number (counted from 1): a message is never skipped or merged silently.
    """
    path = Path(path)
    labels, texts = [], []
    with open(path, "rb") as f:  # bytes, split at b"\n" only: a stray \r stays inside a message
        for number, raw in enumerate(f, start=1):
            where = f"line {number} of {path}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"{where} is not valid UTF-8 ({e.reason} at byte {e.start})"
                ) from None
            line = line.removesuffix("\n").removesuffix("\r")  # LF, or CRLF from a Windows copy
            label, _, text = line.partition("\t")
            tabs = line.count("\t")
            if tabs != 1 or label not in LABELS:
                why = f"{tabs} TABs" if tabs != 1 else f"label {label!r}"
                raise ValueError(f"{where} is malformed ({why}): {line[:60]!r}; each line must be "
                                 "'ham' or 'spam', one TAB, then the message")
            labels.append(label)
            texts.append(text)
    if not labels:
        raise ValueError(f"{path} holds no messages; expected lines of '<ham|spam><TAB><message>'")
    return pd.DataFrame({"label": labels, "text": texts})


def read_sms_naively(path: str | os.PathLike) -> pd.DataFrame:
    """The file read as a CSV with default quoting: the common mistake, kept for the notebook.

    A message that starts with a quote character opens a quoted field that runs on to the next
    quote, over line ends, so several messages become one row: 5,572 rows instead of 5,574.
    """
    return pd.read_csv(path, sep="\t", header=None, names=["label", "text"], encoding="utf-8")


def load_sms_spam() -> pd.DataFrame:
    """All 5,574 messages of the SMS Spam Collection (4,827 ham, 747 spam): columns label, text."""
    return read_sms_file(sms_spam_path())


# --- Balance and split ----------------------------------------------------------------------


def _check_frame(df: pd.DataFrame) -> None:
    if isinstance(df, pd.DataFrame) and "label" in df.columns and len(df) > 0:
        return
    got = (f"columns {list(df.columns)} and {len(df)} rows" if isinstance(df, pd.DataFrame)
           else type(df).__name__)
    raise ValueError(f"df has {got}; use a non-empty DataFrame with a 'label' column")


def balance(df: pd.DataFrame, seed: int = 123) -> pd.DataFrame:
    """Undersample every class to the size of the smallest one (here: ham down to 747).

    Rows are drawn with pandas' `sample(random_state=seed)`, as the book does, so the same seed
    gives the same rows on every machine; the result lists the classes in sorted order.
    """
    _check_frame(df)
    n = int(df["label"].value_counts().min())
    groups = (g for _, g in df.groupby("label"))
    parts = [g if len(g) == n else g.sample(n, random_state=seed) for g in groups]
    return pd.concat(parts).reset_index(drop=True)


def split(
    df: pd.DataFrame, fractions: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 123
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Shuffle the rows with `seed`, then cut them into train, validation and test frames.

    Train gets int(N * fractions[0]) rows, validation int(N * fractions[1]), test the rest
    (1,494 balanced messages -> 1,045 / 149 / 300).
    """
    _check_frame(df)
    fractions = tuple(fractions)
    valid = len(fractions) == 3 and all(0 <= f <= 1 for f in fractions)
    if not valid or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions={fractions}; use three numbers in [0, 1] that sum to 1 "
                         "(train, validation, test)")
    shuffled = df.sample(frac=1, random_state=seed).reset_index(drop=True)
    n_train = int(len(df) * fractions[0])
    n_val = int(len(df) * fractions[1])
    parts = (shuffled[:n_train], shuffled[n_train : n_train + n_val], shuffled[n_train + n_val :])
    return tuple(p.reset_index(drop=True) for p in parts)


# --- Dataset and loaders --------------------------------------------------------------------


def _label_id(label, i: int) -> int:
    if isinstance(label, str) and label in LABELS:
        return LABELS.index(label)
    if is_int(label) and 0 <= label < len(LABELS):
        return int(label)
    raise ValueError(f"labels[{i}]={label!r}; use 'ham' or 'spam', or their ids 0 and 1")


class SpamDataset(Dataset):
    """Messages as fixed-length rows of token ids, padded on the right, with their class ids.

    texts:      the messages (strings); special-token text such as "<|endoftext|>" in a message
                is encoded as plain text, so a message cannot inject a special token.
    labels:     "ham"/"spam" or 0/1, one per text.
    tokenizer:  anything with tiktoken's `encode(text, disallowed_special=())`; default GPT-2's.
    max_length: T, tokens per row. None: the longest encoded message. Longer messages keep their
                first T tokens (training sees the start of a message; `classify` keeps the end).
    pad_id:     the id that fills rows after a message; GPT-2's <|endoftext|> (50256) by default.
    Item i is a dict {"input_ids": (T,) int64, "labels": () int64, "lengths": () int64}, where
    lengths counts the message's tokens before padding (>= 1: an empty message becomes one
    pad_id token). The default DataLoader collate turns items into (B, T), (B,), (B,) tensors.
    """

    def __init__(
        self, texts, labels, tokenizer=None, max_length: int | None = None, pad_id: int = EOT_ID
    ):
        texts = list(texts)
        labels = labels.tolist() if isinstance(labels, torch.Tensor) else list(labels)
        if len(texts) != len(labels):
            raise ValueError(
                f"{len(texts)} texts but {len(labels)} labels; give one label per text"
            )
        if not texts:
            raise ValueError("texts is empty; a dataset needs at least one message")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(
                    f"texts[{i}]={text!r} is a {type(text).__name__}; each text must be a string"
                )
        label_ids = [_label_id(y, i) for i, y in enumerate(labels)]
        positive_int("max_length", max_length, none_means="the longest text")
        tokenizer = gpt2_encoding() if tokenizer is None else tokenizer
        n_vocab = getattr(tokenizer, "n_vocab", None)  # tiktoken and ch02's BPETokenizer have it
        if not (is_int(pad_id) and 0 <= pad_id < (n_vocab or float("inf"))):
            raise ValueError(f"pad_id={pad_id!r}; use a token id in [0, {n_vocab or 'vocab size'})")

        encoded = [tokenizer.encode(t, disallowed_special=()) or [int(pad_id)] for t in texts]
        self.longest = max(len(ids) for ids in encoded)  # before truncation
        self.max_length = int(max_length) if max_length is not None else self.longest
        self.pad_id = int(pad_id)
        self.n_truncated = sum(len(ids) > self.max_length for ids in encoded)

        N, T = len(encoded), self.max_length
        self.input_ids = torch.full((N, T), self.pad_id, dtype=torch.long)  # (N, T)
        self.lengths = torch.empty(N, dtype=torch.long)  # (N,)
        for i, ids in enumerate(encoded):
            ids = ids[:T]  # keep the start of a long message
            self.input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            self.lengths[i] = len(ids)
        self.labels = torch.tensor(label_ids, dtype=torch.long)  # (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.input_ids[i],  # (T,)
            "labels": self.labels[i],  # ()
            "lengths": self.lengths[i],  # ()
        }


def collate_longest(items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack items like the default collate, then cut input_ids to the batch's longest message.

    (B, T) becomes (B, max(lengths)): less compute for batches of short messages. Positions past
    a message's length are still padding, so read the last real token at lengths - 1.
    """
    if len(items) == 0:
        raise ValueError("items is empty; a batch needs at least one item")
    batch = default_collate(list(items))
    T = int(batch["lengths"].max())
    batch["input_ids"] = batch["input_ids"][:, :T].contiguous()  # (B, T)
    return batch


def make_loader(
    dataset: Dataset,
    batch_size: int = 8,
    shuffle: bool = False,
    pad: str = "fixed",
    seed: int = 123,
    drop_last: bool = False,
) -> DataLoader:
    """Chapter 2's `seeded_loader` of batch dicts over `dataset` (a SpamDataset).

    pad="fixed" keeps every row at the dataset's max_length; pad="longest" cuts each batch to its
    longest message (`collate_longest`). With shuffle=True the order depends only on (seed,
    epoch): looking at a batch first, or evaluating on this loader, does not change it.
    """
    if pad not in ("fixed", "longest"):
        raise ValueError(
            f"pad={pad!r}; use 'fixed' (the dataset's max_length) or 'longest' (per batch)"
        )
    return seeded_loader(dataset, batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed,
                         collate_fn=collate_longest if pad == "longest" else None)
