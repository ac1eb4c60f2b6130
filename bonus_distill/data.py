"""The corpus, the teacher and student, and the batches that pair text with stored targets.

- `load_corpus`: TinyStories token ids, split as chapter 5's fallback model was trained (its
  validation stories are held out here too, halved into a validation set for choices and a
  test set for the reported numbers).
- `load_teacher`: OpenAI's GPT-2 124M where its weights can be had, else chapter 5's fallback.
- `student_config`: the small model both kinds of distillation train.
- `DistillDataset`: windows of the corpus with the teacher's stored predictions for them.
- `teacher_generated_tokens`: text the teacher writes itself, for sequence-level distillation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm  # plain text bar: works in terminals, notebooks and CI logs

from ch02_data import EOT_ID, fetch, gpt2_encoding, pick, seeded_loader
from ch02_data.checks import positive_int
from ch04_gpt import GPTConfig, GPTModel
from ch05_pretrain import generate, load_base_model
from ch05_pretrain.fallback import DATA_FILE, current_recipe, split_text

from .targets import TeacherTargets, as_token_tensor


@dataclass(frozen=True)
class Corpus:
    train_ids: torch.Tensor  # (N,) int64: the distillation corpus
    val_ids: torch.Tensor  # (M,) int64: held-out stories for choices (T, alpha, k, steps)
    test_ids: torch.Tensor  # (M',) int64: other held-out stories, for the numbers reported


def load_corpus(n_train_tokens: int | None = None) -> Corpus:
    """TinyStories as token ids: the first `n_train_tokens` of the stories chapter 5's fallback
    model trained on (all when None), and its held-out validation stories split in two at a
    story boundary: the first half to choose settings on (`val_ids`), the second to report on
    (`test_ids`). Neither the teacher nor the student trains on either."""
    recipe = current_recipe()
    text = fetch(DATA_FILE).read_text(encoding="utf-8")[: recipe.text_chars]
    train_text, held_out = split_text(text, recipe.val_fraction)
    val_text, test_text = split_text(held_out, 0.5)
    encode = gpt2_encoding().encode
    train, val, test = (torch.tensor(encode(part, allowed_special={"<|endoftext|>"}), dtype=torch.int64)
                        for part in (train_text, val_text, test_text))
    if n_train_tokens is not None:
        n_train_tokens = positive_int("n_train_tokens", n_train_tokens, "tokens of training text")
        train = train[:n_train_tokens]
    return Corpus(train, val, test)


def load_teacher(device="cpu", name: str = "gpt2") -> tuple[GPTModel, str]:
    """(teacher in eval mode, its name): chapter 5's `load_base_model(name)`, GPT-2 124M by
    default, else chapter 5's TinyStories model, with one printed line saying which and why.
    Fast mode takes GPT-2 only from $GPT2_DIR, else the fallback's tiny version."""
    base = load_base_model(name, device)
    return base.model.eval(), base.key


def student_config(context_length: int = 128) -> GPTConfig:
    """The student: GPT-2's vocabulary and tokenizer, a much smaller body (full mode: 2 blocks of
    width 64, 3.3M parameters, 3.2M of them the tied token embedding)."""
    return GPTConfig(vocab_size=50257, context_length=context_length,
                     emb_dim=pick(full=64, fast=32), n_heads=2, n_layers=pick(full=2, fast=1),
                     drop_rate=0.0, tie_weights=True)


class DistillDataset(Dataset):
    """Window i: the corpus tokens s .. s + T (s = i * T, T = the targets' context length) as
    inputs and targets, with the teacher's stored predictions for positions s .. s + T - 1.

    Items are dicts with "inputs" and "targets" (T,) int64, "teacher_ids" (T, k) int64 and
    "teacher_logprobs" (T, k) float32, and "teacher_sampled" (a bool: the file holds draws, so
    the loss must be `DistillLoss.for_targets`); the default DataLoader collation stacks them. The
    targets file is checked against the corpus first (`TeacherTargets.check_corpus`).
    """

    def __init__(self, token_ids, targets: TeacherTargets):
        self.ids = as_token_tensor(token_ids)
        targets.check_corpus(self.ids)
        self.targets = targets
        self.T = targets.context_length

    def __len__(self) -> int:
        return len(self.targets) // self.T

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(f"window {i} is outside 0..{len(self) - 1}")
        s = i * self.T
        t_ids, t_lp = self.targets.window(s, self.T)
        return {"inputs": self.ids[s: s + self.T], "targets": self.ids[s + 1: s + self.T + 1],
                "teacher_ids": t_ids, "teacher_logprobs": t_lp,
                "teacher_sampled": torch.tensor(self.targets.sampled)}


def windows_loader(dataset: Dataset, batch_size: int, shuffle: bool = True,
                   seed: int = 123) -> DataLoader:
    """Batches of `dataset` in an order fixed by (seed, epoch) (chapter 2's `seeded_loader` with the
    default collation): datasets of equal length are visited in the same window order, so every
    student in a comparison sees the same text at each step."""
    return seeded_loader(dataset, batch_size, shuffle=shuffle, drop_last=shuffle, seed=seed)


@torch.no_grad()
def teacher_generated_tokens(teacher: nn.Module, n_tokens: int, row_tokens: int = 128,
                             batch_size: int = 32, temperature: float = 1.0, seed: int = 0,
                             progress: bool = True) -> torch.Tensor:
    """About `n_tokens` tokens of text the teacher writes itself: rows that start at
    <|endoftext|> (a new story) and continue for `row_tokens` sampled tokens, joined into one
    stream (each row keeps its leading <|endoftext|>, so rows meet at a story boundary).
    This is the corpus of sequence-level distillation (Kim & Rush 2016)."""
    n_tokens = positive_int("n_tokens", n_tokens, "tokens to generate")
    device = next(teacher.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    rows, made = [], 0
    bar = tqdm(total=n_tokens, unit="tok", desc="teacher writes", disable=not progress)
    while made < n_tokens:
        start = torch.full((batch_size, 1), EOT_ID, dtype=torch.int64, device=device)
        out = generate(teacher, start, max_new_tokens=row_tokens, temperature=temperature,
                       generator=generator)  # (B, 1 + row_tokens)
        rows.append(out.cpu())
        made += out.numel()
        bar.update(out.numel())
    bar.close()
    return torch.cat(rows).flatten()[:n_tokens]
