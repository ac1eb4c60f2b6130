"""Next-token training pairs from a text: a sliding window over its token ids.

Each window of T ids is an input; the same window moved one token to the right is its target,
so position t of the target is the token that follows positions 0..t of the input.
Later chapters pretrain on these batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from .encoding import gpt2_encoding


class GPTDataset(Dataset):
    """Windows of `max_length` token ids, starting every `stride` tokens, with their targets.

    text_or_ids: a text, encoded with `tokenizer`, or token ids already encoded.
    tokenizer:   anything with tiktoken's `encode(text, allowed_special=...)`; default tiktoken's
                 "gpt2" encoding. `<|endoftext|>` in the text becomes its special id (50256).
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
        if max_length < 1 or stride < 1:
            raise ValueError(f"max_length and stride must be positive, got {max_length} and {stride}")
        if isinstance(text_or_ids, str):
            tokenizer = tokenizer or gpt2_encoding()
            text_or_ids = tokenizer.encode(text_or_ids, allowed_special={"<|endoftext|>"})
        self.ids = torch.as_tensor(text_or_ids, dtype=torch.long)  # (N,)
        self.max_length = max_length
        self.stride = stride
        # A window starting at s needs ids s .. s + T (T inputs and one more for the last target).
        self.starts = range(0, len(self.ids) - max_length, stride)
        if len(self.starts) == 0:
            raise ValueError(
                f"the text has {len(self.ids)} tokens; a window needs max_length + 1 = {max_length + 1}"
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

    drop_last=True drops a last, smaller batch, whose noisier gradient can make the loss spike. num_workers=0 loads in the main process (workers break notebooks on
    macOS and Windows). Call torch.manual_seed first for a reproducible shuffle.
    """
    dataset = GPTDataset(text, tokenizer=tokenizer, max_length=max_length, stride=stride)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, num_workers=num_workers
    )
