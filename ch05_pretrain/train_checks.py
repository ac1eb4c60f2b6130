"""The checks `train` makes on its arguments and loaders before anything runs, one sentence each."""

from __future__ import annotations

from ch02_data.checks import finite_number, positive_int


def check_settings(epochs, max_steps, eval_every, eval_batches, grad_accum_steps,
                   max_grad_norm, checkpoint_every, checkpoint_path, resume) -> None:
    """One sentence for each setting `train` cannot honour, before anything runs."""
    positive_int("epochs", epochs)
    positive_int("max_steps", max_steps, none_means="train for `epochs`")
    positive_int("eval_every", eval_every, none_means="evaluate after the last step only")
    positive_int("eval_batches", eval_batches, none_means="all validation batches")
    positive_int("grad_accum_steps", grad_accum_steps)
    positive_int("checkpoint_every", checkpoint_every, none_means="save after the last step only")
    finite_number("max_grad_norm", max_grad_norm, 0, above=True, none_means="no clipping")
    if checkpoint_path is None and checkpoint_every is not None:
        raise ValueError(f"checkpoint_every={checkpoint_every!r} without a checkpoint_path; give "
                         "the file to save to, or leave checkpoint_every None")
    if checkpoint_path is None and resume:
        raise ValueError("resume=True without a checkpoint_path; give the file to resume from")


def batches_per_epoch(loader) -> int:
    """len(loader), refusing a loader without a length or without batches."""
    try:
        n = len(loader)
    except TypeError:
        raise TypeError(f"train_loader ({type(loader).__name__}) has no len(); give a sized "
                        "loader (a DataLoader over a map-style Dataset, or a list of batches), "
                        "since the schedule and resuming need the batches per epoch") from None
    if n == 0:
        raise ValueError("train_loader has no batches (len 0); a DataLoader with drop_last=True "
                         "and fewer samples than batch_size has none")
    return n


def check_val_loader(loader) -> None:
    """Refuse a validation loader without batches: every val_loss would be nan."""
    try:
        n = len(loader) if loader is not None else None
    except TypeError:  # an iterable without len(): evaluate finds out
        return
    if n == 0:
        raise ValueError("val_loader has no batches (len 0), so every validation loss would be "
                         "nan; give a loader with at least one batch, or val_loader=None for none")
