"""checks: the argument checks every chapter imports; one sentence each, bools refused."""

import math

import numpy as np
import pytest

from ch02_data.checks import finite_number, int_at_least, is_int, is_real, number_in, positive_int


def test_is_int_and_is_real_refuse_bools():
    assert is_int(3) and is_int(np.int64(3)) and not is_int(True) and not is_int(3.0)
    assert is_real(2.5) and is_real(np.float32(1)) and is_real(math.nan) and not is_real(False)


def test_positive_int_returns_a_plain_int():
    value = positive_int("n", np.int64(4))
    assert value == 4 and type(value) is int
    assert positive_int("n", None, none_means="all") is None


@pytest.mark.parametrize("value", [0, -1, 2.0, None, True, "3"])
def test_positive_int_message(value):
    with pytest.raises(ValueError, match=rf"^n={value!r}; use an integer >= 1 \(items\)$"):
        positive_int("n", value, "items")


def test_none_means_is_named_in_the_message():
    with pytest.raises(ValueError, match=r"^max_batches=0; use an integer >= 1, or None \(all batches\)$"):
        positive_int("max_batches", 0, none_means="all batches")
    with pytest.raises(ValueError, match=r"^epoch=-1; use an integer >= 0$"):
        int_at_least("epoch", -1, 0)


@pytest.mark.parametrize("value", [0, -1.0, math.nan, math.inf, True, None])
def test_finite_number_above(value):
    with pytest.raises(ValueError, match=rf"^t={value!r}; use a finite number > 0$"):
        finite_number("t", value, 0, above=True)
    assert finite_number("t", 2) == 2.0 and finite_number("t", 0) == 0.0


@pytest.mark.parametrize("value", [-0.1, 1.0, math.nan, None, True])
def test_number_in_half_open(value):
    with pytest.raises(ValueError, match=r"^p=.*; use a number in \[0, 1\) \(a dropout rate\)$"):
        number_in("p", value, 0, 1, closed="[)", meaning="a dropout rate")
    assert number_in("p", 0, 0, 1, closed="[)") == 0.0
