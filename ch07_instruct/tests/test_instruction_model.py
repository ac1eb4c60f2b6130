"""get_instruction_model: fine-tunes and caches the chapter-7 model once, then loads it."""

import pytest
import torch

from ch07_instruct import get_instruction_model, instruction_checkpoint_path


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("checkpoints")  # the fast fallback model is trained once for both tests


def test_fine_tuned_once_then_loaded(shared_dir, monkeypatch, capsys):
    tmp_path = shared_dir
    monkeypatch.setenv("FAST_DEV_RUN", "1")
    monkeypatch.setenv("CHECKPOINT_DIR", str(tmp_path))
    first, key = get_instruction_model(progress=False)
    assert key == "tinystories-fallback-fast"
    assert "instruction fine-tuning it now" in capsys.readouterr().out
    path = instruction_checkpoint_path(key)
    assert path.is_file() and path.parent == tmp_path

    second, _ = get_instruction_model(progress=False)
    assert "Loaded the chapter-7 model" in capsys.readouterr().out
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


def test_a_corrupt_checkpoint_is_replaced(shared_dir, monkeypatch, capsys):
    monkeypatch.setenv("FAST_DEV_RUN", "1")
    monkeypatch.setenv("CHECKPOINT_DIR", str(shared_dir))
    get_instruction_model(progress=False)  # makes sure the checkpoint exists
    path = instruction_checkpoint_path("tinystories-fallback-fast")
    path.write_bytes(b"not a checkpoint")
    capsys.readouterr()
    model, _ = get_instruction_model(progress=False)
    out = capsys.readouterr().out
    assert "cannot read" in out and "fine-tuning again" in out
    assert path.stat().st_size > 1000 and model is not None
