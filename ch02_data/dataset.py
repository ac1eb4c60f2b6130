"""Next-token training pairs from a text: a sliding window over its token ids.

Each window of T ids is an input; the same window moved one token to the right is its target,
so position t of the target is the token that follows positions 0..t of the input.
Later chapters pretrain on these batches.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from .encoding import gpt2_encoding


class GPTDataset(Dataset):
    """Windows of `max_length` token ids, starting every `stride` tokens, with their targets.

    text_or_ids: a text, encoded with `tokenizer`, or token ids already encoded.
    tokenizer:   anything with an `encode(text)`, default tiktoken's "gpt2" encoding; one that takes
                 tiktoken's `allowed_special` turns `<|endoftext|>` into its special id (50256).
    max_length:  T, the tokens per window (the model's context length at most).
    stride:      tokens between the starts of consecutive windows; stride == max_length gives
                 windows that touch but do not overlap, so each token is an input exactly once.
    Item i is (inputs, targets), two int64 tensors of shape (T,), targets = inputs shifted by one.
    """

    def __init__(
        self,
        text_or_ids: str | Sequence[int] | torch.Tensor,
        tokenizer=None,
        max_length: int = 256,
        stride: int = 128,
    ):
        max_length = _positive_int("max_length", max_length, "the tokens per window")
        stride = _positive_int("stride", stride, "the tokens between the starts of two windows")
        if isinstance(text_or_ids, str):
            tokenizer = tokenizer or gpt2_encoding()
            try:
                text_or_ids = tokenizer.encode(text_or_ids, allowed_special={"<|endoftext|>"})
            except TypeError:  # a tokenizer without tiktoken's options, such as SimpleTokenizer
                text_or_ids = tokenizer.encode(text_or_ids)
        self.ids = _as_token_ids(text_or_ids)  # (N,)
        self.max_length = max_length
        self.stride = stride
        # A window starting at s needs ids s .. s + T (T inputs and one more for the last target).
        self.starts = range(0, len(self.ids) - max_length, stride)
        if len(self.starts) == 0:
            raise ValueError(
                f"the text has {len(self.ids)} tokens; one window needs max_length + 1 = {max_length + 1}"
            )

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.starts[i]  # raises IndexError past the end
        inputs = self.ids[s : s + self.max_length]  # (T,)
        targets = self.ids[s + 1 : s + self.max_length + 1]  # (T,) the next token at every position
        return inputs, targets


def create_dataloader(
    text: str | Sequence[int] | torch.Tensor,
    batch_size: int = 4,
    max_length: int = 256,
    stride: int = 128,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
    tokenizer=None,
) -> DataLoader:
    """A DataLoader of (inputs, targets) batches, two int64 tensors of shape (B, T).

    drop_last=True drops a last, smaller batch, whose noisier gradient can make the loss spike;
    a text with fewer windows than batch_size is then refused, as it would give no batch at all.
    num_workers=0 loads in the main process (workers break notebooks on macOS and Windows).
    Call torch.manual_seed first for a reproducible shuffle.
    """
    batch_size = _positive_int("batch_size", batch_size, "the windows per batch")
    dataset = GPTDataset(text, tokenizer=tokenizer, max_length=max_length, stride=stride)
    if drop_last and len(dataset) < batch_size:  # the loader would be empty: a loop over it does nothing
        raise ValueError(
            f"batch_size={batch_size} is more than the {len(dataset)} windows of the text, so "
            f"drop_last=True leaves no batch; use batch_size <= {len(dataset)}, drop_last=False or a longer text"
        )
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, num_workers=num_workers
    )


def _positive_int(name: str, value: object, meaning: str) -> int:
    """`value` as an int >= 1, else a ValueError (a float or None would fail later, less clearly)."""
    try:
        number = operator.index(value)  # ints, numpy ints; not floats, not None
    except TypeError:
        number = 0
    if isinstance(value, bool) or number < 1:
        raise ValueError(f"{name}={value!r}; use an int >= 1 ({meaning})")
    return number


def _as_token_ids(ids: object) -> torch.Tensor:
    """`ids` as a 1-D int64 tensor of token ids, or a ValueError that says what is wrong with it."""
    # A file name and raw bytes would otherwise give torch's errors, or bytes as ids.
    if isinstance(ids, os.PathLike):
        raise ValueError(f"text_or_ids is the path {str(ids)!r}; read the text first: "
                         "path.read_text(encoding='utf-8')")
    if isinstance(ids, (bytes, bytearray)):
        raise ValueError("text_or_ids is bytes; decode the text first: data.decode('utf-8')")
    try:
        tensor = torch.as_tensor(ids)
    except (TypeError, ValueError, RuntimeError) as e:  # None, a list of str, an id past int64
        raise ValueError(f"text_or_ids is not a str nor a sequence of token ids ({e})") from None
    if tensor.dim() != 1:
        raise ValueError(
            f"text_or_ids has shape {tuple(tensor.shape)}; give one 1-D sequence of token ids"
        )
    if tensor.numel() == 0:  # torch.as_tensor([]) is float32: no ids, not wrong ones
        return tensor.long()
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
        raise ValueError(f"text_or_ids holds {tensor.dtype} values; token ids must be integers")
    tensor = tensor.long()
    if tensor.min() < 0:
        raise ValueError(f"text_or_ids holds the id {tensor.min().item()}; token ids are >= 0")
    return tensor
