"""How much a score moves by chance, measured: spread over seeds and bootstrap intervals.

A difference between two scores is called real in this repository only when it exceeds what
chance alone moves it by. Two ways to measure that, used by chapters 6, 7 and the bonuses:

- `seed_spread(values)`: the same run repeated with different seeds (data order, dropout,
  initialisation of a new head); mean, standard deviation, min and max.
- `bootstrap_interval(scores)` and `paired_bootstrap(a, b)`: resample the test items with
  replacement (Efron 1979) to see how much the mean would move on another test set of the same
  size; the paired version resamples the items once for both systems, so it measures the
  difference itself (Koehn 2004 uses it to compare translation systems).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from ch02_data.checks import positive_int

__all__ = ["accuracy_interval", "bootstrap_interval", "paired_bootstrap", "seed_spread", "beyond_spread"]


def _numbers(name: str, values) -> list[float]:
    values = [float(v) for v in values]
    if not values or any(math.isnan(v) for v in values):
        raise ValueError(f"{name} has {len(values)} values{' (some NaN)' if values else ''}; give at least one number, no NaN")
    return values


def seed_spread(values: Sequence[float]) -> dict:
    """{"mean", "std" (sample standard deviation, 0 for one value), "min", "max", "n"} of one
    score measured once per seed."""
    values = _numbers("values", values)
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "min": min(values), "max": max(values), "n": n}


def _check_level(level: float) -> None:
    if not (isinstance(level, (int, float)) and 0 < level < 1):
        raise ValueError(f"level is {level!r}; use a fraction between 0 and 1, e.g. 0.95")


def _quantiles(samples: list[float], level: float) -> tuple[float, float]:
    samples = sorted(samples)
    lo = samples[int(math.floor((1 - level) / 2 * (len(samples) - 1)))]
    hi = samples[int(math.ceil((1 + level) / 2 * (len(samples) - 1)))]
    return lo, hi


def _resample_means(values: list[float], resamples: int, seed: int) -> list[float]:
    """The mean of each of `resamples` resamples of `values` (drawn with replacement, seeded)."""
    rng = random.Random(seed)
    n = len(values)
    return [sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples)]


def bootstrap_interval(scores: Sequence[float], level: float = 0.95, resamples: int = 2000,
                       seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean of per-item `scores` and its percentile bootstrap interval."""
    scores = _numbers("scores", scores)
    _check_level(level)
    positive_int("resamples", resamples)
    return (sum(scores) / len(scores), *_quantiles(_resample_means(scores, resamples, seed), level))


def accuracy_interval(acc: float, n: int, level: float = 0.95, resamples: int = 2000,
                      seed: int = 0) -> tuple[float, float]:
    """(low, high): the bootstrap interval of an accuracy `acc` measured on `n` items, when only
    the accuracy was kept (round(acc * n) items right, the rest wrong)."""
    positive_int("n", n)
    if not (isinstance(acc, (int, float)) and 0 <= acc <= 1):
        raise ValueError(f"acc is {acc!r}; give an accuracy between 0 and 1")
    right = round(acc * n)
    _, low, high = bootstrap_interval([1.0] * right + [0.0] * (n - right), level, resamples, seed)
    return low, high


def paired_bootstrap(a: Sequence[float], b: Sequence[float], level: float = 0.95, resamples: int = 2000,
                     seed: int = 0) -> dict:
    """The mean difference a - b over the same test items, its bootstrap interval, and the share
    of resamples in which a's mean beat b's: {"diff", "low", "high", "a_wins"}."""
    a, b = _numbers("a", a), _numbers("b", b)
    if len(a) != len(b):
        raise ValueError(f"a has {len(a)} scores and b {len(b)}; a paired comparison needs one score per item in each")
    diffs = [x - y for x, y in zip(a, b)]
    _check_level(level)
    positive_int("resamples", resamples)
    means = _resample_means(diffs, resamples, seed)  # one set of resamples for the interval and the wins
    low, high = _quantiles(means, level)
    return {"diff": sum(diffs) / len(diffs), "low": low, "high": high,
            "a_wins": sum(m > 0 for m in means) / resamples}


def beyond_spread(diff: float, spread: float) -> bool:
    """Whether a difference counts as real here: larger in size than the spread measured for it
    (a seed standard deviation, or half the width of a bootstrap interval)."""
    return abs(diff) > abs(spread)
