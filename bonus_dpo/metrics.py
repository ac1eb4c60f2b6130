"""DPO's statistics over a loader (`preference_stats`) and the same as metrics for chapter 5's
`train` (`dpo_metrics`), which share one pass over the loader per evaluation."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn as nn

from ch02_data.checks import positive_int
from ch05_pretrain import NoTargetsError
from ch05_pretrain.losses import evaluation_batches

from .dpo import DPOLoss, _check_beta, freeze

METRIC_NAMES = ("margin", "pref_acc", "chosen_reward", "rejected_reward")


@torch.no_grad()
def preference_stats(model: nn.Module, loader: Iterable, reference_model: nn.Module | None = None,
                     beta: float = 0.1, average: bool = False,
                     max_batches: int | None = None, fast: bool = False) -> dict[str, float]:
    """DPO statistics over the first `max_batches` batches of `loader` (None: all), per pair:

        "loss":            mean DPO loss
        "margin":          mean of chosen_reward - rejected_reward
        "pref_acc":        share of pairs with chosen_reward > rejected_reward (strictly: at
                           the start, when policy = reference, every reward is 0 and it is 0)
        "chosen_reward", "rejected_reward": their means
        "pairs":           the number of pairs looked at

    The model runs in eval mode without gradients; its train/eval mode is restored afterwards.
    Batches are moved to the model's device. Batches with no pair left (B = 0) are skipped.
    """
    loss_fn = DPOLoss(reference_model, beta, average, fast)
    device = next(model.parameters()).device
    sums = torch.zeros(5, dtype=torch.float64, device=device)  # loss, margin, acc, chosen, rejected
    pairs = 0
    with evaluation_batches(model, loader, max_batches, device) as batches:
        for batch in batches:
            n = batch["chosen"].shape[0]
            if n == 0:
                continue
            loss, chosen, rejected = loss_fn.terms(model, batch)
            margin = chosen - rejected
            sums += torch.stack([loss * n, margin.sum(), (margin > 0).sum(), chosen.sum(),
                                 rejected.sum()]).double()
            pairs += n
    if pairs == 0:
        raise NoTargetsError("the batches looked at hold no preference pair (none, or all "
                             "dropped), so there are no statistics to compute")
    loss, margin, acc, chosen, rejected = (sums / pairs).tolist()
    return {"loss": loss, "margin": margin, "pref_acc": acc, "chosen_reward": chosen,
            "rejected_reward": rejected, "pairs": pairs}


def _weights_fingerprint(model: nn.Module) -> list[float]:
    """One sum per trainable parameter tensor (all tensors if none trains): any optimizer step
    changes it, and it costs far less than a forward pass."""
    params = [p for p in model.parameters() if p.requires_grad] or list(model.parameters())
    return torch.stack([p.detach().float().sum() for p in params]).tolist()


def dpo_metrics(reference_model: nn.Module | None = None, beta: float = 0.1, average: bool = False,
                max_batches: int | None = None,
                fast: bool = False) -> dict[str, Callable[[nn.Module, Iterable], float]]:
    """Metrics for `train(metrics=...)`: {"margin", "pref_acc", "chosen_reward",
    "rejected_reward"} -> fn(model, loader) -> float, as in `preference_stats`.

    `train` records them as "val_<name>" and "train_<name>". The four share one pass over the
    loader: the statistics are cached per (model, loader) together with a fingerprint of the
    model's weights, and recomputed as soon as the weights have changed. Use the same beta and
    average as the `DPOLoss`, and a small `max_batches`: each pass runs policy and reference.
    """
    _check_beta(beta)
    positive_int("max_batches", max_batches, none_means="all batches")
    if reference_model is not None:
        freeze(reference_model)
    cache: dict[tuple[int, int], tuple[list[float], dict]] = {}

    def stats(model: nn.Module, loader: Iterable) -> dict:
        key, fingerprint = (id(model), id(loader)), _weights_fingerprint(model)
        if key not in cache or cache[key][0] != fingerprint:
            cache[key] = (fingerprint, preference_stats(model, loader, reference_model, beta,
                                                        average, max_batches, fast))
        return cache[key][1]

    def metric(name: str) -> Callable[[nn.Module, Iterable], float]:
        def fn(model: nn.Module, loader: Iterable) -> float:
            return stats(model, loader)[name]
        fn.__name__ = name
        return fn

    return {name: metric(name) for name in METRIC_NAMES}
