"""Bad input to the scripts that save results (pretrain_ddp.py, the fallback cache), issue 9.

Every mistake is refused before any training, in one sentence naming the argument, the value and
what is allowed; a model that trained is never thrown away because it could not be saved.
Everything runs in this process on tiny models; `train` is replaced by a stub wherever the test
only needs to know that training was (or was not) reached.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile

import pytest
import torch

from ch04_gpt import GPTConfig, GPTModel
from ch05_pretrain import fallback, pretrain_ddp
from ch05_pretrain.checkpoint import load_checkpoint, save_checkpoint
from ch05_pretrain.pretrain_ddp import main, parse_args

TINY = ["--n-layers", "1", "--emb-dim", "16", "--n-heads", "2", "--context", "16",
        "--drop-rate", "0", "--batch-size", "4", "--steps", "2", "--eval-every", "1",
        "--eval-batches", "1"]
TEXT = "Once upon a time there was a little cat who liked to sit in the sun. " * 40  # ~650 tokens


class TrainingStarted(Exception):
    """Raised by the stub `train`: the run got past every check."""


@pytest.fixture
def one_process(monkeypatch, tmp_path):
    """A plain process on the CPU (no torchrun), working in tmp_path, with a small text file."""
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DEVICE", "cpu")
    monkeypatch.setenv("CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "story.txt").write_text(TEXT, encoding="utf-8")
    return tmp_path


@pytest.fixture
def no_training(monkeypatch):
    def stub(*args, **kwargs):
        raise TrainingStarted

    monkeypatch.setattr(pretrain_ddp, "train", stub)


def refuse_writes_in(monkeypatch, folder):
    """Make `folder` behave like a read-only folder (as root, chmod would not stop writes)."""
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and os.path.samefile(dir, folder):
            raise PermissionError(13, "Permission denied", str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


# --- pretrain_ddp.py: outputs are checked before the first step ------------------------------

@pytest.mark.parametrize("flag, value, message", [
    ("--checkpoint", "new_folder/", r"--checkpoint 'new_folder/' names a folder; give a file name"),
    ("--checkpoint", ".", r"--checkpoint '\.' names a folder"),
    ("--out", "story.txt/summary.json", r"--out 'story.txt/summary.json' cannot be written: "
                                        r"story.txt is a file, not a folder"),
    ("--checkpoint", "story.txt/runs/ckpt.pt", r"story.txt is a file, not a folder"),
    ("--out", "story.txt", r"--data and --out are the same file"),
])
def test_unwritable_output_is_refused_before_training(one_process, no_training, flag, value,
                                                      message):
    with pytest.raises(ValueError, match=message):
        main(parse_args(["--data", "story.txt", *TINY, flag, value]))
    assert (one_process / "story.txt").read_text(encoding="utf-8") == TEXT


def test_read_only_output_folder_is_refused_before_training(one_process, no_training,
                                                            monkeypatch):
    (one_process / "ro").mkdir()
    refuse_writes_in(monkeypatch, one_process / "ro")
    with pytest.raises(ValueError, match=r"--checkpoint 'ro/ckpt.pt' cannot be written: "
                                         r"ro is not a writable folder \(Permission denied\)"):
        main(parse_args(["--data", "story.txt", *TINY, "--checkpoint", "ro/ckpt.pt"]))


def test_checkpoint_and_out_must_differ(one_process, no_training):
    with pytest.raises(ValueError, match="--checkpoint and --out are the same file"):
        main(parse_args(["--data", "story.txt", *TINY, "--checkpoint", "run.pt",
                         "--out", "./run.pt"]))


def test_writable_outputs_reach_training_and_leave_no_probe(one_process, no_training):
    # Missing folders are fine: saving creates them.
    with pytest.raises(TrainingStarted):
        main(parse_args(["--data", "story.txt", *TINY, "--checkpoint", "runs/a/ckpt.pt",
                         "--out", "summary.json"]))
    assert sorted(p.name for p in one_process.iterdir()) == ["story.txt"]


def test_tiny_run_from_a_local_file_writes_both_outputs(one_process):
    summary = main(parse_args(["--data", "story.txt", *TINY, "--checkpoint", "runs/ckpt.pt",
                               "--out", "runs/summary.json"]))
    saved = json.loads((one_process / "runs" / "summary.json").read_text(encoding="utf-8"))
    assert saved["history"]["step"] == summary["history"]["step"] == [1, 2]
    assert load_checkpoint(one_process / "runs" / "ckpt.pt")["train_state"]["step"] == 2


# --- pretrain_ddp.py: --data ------------------------------------------------------------------

def test_missing_data_file_is_no_such_file(one_process, no_training):
    with pytest.raises(FileNotFoundError, match=r"--data 'nope\.txt': no such file: .*nope\.txt; "
                                                r"give a text file or one of the data sets "
                                                r".*the-verdict\.txt"):
        main(parse_args(["--data", "nope.txt", *TINY]))


def test_data_folder_and_binary_file_are_named(one_process, no_training):
    with pytest.raises(ValueError, match=r"--data '\.' is a folder; give a text file"):
        main(parse_args(["--data", ".", *TINY]))
    (one_process / "weights.bin").write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ValueError, match=r"--data 'weights\.bin' is not UTF-8 text \(byte 128\)"):
        main(parse_args(["--data", "weights.bin", *TINY]))


def test_text_too_short_names_context_and_batch_size(one_process, no_training):
    with pytest.raises(ValueError, match=r"--context 4096 is too long for the training text"):
        main(parse_args(["--data", "story.txt", *TINY, "--context", "4096"]))
    with pytest.raises(ValueError, match=r"--context 64 is too long for the validation text .*"
                                         r"or a larger --val-fraction"):
        main(parse_args(["--data", "story.txt", *TINY, "--context", "64",
                         "--val-fraction", "0.01"]))
    with pytest.raises(ValueError, match=r"--batch-size 64 is larger than the \d+ training "
                                         r"windows of --context 16 tokens"):
        main(parse_args(["--data", "story.txt", *TINY, "--batch-size", "64"]))


# --- pretrain_ddp.py: numbers are checked by argparse ----------------------------------------

WHOLE, COUNT = "a whole number >= 1", "a whole number >= 0"
FRACTION = "a number strictly between 0 and 1, the share of the text held out"


@pytest.mark.parametrize("flag, value, allowed", [
    ("--val-fraction", "1.5", FRACTION),
    ("--val-fraction", "1", FRACTION),
    ("--val-fraction", "0", FRACTION),
    ("--val-fraction", "-0.1", FRACTION),
    ("--val-fraction", "nan", FRACTION),
    ("--steps", "0", WHOLE),
    ("--batch-size", "0", WHOLE),
    ("--grad-accum", "0", WHOLE),
    ("--context", "-16", WHOLE),
    ("--n-layers", "0", WHOLE),
    ("--emb-dim", "0", WHOLE),
    ("--n-heads", "-2", WHOLE),
    ("--eval-every", "0", WHOLE),
    ("--eval-batches", "0", WHOLE),
    ("--checkpoint-every", "0", WHOLE),
    ("--warmup-steps", "-1", COUNT),
    ("--lr", "0", "a finite number > 0"),
    ("--lr", "-0.001", "a finite number > 0"),
    ("--lr", "inf", "a finite number > 0"),
    ("--weight-decay", "-0.1", "a finite number >= 0"),
    ("--weight-decay", "nan", "a finite number >= 0"),
    ("--drop-rate", "1", "a probability from 0 up to (not including) 1"),
    ("--drop-rate", "-0.1", "a probability from 0 up to (not including) 1"),
    ("--seed", "-1", "a whole number from 0 to 2**32 - 1"),
])
def test_invalid_number_is_refused_in_one_sentence(capsys, flag, value, allowed):
    with pytest.raises(SystemExit) as exit_info:
        parse_args([*TINY, flag, value])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after argparse's usage lines
    assert error.endswith(f" error: argument {flag}: got {value}; use {allowed}")


def test_text_for_a_number_is_quoted(capsys):
    with pytest.raises(SystemExit):
        parse_args([*TINY, "--steps", "ten"])
    assert capsys.readouterr().err.strip().endswith(
        f"argument --steps: got 'ten'; use {WHOLE}")


@pytest.mark.parametrize("argv, message", [
    ([*TINY, "--resume"], "--resume needs --checkpoint FILE"),
    ([*TINY, "--checkpoint-every", "5"], "--checkpoint-every needs --checkpoint FILE"),
    ([*TINY, "--n-heads", "3"], "--n-heads 3 does not divide --emb-dim 16"),
    (["--emb-dim", "100"], "--n-heads 12 does not divide --emb-dim 100 (with --preset gpt2)"),
])
def test_invalid_combination_is_refused(capsys, argv, message):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert message in capsys.readouterr().err


def test_valid_numbers_pass_unchanged():
    args = parse_args([*TINY, "--val-fraction", "0.2", "--lr", "1e-3", "--warmup-steps", "0",
                       "--weight-decay", "0", "--drop-rate", "0.1", "--seed", "0"])
    assert (args.val_fraction, args.lr, args.warmup_steps, args.weight_decay, args.drop_rate,
            args.seed, args.steps, args.batch_size) == (0.2, 1e-3, 0, 0.0, 0.1, 0, 2, 4)


# --- the fallback cache -----------------------------------------------------------------------

TINY_RECIPE = dataclasses.replace(
    fallback.FAST, file_name="tiny-test-fallback.pt",
    cfg=GPTConfig(vocab_size=64, context_length=8, emb_dim=16, n_heads=2, n_layers=1,
                  drop_rate=0.0),
)


@pytest.fixture
def tiny_fallback(monkeypatch, tmp_path):
    """FAST_DEV_RUN with a tiny recipe whose "training" only builds a model; lists the calls."""
    monkeypatch.setenv("FAST_DEV_RUN", "1")
    monkeypatch.setenv("CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    monkeypatch.setattr(fallback, "FAST", TINY_RECIPE)
    calls = []

    def train_fallback(recipe, device, verbose=True):
        calls.append(recipe)
        torch.manual_seed(len(calls))
        info = {"recipe": dataclasses.asdict(recipe), "train_loss": 3.0, "val_loss": 3.5,
                "val_perplexity": 33.1, "train_seconds": 60.0, "tokens_per_second": 1000.0}
        return GPTModel(recipe.cfg).eval(), info

    monkeypatch.setattr(fallback, "train_fallback", train_fallback)
    return calls


def test_unwritable_cache_folder_warns_first_and_still_returns_the_model(
        tiny_fallback, monkeypatch, tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder", encoding="utf-8")
    folder = tmp_path / "a-file" / "checkpoints"
    monkeypatch.setenv("CHECKPOINT_DIR", str(folder))
    seen_before_training = []
    train = fallback.train_fallback

    def train_fallback(*args, **kwargs):
        seen_before_training.append(capsys.readouterr().err)
        return train(*args, **kwargs)

    monkeypatch.setattr(fallback, "train_fallback", train_fallback)
    model, info = fallback.get_fallback_model(verbose=False)
    assert isinstance(model, GPTModel) and len(tiny_fallback) == 1
    assert info["path"] is None and not info["from_cache"]
    [warning] = seen_before_training[0].strip().splitlines()  # one line, before training
    assert warning.startswith(f"Warning: the fallback model cannot be cached at "
                              f"{folder / TINY_RECIPE.file_name} ")
    assert "is a file, not a folder" in warning and "CHECKPOINT_DIR" in warning


def test_read_only_cache_folder_warns_and_still_returns_the_model(tiny_fallback, monkeypatch,
                                                                  tmp_path, capsys):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    refuse_writes_in(monkeypatch, folder)
    model, info = fallback.get_fallback_model(verbose=False)
    assert isinstance(model, GPTModel) and info["path"] is None
    [warning] = capsys.readouterr().err.strip().splitlines()
    assert "not a writable folder (Permission denied)" in warning
    assert str(folder) in warning and "CHECKPOINT_DIR" in warning
    assert list(folder.iterdir()) == []


def test_failing_save_after_training_keeps_the_model(tiny_fallback, monkeypatch, capsys):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fallback, "save_checkpoint", disk_full)
    model, info = fallback.get_fallback_model(verbose=False)
    assert isinstance(model, GPTModel) and info["path"] is None and len(tiny_fallback) == 1
    [warning] = capsys.readouterr().err.strip().splitlines()
    assert warning.startswith("Warning: the fallback model could not be cached at ")
    assert "(OSError: [Errno 28] No space left on device); returning it uncached" in warning
    assert "CHECKPOINT_DIR" in warning


def _truncated(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _wrong_shapes(path):
    other = GPTModel(TINY_RECIPE.cfg.replace(emb_dim=32))
    save_checkpoint(path, other, info={"recipe": dataclasses.asdict(TINY_RECIPE)})


@pytest.mark.parametrize("corrupt", [
    _truncated,
    lambda path: path.write_bytes(os.urandom(300)),
    lambda path: path.write_bytes(b""),
    lambda path: path.write_text("not a checkpoint\n", encoding="utf-8"),
    lambda path: torch.save([1, 2, 3], path),  # a valid file that is not a checkpoint dict
    _wrong_shapes,
], ids=["truncated", "garbage", "empty", "text", "list", "wrong-shapes"])
def test_corrupt_cache_is_named_and_retrained(tiny_fallback, capsys, tmp_path, corrupt):
    first, _ = fallback.get_fallback_model(verbose=False)
    path = tmp_path / "checkpoints" / TINY_RECIPE.file_name
    corrupt(path)
    capsys.readouterr()
    model, info = fallback.get_fallback_model(verbose=False)
    assert len(tiny_fallback) == 2 and not info["from_cache"] and info["path"] == str(path)
    [warning] = capsys.readouterr().err.strip().splitlines()
    assert warning.startswith(f"Warning: cannot read the cached fallback model {path} (")
    assert warning.endswith("training it again and replacing the file.")
    # The new model replaced the bad file (atomically: no temporary file is left) and loads.
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    again, info = fallback.get_fallback_model(verbose=False)
    assert info["from_cache"] and len(tiny_fallback) == 2
    idx = torch.randint(0, 64, (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(again(idx), model(idx), rtol=0, atol=0)
        assert not torch.equal(again(idx), first(idx))  # the retrained model, not the first
