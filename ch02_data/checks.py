"""Argument checks that every chapter imports, so that a bad argument reads the same everywhere.

Each check returns the value (a plain int or float) or raises a ValueError of one sentence that
names the argument, shows the value and says what is allowed:

    batch_size=0; use an integer >= 1 (the windows per batch)
    max_batches=2.5; use an integer >= 1, or None (all batches)
    temperature=nan; use a finite number > 0

`meaning` (in parentheses) says what the number counts; `none_means`, when given, lets None
through and says what None does. A bool is refused where a number is asked for: Python counts
True as 1, but a flag passed as a count is a mistake.
"""

from __future__ import annotations

import math
import numbers


def is_int(x) -> bool:
    """An integer (Python's or NumPy's), but not a bool."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def is_real(x) -> bool:
    """A real number (int, float or their NumPy kin; nan and inf too), but not a bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _allowed(kind: str, meaning: str | None, none_means: str | None) -> str:
    """'an integer >= 1 (meaning), or None (none_means)': what a message says is allowed."""
    text = f"{kind} ({meaning})" if meaning else kind
    return f"{text}, or None ({none_means})" if none_means else text


def int_at_least(name: str, value, low: int, meaning: str | None = None,
                 none_means: str | None = None) -> int | None:
    """`value` as an int >= `low` (None passes when `none_means` says what it does)."""
    if value is None and none_means is not None:
        return None
    if not is_int(value) or value < low:
        raise ValueError(f"{name}={value!r}; use {_allowed(f'an integer >= {low}', meaning, none_means)}")
    return int(value)


def positive_int(name: str, value, meaning: str | None = None,
                 none_means: str | None = None) -> int | None:
    """`value` as an int >= 1 (None passes when `none_means` says what it does)."""
    return int_at_least(name, value, 1, meaning, none_means)


def finite_number(name: str, value, low: float = -math.inf, *, above: bool = False,
                  meaning: str | None = None, none_means: str | None = None) -> float | None:
    """`value` as a finite float >= `low` (> `low` with `above=True`); nan and inf are refused.
    None passes when `none_means` says what it does."""
    if value is None and none_means is not None:
        return None
    ok = is_real(value) and math.isfinite(value) and (value > low if above else value >= low)
    if not ok:
        bound = "" if low == -math.inf else f" {'>' if above else '>='} {low:g}"
        raise ValueError(f"{name}={value!r}; use {_allowed(f'a finite number{bound}', meaning, none_means)}")
    return float(value)


def number_in(name: str, value, low: float, high: float, *, closed: str = "[]",
              meaning: str | None = None, none_means: str | None = None) -> float | None:
    """`value` as a float in the interval from `low` to `high`, whose ends `closed` gives in
    interval notation: "[]" both included, "[)" or "(]" one, "()" neither. None passes when
    `none_means` says what it does."""
    if value is None and none_means is not None:
        return None
    ok = is_real(value)
    if ok:  # nan fails every comparison
        ok = (value > low if closed[0] == "(" else value >= low) and (
            value < high if closed[1] == ")" else value <= high)
    if not ok:
        interval = f"{closed[0]}{low:g}, {high:g}{closed[1]}"
        raise ValueError(f"{name}={value!r}; use {_allowed(f'a number in {interval}', meaning, none_means)}")
    return float(value)
