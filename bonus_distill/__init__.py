"""Bonus: knowledge distillation from stored teacher predictions (Hinton et al. 2015).

Run the teacher once over the corpus (`precompute_teacher`), keep its top-k (or sampled)
next-token log-probabilities in a memory-mapped file (`TeacherTargets`), then train a much
smaller student against them with chapter 5's `train` and `DistillLoss`, the teacher no longer
in memory. Sequence-level distillation (training on text the teacher wrote,
`teacher_generated_tokens`) is the other meaning of the word, compared in the notebook.
"""

from .data import (
    Corpus,
    DistillDataset,
    load_corpus,
    load_teacher,
    student_config,
    teacher_generated_tokens,
    windows_loader,
)
from .experiment import StudentResult, train_student, val_loader_for
from .loss import DistillLoss, distill_loss, kl_to_student, teacher_probs
from .targets import (
    HEADER_BYTES,
    TeacherTargets,
    corpus_fingerprint,
    n_positions_for,
    precompute_teacher,
    read_header,
)

__all__ = [
    "Corpus",
    "DistillDataset",
    "DistillLoss",
    "HEADER_BYTES",
    "StudentResult",
    "TeacherTargets",
    "corpus_fingerprint",
    "distill_loss",
    "kl_to_student",
    "load_corpus",
    "load_teacher",
    "n_positions_for",
    "precompute_teacher",
    "read_header",
    "student_config",
    "teacher_generated_tokens",
    "teacher_probs",
    "train_student",
    "val_loader_for",
    "windows_loader",
]
