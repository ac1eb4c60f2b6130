import pytest

from ch05_pretrain.spread import (accuracy_interval, beyond_spread, bootstrap_interval, paired_bootstrap,
                                  seed_spread)


def test_seed_spread_is_the_sample_standard_deviation():
    s = seed_spread([1.0, 2.0, 3.0])
    assert s == {"mean": 2.0, "std": 1.0, "min": 1.0, "max": 3.0, "n": 3}
    assert seed_spread([5.0])["std"] == 0.0


def test_bootstrap_interval_contains_the_mean_and_shrinks_with_more_items():
    few = bootstrap_interval([0.0, 1.0] * 10)
    many = bootstrap_interval([0.0, 1.0] * 500)
    assert few[1] < 0.5 < few[2] and many[1] < 0.5 < many[2]
    assert (many[2] - many[1]) < (few[2] - few[1]) / 3  # about 1/sqrt(50) of the width
    assert bootstrap_interval([0.3] * 7) == (pytest.approx(0.3), pytest.approx(0.3), pytest.approx(0.3))


def test_accuracy_interval_is_the_bootstrap_of_right_and_wrong_items():
    low, high = accuracy_interval(0.9, 300)
    assert (low, high) == bootstrap_interval([1.0] * 270 + [0.0] * 30)[1:]
    assert low < 0.9 < high and high - low < 0.08  # about 4 standard errors of 1.7 points
    assert accuracy_interval(1.0, 50) == (1.0, 1.0)


def test_paired_bootstrap_sees_a_consistent_small_gain_that_unpaired_noise_would_hide():
    b = [i % 7 / 7 for i in range(100)]  # scores that vary a lot between items
    a = [x + 0.02 for x in b]  # the same items, each a little better
    r = paired_bootstrap(a, b)
    assert r["diff"] == pytest.approx(0.02) and r["low"] > 0 and r["a_wins"] == 1.0
    assert paired_bootstrap(b, b)["a_wins"] == 0.0


def test_beyond_spread():
    assert beyond_spread(0.05, 0.02) and beyond_spread(-0.05, 0.02) and not beyond_spread(0.01, 0.02)


@pytest.mark.parametrize("call, message", [
    (lambda: seed_spread([]), "values has 0 values"),
    (lambda: bootstrap_interval([1.0], level=95), "level is 95"),
    (lambda: paired_bootstrap([1.0], [1.0, 2.0]), "a has 1 scores and b 2"),
    (lambda: accuracy_interval(93.7, 300), "acc is 93.7"),
    (lambda: accuracy_interval(0.9, 0), "n=0; use an integer >= 1"),
])
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
