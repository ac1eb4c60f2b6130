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


def test_a_checkpoint_of_another_configuration_is_not_used(shared_dir, monkeypatch, capsys):
    from ch04_gpt import GPTConfig, GPTModel
    from ch05_pretrain import save_checkpoint

    monkeypatch.setenv("FAST_DEV_RUN", "1")
    monkeypatch.setenv("CHECKPOINT_DIR", str(shared_dir))
    path = instruction_checkpoint_path("tinystories-fallback-fast")
    other = GPTModel(GPTConfig(vocab_size=50257, context_length=16, emb_dim=8, n_heads=1, n_layers=1))
    save_checkpoint(path, other)
    capsys.readouterr()
    model, _ = get_instruction_model(progress=False)
    assert "another configuration" in capsys.readouterr().out
    assert model.cfg.context_length != 16


def test_the_base_model_comes_from_chapter_5(shared_dir, monkeypatch, capsys):
    """get_instruction_model asks chapter 5's load_base_model for `name` and keys its checkpoint
    by what it got (here the fallback, with the one line saying why)."""
    monkeypatch.setenv("FAST_DEV_RUN", "1")
    monkeypatch.setenv("CHECKPOINT_DIR", str(shared_dir))
    monkeypatch.delenv("GPT2_DIR", raising=False)
    import ch07_instruct.finetune as finetune

    asked = []
    real = finetune.load_base_model
    monkeypatch.setattr(finetune, "load_base_model", lambda name, device: asked.append(name) or real(name, device))
    model, key = get_instruction_model(progress=False)
    assert asked == ["gpt2-medium"] and key == "tinystories-fallback-fast"
    out = capsys.readouterr().out
    assert "Base model: the fast-mode TinyStories fallback model" in out
    assert "gpt2-medium: fast mode takes GPT-2 only from $GPT2_DIR/gpt2-medium/" in out
