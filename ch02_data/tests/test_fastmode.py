"""Fast mode: CI must use it, and `pick` must follow the environment variable."""

import os

import pytest

from ch02_data import fast_dev_run, pick


def test_ci_runs_in_fast_mode():
    # Fails on purpose when CI forgets FAST_DEV_RUN=1: every notebook would run in full mode.
    if os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}:
        assert fast_dev_run(), "CI is set but FAST_DEV_RUN is not on: export FAST_DEV_RUN=1"


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "Yes", " on "])
def test_fast_values(monkeypatch, value):
    monkeypatch.setenv("FAST_DEV_RUN", value)
    assert fast_dev_run()
    assert pick(full=10, fast=1) == 1


@pytest.mark.parametrize("value", [None, "", "0", "false", "off", "no", "2"])
def test_full_values(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("FAST_DEV_RUN", raising=False)
    else:
        monkeypatch.setenv("FAST_DEV_RUN", value)
    assert not fast_dev_run()
    assert pick(full=10, fast=1) == 10


def test_pick_returns_objects_unchanged(monkeypatch):
    full, fast = {"epochs": 10}, None
    monkeypatch.setenv("FAST_DEV_RUN", "1")
    assert pick(full, fast) is fast
    monkeypatch.setenv("FAST_DEV_RUN", "0")
    assert pick(full, fast) is full
