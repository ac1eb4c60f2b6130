"""Fast mode: one environment variable that shrinks models, data and epochs.

`FAST_DEV_RUN=1` (named after PyTorch Lightning's flag) makes every notebook run in seconds
instead of minutes, so CI can execute all of them. Chapters never read the variable
themselves: they call `fast_dev_run()` or `pick(full=..., fast=...)`.
"""

import os

ENV_VAR = "FAST_DEV_RUN"


def fast_dev_run() -> bool:
    """True when FAST_DEV_RUN is set to 1/true/yes/on (case-insensitive)."""
    return os.environ.get(ENV_VAR, "").strip().lower() in {"1", "true", "yes", "on"}


def pick(full, fast):
    """Return `fast` in fast mode and `full` otherwise, e.g. `epochs = pick(full=10, fast=1)`."""
    return fast if fast_dev_run() else full
