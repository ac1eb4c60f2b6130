"""Next-token training pairs from a text: a sliding window over its token ids.

Each window of T ids is an input; the same window moved one token to the right is its target,
so position t of the target is the token that follows positions 0..t of the input.
Later chapters pretrain on these batches. `seeded_loader` is the DataLoader every chapter uses:
its shuffle depends only on (seed, epoch).
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .checks import int_at_least, positive_int
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
        max_length = positive_int("max_length", max_length, "the tokens per window")
        stride = positive_int("stride", stride, "the tokens between the starts of two windows")
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


class SeededSampler(Sampler[int]):
    """Indices 0..n-1 in an order that depends only on (seed, epoch).

    Epoch 0 is `torch.randperm(n)` drawn from a generator seeded with `seed`; epoch e >= 1 uses
    the e-th number drawn from that generator as its seed, so every epoch has its own order
    and two seeds never share one. A pass that runs to its end counts one epoch; a pass cut
    short (a peek at one batch, a `break`) is not counted, so the next pass repeats its order.
    `set_epoch(e)` picks the epoch explicitly (the training loop does so at each epoch start,
    as for PyTorch's DistributedSampler), so nothing else that iterates the loader moves it.
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        self.n = n if n == 0 else positive_int("n", n, "the number of items")  # an empty dataset has none
        self.seed = _seed(seed)
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch `epoch`'s order (an int >= 0)."""
        self.epoch = int_at_least("epoch", epoch, 0)

    def order(self, epoch: int) -> list[int]:
        """The indices of epoch `epoch`, in the order a pass of that epoch yields them."""
        if not self.shuffle:
            return list(range(self.n))
        seed = self.seed
        if epoch > 0:  # the epoch-th draw of a generator seeded with `seed`: O(epoch) numbers
            seeds = torch.randint(2**62, (epoch,), generator=torch.Generator().manual_seed(seed))
            seed = int(seeds[-1])
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(seed)).tolist()

    def __iter__(self) -> Iterator[int]:
        epoch = self.epoch
        return self._pass(epoch, self.order(epoch))  # the order is fixed now, not at first next()

    def _pass(self, epoch: int, order: list[int]) -> Iterator[int]:
        yield from order
        self.epoch = epoch + 1  # reached only when the pass ran to its end

    def __len__(self) -> int:
        return self.n


def seeded_loader(
    dataset: Dataset,
    batch_size: int = 8,
    shuffle: bool = False,
    drop_last: bool = False,
    seed: int | None = 123,
    collate_fn: Callable | None = None,
) -> DataLoader:
    """The one DataLoader of this repository: batches of `dataset` in an order that depends
    only on (seed, epoch) (`SeededSampler`).

    Looking at a batch first, evaluating on the same loader, or anything else that uses torch's
    random state leaves the order unchanged. seed=None derives the seed once, now, from torch's
    global random state without moving it (so torch.manual_seed before the call fixes it). shuffle=False keeps
    the dataset's order. collate_fn: list of items -> batch (None: PyTorch's default stacking).
    num_workers=0 loads in the main process (workers break notebooks on macOS and Windows).
    """
    batch_size = positive_int("batch_size", batch_size, "the items per batch")
    if collate_fn is not None and not callable(collate_fn):
        raise TypeError(f"collate_fn is {type(collate_fn).__name__}; give a function from a list "
                        "of items to a batch, or None for PyTorch's default")
    if seed is None:  # drawn from a copy, so making a loader does not move torch's RNG
        copy = torch.Generator()
        copy.set_state(torch.get_rng_state())
        seed = int(torch.randint(2**62, (), generator=copy))
    sampler = SeededSampler(len(dataset), seed, shuffle=bool(shuffle))
    # The loader's own generator only feeds the per-iterator seed DataLoader draws for worker
    # processes; without it, every iter() would draw from (and move) torch's global RNG.
    generator = torch.Generator().manual_seed(sampler.seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                      num_workers=0, collate_fn=collate_fn, generator=generator)


def create_dataloader(
    text: str | Sequence[int] | torch.Tensor,
    batch_size: int = 4,
    max_length: int = 256,
    stride: int = 128,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
    tokenizer=None,
    seed: int | None = None,
) -> DataLoader:
    """A `seeded_loader` of (inputs, targets) batches, two int64 tensors of shape (B, T).

    drop_last=True drops a last, smaller batch, whose noisier gradient can make the loss spike;
    a text with fewer windows than batch_size is then refused, as it would give no batch at all.
    The shuffle depends only on (seed, epoch); seed=None takes it from torch's global random
    state once, here, so call torch.manual_seed first for a reproducible shuffle.
    num_workers must stay 0 (workers break notebooks on macOS and Windows).
    """
    batch_size = positive_int("batch_size", batch_size, "the windows per batch")
    if num_workers != 0:
        raise ValueError(f"num_workers={num_workers!r}; use 0 (the batches are loaded in the main "
                         "process, as worker processes break notebooks on macOS and Windows)")
    dataset = GPTDataset(text, tokenizer=tokenizer, max_length=max_length, stride=stride)
    if drop_last and len(dataset) < batch_size:  # the loader would be empty: a loop over it does nothing
        raise ValueError(
            f"batch_size={batch_size} is more than the {len(dataset)} windows of the text, so "
            f"drop_last=True leaves no batch; use batch_size <= {len(dataset)}, drop_last=False or a longer text"
        )
    return seeded_loader(dataset, batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed)


def _seed(seed: object) -> int:
    """`seed` as an int in [0, 2**63), else a ValueError (torch.Generator refuses the rest)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**63:
        raise ValueError(f"seed={seed!r}; use an int in [0, 2**63), or None for one drawn from "
                         "torch's global random state")
    return int(seed)


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
