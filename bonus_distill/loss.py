"""The distillation loss (Hinton, Vinyals & Dean 2015) on stored, sparse teacher targets.

At every position the student gets two signals:

    loss = alpha * T^2 * KL(p_T || q_T)  +  (1 - alpha) * CE(true next token, q)

- q_T = softmax(student logits / T), over the whole vocabulary.
- p_T = the teacher's distribution at temperature T, known only on the k stored ids. A top-k
  file stores log p (T = 1) of the k most likely ids; dividing by T and renormalising over the
  k ids gives the tempered distribution restricted to them (a constant shift of log p cancels
  in the softmax). A sampled file stores log of each id's share of k draws from p at the
  sampling temperature: already a distribution, used as it is.
- KL(p || q) = sum_i p_i (log p_i - log q_i), summed over the stored ids. q is *not*
  renormalised over them, so the loss is 0 only when the student puts exactly p's mass on the
  stored ids and none elsewhere. With top-k that is the bias: the student is pulled towards a
  distribution with no tail. Sampled ids have no such bias: the expected target over the draws
  is p itself, so the expected gradient equals that of the full KL.
- T^2 keeps the soft term's gradient on the same scale as the cross-entropy's when T changes
  (its gradient shrinks as 1/T^2, Hinton et al. sec. 2).

Both terms are means over the counted positions (targets != -100), so a loss is per token and
does not depend on the sequence length.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ch02_data.checks import finite_number, number_in
from ch05_pretrain import IGNORE_INDEX, NoTargetsError

BATCH_KEYS = ("inputs", "targets", "teacher_ids", "teacher_logprobs")


def _check_settings(temperature, alpha) -> None:
    finite_number("temperature", temperature, 0, above=True,
                  meaning="1 = the distributions as they are, 2 = softer")
    number_in("alpha", alpha, 0, 1, meaning="the share of the distillation term; 0 = cross-entropy only")


def teacher_probs(teacher_logprobs: torch.Tensor, temperature: float, sampled: bool) -> torch.Tensor:
    """The target distribution over the k stored ids, (..., k), summing to 1 along k."""
    if sampled:
        return teacher_logprobs.float().exp()  # the draw frequencies; empty slots give 0
    return torch.softmax(teacher_logprobs.float() / temperature, dim=-1)


def kl_to_student(student_logits: torch.Tensor, teacher_ids: torch.Tensor,
                  teacher_logprobs: torch.Tensor, temperature: float = 1.0,
                  sampled: bool = False) -> torch.Tensor:
    """KL(p_T || q_T) at every position, (B, T): the teacher's stored ids against the student."""
    log_q = torch.log_softmax(student_logits.float() / temperature, dim=-1)  # (B, T, V)
    log_q = log_q.gather(-1, teacher_ids)  # (B, T, k): the student's log-prob of each stored id
    p = teacher_probs(teacher_logprobs, temperature, sampled)  # (B, T, k)
    # xlogy(p, p) = p log p, and 0 where p = 0 (an empty slot contributes nothing).
    return (torch.xlogy(p, p) - p * log_q).sum(dim=-1)


def distill_loss(
    student_logits: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    alpha: float = 0.9,
    sampled: bool = False,
) -> torch.Tensor:
    """alpha * T^2 * mean KL(p_T || q_T) + (1 - alpha) * mean CE, over counted positions.

    Args:
        student_logits: (B, T, V).
        teacher_ids: (B, T, k) int64, the stored ids.
        teacher_logprobs: (B, T, k), the stored log-probabilities (see the module docstring).
        targets: (B, T) int64, the true next tokens; -100 marks a position that does not count
            in either term.
        temperature: T, applied to the student and (top-k) to the teacher.
        alpha: the distillation term's share; 1 = distillation only, 0 = cross-entropy only.
        sampled: the stored ids are draws (their log-frequencies are used as they are).
    Raises:
        NoTargetsError: when no position counts.
    """
    _check_settings(temperature, alpha)
    if teacher_ids.shape != teacher_logprobs.shape or teacher_ids.shape[:-1] != targets.shape \
            or student_logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"shapes do not match: student_logits {tuple(student_logits.shape)}, teacher_ids "
            f"{tuple(teacher_ids.shape)}, teacher_logprobs {tuple(teacher_logprobs.shape)}, "
            f"targets {tuple(targets.shape)}; use (B, T, V), (B, T, k), (B, T, k) and (B, T)")
    counted = targets != IGNORE_INDEX  # (B, T)
    if not bool(counted.any()):
        raise NoTargetsError(f"the batch has no counted targets: all {targets.numel()} are "
                             f"{IGNORE_INDEX}")
    loss = student_logits.new_zeros((), dtype=torch.float32)
    if alpha > 0:
        kl = kl_to_student(student_logits, teacher_ids, teacher_logprobs, temperature, sampled)
        loss = loss + alpha * temperature ** 2 * kl[counted].mean()
    if alpha < 1:
        ce = F.cross_entropy(student_logits.flatten(0, 1).float(), targets.flatten(),
                             ignore_index=IGNORE_INDEX)
        loss = loss + (1 - alpha) * ce
    return loss


class DistillLoss:
    """`loss_fn(student, batch)` for chapter 5's `train`, on batches from `DistillDataset`.

    The batch is a dict with the student's inputs and targets and the stored teacher ids and
    log-probabilities of the same positions; the teacher itself is not needed.
    """

    # Defaults: what the chapter measured for this teacher and student (T = 1, alpha = 0.9; Hinton
    # et al.'s T = 2, alpha = 0.5 did worse than no teacher there; see the solutions' sweep).
    def __init__(self, temperature: float = 1.0, alpha: float = 0.9, sampled: bool = False):
        _check_settings(temperature, alpha)
        self.temperature, self.alpha, self.sampled = float(temperature), float(alpha), bool(sampled)

    @classmethod
    def for_targets(cls, targets, temperature: float = 1.0, alpha: float = 0.9) -> "DistillLoss":
        """The loss for a `TeacherTargets` file: sampled files fix the temperature they were
        drawn at, and a different one is refused."""
        if targets.sampled and not math.isclose(temperature, targets.temperature):
            raise ValueError(
                f"temperature={temperature!r}, but {targets.path.name} holds draws made at "
                f"T={targets.temperature:g}; use that temperature, or draw again at this one")
        return cls(temperature, alpha, targets.sampled)

    def __call__(self, model: nn.Module, batch: dict) -> torch.Tensor:
        missing = [key for key in BATCH_KEYS if key not in batch]
        if missing:
            raise ValueError(f"the batch lacks {missing}; use batches from DistillDataset "
                             f"(keys {list(BATCH_KEYS)})")
        sampled = batch.get("teacher_sampled")
        if sampled is not None and bool(torch.as_tensor(sampled).any()) != self.sampled:
            made, holds = ("sampled", "top-k") if self.sampled else ("top-k", "sampled")
            raise ValueError(f"this DistillLoss is for {made} targets but the batch holds {holds} "
                             "ones, whose log-probabilities mean something else; make the loss "
                             "with DistillLoss.for_targets(targets)")
        return distill_loss(model(batch["inputs"]), batch["teacher_ids"],
                            batch["teacher_logprobs"], batch["targets"],
                            self.temperature, self.alpha, self.sampled)

    def __repr__(self) -> str:
        kind = "sampled" if self.sampled else "top-k"
        return f"DistillLoss(temperature={self.temperature:g}, alpha={self.alpha:g}, {kind})"
