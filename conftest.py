"""Fixtures shared by every chapter's tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Student notebooks (`python -m tools.student`, git-ignored) raise NotImplementedError by design: a local
# `pytest` must not execute them; tools/tests/test_grade.py grades them instead.
collect_ignore_glob = ["*_student.ipynb"]


@pytest.fixture(scope="session")
def gpt2_standin_dir(tmp_path_factory):
    """A GPT2_DIR holding `gpt2/`: GPT-2 124M's exact shapes with random weights, written by
    transformers' save_pretrained (tools.gpt2_standins). With it, every chapter takes its GPT-2
    branch offline: OpenAI's weights cannot be downloaded here.

    Where $GPT2_DIR already holds `gpt2/` (the weekly workflow puts OpenAI's real weights there),
    that folder is used instead, so the same tests run the real model."""
    from tools.gpt2_standins import write_standin

    given = os.environ.get("GPT2_DIR", "").strip()
    if given and (Path(given) / "gpt2" / "model.safetensors").is_file():
        return Path(given).resolve()
    root = tmp_path_factory.mktemp("gpt2_dir")
    write_standin(root, "gpt2")
    return root
