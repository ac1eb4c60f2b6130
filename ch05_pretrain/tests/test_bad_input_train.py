"""Bad input and faults in the training loop, checkpoints and losses (issue 9).

Every rejected input is answered by one sentence naming the argument, the value and what is
allowed; no fault loses the last good checkpoint or writes one that cannot be loaded.
"""

import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from ch04_gpt import GPTConfig, GPTModel
from ch05_pretrain import losses
from ch05_pretrain.checkpoint import load_checkpoint, save_checkpoint
from ch05_pretrain.losses import IGNORE_INDEX, evaluate, lm_loss
from ch05_pretrain.train import lr_factor, train

V, T = 40, 8
TINY = GPTConfig(vocab_size=V, context_length=T, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)


def make_data(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(0, V, (n, T + 1), generator=g)
    return TensorDataset(seq[:, :-1], seq[:, 1:])


def make_model(cfg=TINY, seed=0):
    torch.manual_seed(seed)
    return GPTModel(cfg)


def params_of(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def masked(batch):
    """The same batch with every target -100: nothing in it counts."""
    x, y = batch
    return x, torch.full_like(y, IGNORE_INDEX)


def fit(model, loader, **kw):
    """Plain SGD at a constant rate, no clipping: parameters are easy to compare across runs."""
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    kw = {"lr_schedule": "constant", "max_grad_norm": None, "progress": False, **kw}
    return train(model, opt, loader, lm_loss, **kw)


# Finding 1: a NaN gradient with a finite loss never reaches the weights nor a checkpoint.

def test_nan_gradient_is_refused_without_clipping_and_last_checkpoint_stays_good(tmp_path):
    calls = []

    def nan_grad_from_step_3(m, batch):
        calls.append(1)
        loss = lm_loss(m, batch)
        if len(calls) < 3:
            return loss
        w = m.tok_emb.weight[0, 0]
        return loss + 0.0 * torch.sqrt(w - w)  # value finite, gradient 0 * inf = nan

    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = DataLoader(make_data(n=8), batch_size=2)
    path = tmp_path / "c.pt"
    message = r"gradient norm is nan at optimizer step 3 .*loss is finite"
    with pytest.raises(FloatingPointError, match=message):
        train(model, opt, loader, nan_grad_from_step_3, max_grad_norm=None, checkpoint_every=1,
              checkpoint_path=path, progress=False)
    ckpt = load_checkpoint(path)
    assert ckpt["train_state"]["step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    for k, v in model.state_dict().items():  # the refused step changed nothing
        assert torch.equal(v, ckpt["model"][k]), k


# Finding 2: no checkpoint is written that load_checkpoint would refuse.

def test_metric_values_are_stored_as_floats_so_the_checkpoint_loads(tmp_path):
    metrics = {"np": lambda m, loader: np.float64(0.5), "t": lambda m, loader: torch.tensor(0.25),
               "int": lambda m, loader: 3}
    h = fit(make_model(), DataLoader(make_data(n=4), batch_size=2), max_steps=2, eval_every=1,
            metrics=metrics, checkpoint_path=tmp_path / "m.pt")
    assert h["train_np"] == [0.5, 0.5] and h["train_t"] == [0.25, 0.25]
    assert h["train_int"] == [3.0, 3.0]
    assert all(type(v) is float for values in h.metrics.values() for v in values)
    saved = load_checkpoint(tmp_path / "m.pt")["train_state"]["history"]["metrics"]
    assert saved["train_np"] == [0.5, 0.5]


def test_metric_that_is_not_a_number_is_named():
    with pytest.raises(TypeError, match=r"metric 'acc' returned str"):
        fit(make_model(), DataLoader(make_data(n=4), batch_size=2), max_steps=1,
            metrics={"acc": lambda m, loader: "high"})


@pytest.mark.parametrize("value, type_name", [
    (Path("runs/a"), "Path"), ({1, 2}, "set"), (np.float64(1.5), "float64"),
    (torch.__version__, "TorchVersion"),  # a str subclass
])
def test_save_checkpoint_refuses_what_the_loader_refuses_before_writing(tmp_path, value, type_name):
    model = torch.nn.Linear(2, 2)
    message = rf"extra 'info'\['where'\] is a .*{type_name}.*; store only tensors"
    with pytest.raises(TypeError, match=message):
        save_checkpoint(tmp_path / "m.pt", model, info={"where": value, "ok": [1, 2.0, None]})
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary file either


def test_save_checkpoint_removes_stale_temp_files_of_its_own_name(tmp_path):
    old, fresh = tmp_path / "m.pt.tmpab12cd", tmp_path / "m.pt.tmpzz99yy"
    other = tmp_path / "x.pt.tmp1"  # another file's
    for p in (old, fresh, other):
        p.write_bytes(b"left by a killed save")
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))
    os.utime(other, (hour_ago, hour_ago))
    save_checkpoint(tmp_path / "m.pt", torch.nn.Linear(2, 2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", fresh.name, other.name]


def test_save_checkpoint_to_a_folder_is_refused_before_writing(tmp_path):
    with pytest.raises(IsADirectoryError, match=r"is a folder; give a file name inside it"):
        save_checkpoint(tmp_path, torch.nn.Linear(2, 2))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content, expected", [
    (b"hello, I am text\n", r"not a PyTorch file"),
    (b"", r"is empty"),
    (b'{"model": 1}', r"not a PyTorch file"),
])
def test_load_checkpoint_names_the_file_and_what_was_expected(tmp_path, content, expected):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"x\.pt.*{expected}.*save_checkpoint"):
        load_checkpoint(path)


def test_load_checkpoint_refuses_files_that_are_not_checkpoints(tmp_path):
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"list\.pt' holds a list, not a checkpoint"):
        load_checkpoint(tmp_path / "list.pt")
    save_checkpoint(tmp_path / "good.pt", torch.nn.Linear(2, 2))
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.pt' cannot be read as a checkpoint: it is damaged"):
        load_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at this path: .*missing\.pt"):
        load_checkpoint(tmp_path / "missing.pt")


# Finding 5: resume=True without a checkpoint yet still applies the seed.

def test_resume_without_checkpoint_applies_seed(tmp_path):
    histories = []
    for run in range(2):
        model = make_model(TINY.replace(drop_rate=0.3))  # dropout draws from the global RNG
        torch.manual_seed(100 + run)  # whatever state the process is in
        loader = DataLoader(make_data(n=8), batch_size=2, shuffle=True)
        histories.append(fit(model, loader, max_steps=3, eval_every=1, seed=42, resume=True,
                             checkpoint_path=tmp_path / f"run{run}.pt"))
    assert histories[0].train_loss == histories[1].train_loss


# Finding 6: resuming into another setup is refused before any step, saying what differs.

@pytest.fixture
def adamw_checkpoint(tmp_path):
    """A checkpoint after 2 AdamW steps at lr 1e-3 over 4 batches of 2, grad_accum_steps 1."""
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    path = tmp_path / "r.pt"
    train(model, opt, DataLoader(make_data(n=8), batch_size=2), lm_loss, max_steps=2,
          eval_every=1, lr_schedule="constant", checkpoint_path=path, progress=False)
    return path


@pytest.mark.parametrize("change, message", [
    ({"n": 4}, r"train_loader has 2 batches per epoch but checkpoint .* was saved with 4"),
    ({"n": 14}, r"train_loader has 7 batches per epoch but checkpoint .* was saved with 4"),
    ({"opt": "sgd"}, r"the optimizer is SGD but checkpoint .* was trained with AdamW"),
    ({"accum": 2}, r"grad_accum_steps=2 but checkpoint .* was saved with grad_accum_steps=1"),
    ({"steps": 1}, r"checkpoint .* is at step 2, past this run's 1 steps"),
])
def test_resume_into_a_different_setup_is_refused_before_any_step(adamw_checkpoint, change,
                                                                  message):
    model = make_model(seed=5)
    before = params_of(model)
    opt = (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if change.get("opt") == "sgd"
           else torch.optim.AdamW(model.parameters(), lr=1e-3))
    loader = DataLoader(make_data(n=change.get("n", 8)), batch_size=2)
    with pytest.raises(ValueError, match=message):
        train(model, opt, loader, lm_loss, max_steps=change.get("steps", 4),
              grad_accum_steps=change.get("accum", 1), checkpoint_path=adamw_checkpoint,
              resume=True, progress=False)
    for k, v in before.items():  # refused at load time: neither checkpoint nor step touched it
        assert torch.equal(v, model.state_dict()[k]), k


def test_resume_from_checkpoint_without_training_state_is_refused(tmp_path):
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    save_checkpoint(tmp_path / "final.pt", model, opt, info={"note": "a finished model"})
    with pytest.raises(ValueError, match=r"final\.pt' holds no training state .*resume=False"):
        train(model, opt, DataLoader(make_data(), batch_size=2), lm_loss,
              checkpoint_path=tmp_path / "final.pt", resume=True, progress=False)


def test_resume_keeps_the_callers_learning_rate_and_says_so(adamw_checkpoint, capsys):
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)  # the checkpoint's run used 1e-3
    h = train(model, opt, DataLoader(make_data(n=8), batch_size=2), lm_loss, max_steps=4,
              eval_every=1, lr_schedule="constant", checkpoint_path=adamw_checkpoint, resume=True,
              progress=False)
    assert h.lr == pytest.approx([1e-3, 1e-3, 2e-3, 2e-3])  # steps 1-2 from the checkpoint
    assert opt.param_groups[0]["initial_lr"] == 2e-3
    out = capsys.readouterr().out
    assert "learning rate 0.002" in out and "0.001" in out


def test_loader_shorter_than_its_len_is_named_not_a_bare_stopiteration():
    class Lying:
        """Claims 4 batches, yields 2."""

        def __len__(self):
            return 4

        def __iter__(self):
            return iter(list(DataLoader(make_data(n=4), batch_size=2)))

    message = r"train_loader ended after 2 batches in epoch 1, but len\(train_loader\) is 4"
    with pytest.raises(ValueError, match=message):
        fit(make_model(), Lying(), epochs=1)


# Finding 7: a batch whose targets are all -100 is not divergence.

def test_lm_loss_and_evaluate_say_when_no_target_counts():
    model = make_model()
    batch = next(iter(DataLoader(make_data(n=2), batch_size=2)))
    with pytest.raises(losses.NoTargetsError, match=r"no counted targets: all 16 targets are -100"):
        lm_loss(model, masked(batch))
    assert issubclass(losses.NoTargetsError, ValueError)
    model.eval()
    assert evaluate(model, [batch, masked(batch)]) == pytest.approx(lm_loss(model, batch).item())
    with pytest.raises(losses.NoTargetsError, match=r"none of the 2 evaluated batches"):
        evaluate(model, [masked(batch), masked(batch)])


def test_train_skips_micro_batches_without_counted_targets(capsys):
    a, b, c = list(DataLoader(make_data(n=6), batch_size=2))
    # One step per batch: the masked step changes nothing and counts no tokens.
    model_skip, model_ref = make_model(), make_model()
    h = fit(model_skip, [a, masked(b), c], epochs=1, eval_every=1)
    fit(model_ref, [a, c], epochs=1)
    assert h.step == [1, 2, 3] and h.tokens_seen == [2 * T, 2 * T, 4 * T]
    assert math.isnan(h.train_loss[1]) and not math.isnan(h.train_loss[2])  # step 2: no loss
    assert "skipped 1 micro-batch" in capsys.readouterr().out
    # Two micro-batches per step, one masked: the other counts fully (weight 1, not 1/2).
    model_accum, model_one = make_model(), make_model()
    fit(model_accum, [a, masked(b)], grad_accum_steps=2)
    fit(model_one, [a])
    for k, v in params_of(model_one).items():
        torch.testing.assert_close(model_accum.state_dict()[k], v, rtol=0, atol=1e-6)
    for k, v in params_of(model_ref).items():
        torch.testing.assert_close(model_skip.state_dict()[k], v, rtol=0, atol=1e-6)


def test_train_refuses_a_run_where_nothing_counted():
    a, b = list(DataLoader(make_data(n=4), batch_size=2))
    with pytest.raises(losses.NoTargetsError, match=r"none of the 2 micro-batches .*every target"):
        fit(make_model(), [masked(a), masked(b)])


# Finding 8 and the checkpoint destination: refused up front, before any step.

@pytest.mark.parametrize("kw, name", [
    ({"min_lr_ratio": -1.0}, "min_lr_ratio"), ({"min_lr_ratio": 5.0}, "min_lr_ratio"),
    ({"min_lr_ratio": float("nan")}, "min_lr_ratio"), ({"warmup_steps": -1}, "warmup_steps"),
    ({"epochs": 0}, "epochs"), ({"max_steps": 0}, "max_steps"), ({"eval_every": 0}, "eval_every"),
    ({"eval_batches": 0}, "eval_batches"), ({"grad_accum_steps": 0}, "grad_accum_steps"),
    ({"max_grad_norm": 0.0}, "max_grad_norm"), ({"max_grad_norm": -1.0}, "max_grad_norm"),
    ({"max_grad_norm": float("inf")}, "max_grad_norm"),
    ({"max_grad_norm": float("nan")}, "max_grad_norm"),
    ({"checkpoint_every": 0, "checkpoint_path": "unused.pt"}, "checkpoint_every"),
    ({"checkpoint_every": 2}, "checkpoint_every"), ({"epochs": 1.5}, "epochs"),
])
def test_bad_settings_are_refused_in_one_sentence_before_any_step(kw, name):
    model = make_model()
    before = params_of(model)
    with pytest.raises(ValueError, match=rf"^{name}=.*; "):
        fit(model, DataLoader(make_data(n=4), batch_size=2), **kw)
    for k, v in before.items():
        assert torch.equal(v, model.state_dict()[k])


def test_lr_factor_validates_the_schedule():
    with pytest.raises(ValueError, match=r"min_lr_ratio=-1; use a number in \[0, 1\]"):
        lr_factor(0, 10, min_lr_ratio=-1)
    with pytest.raises(ValueError, match=r"warmup_steps=-2; use an integer >= 0"):
        lr_factor(0, 10, warmup_steps=-2)
    assert lr_factor(4, 10, warmup_steps=20) == pytest.approx(0.25)  # longer than the run: allowed


@pytest.mark.parametrize("where, error", [
    ("folder", IsADirectoryError), ("under_file", NotADirectoryError), ("slash", IsADirectoryError),
])
def test_unusable_checkpoint_path_is_refused_before_any_step(tmp_path, where, error):
    (tmp_path / "a_file").write_text("x", encoding="utf-8")
    path = {"folder": tmp_path, "under_file": tmp_path / "a_file" / "m.pt",
            "slash": str(tmp_path / "new_folder") + "/"}[where]
    calls = []

    def counting_loss(m, batch):
        calls.append(1)
        return lm_loss(m, batch)

    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(error, match=r"checkpoint_path="):
        train(model, opt, DataLoader(make_data(n=4), batch_size=2), counting_loss,
              checkpoint_path=path, progress=False)
    assert calls == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_checkpoint_folder_is_refused_before_any_step(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match=r"checkpoint_path=.*cannot be written"):
            fit(make_model(), DataLoader(make_data(n=4), batch_size=2),
                checkpoint_path=folder / "m.pt")
    finally:
        folder.chmod(0o700)


@pytest.mark.parametrize("val_loader", [[], DataLoader(make_data(n=1), batch_size=2, drop_last=True)])
def test_an_empty_val_loader_is_refused_not_recorded_as_nan(val_loader):
    model = make_model()
    before = params_of(model)
    with pytest.raises(ValueError, match=r"val_loader has no batches \(len 0\).*val_loader=None"):
        fit(model, DataLoader(make_data(n=4), batch_size=2), max_steps=2, eval_every=1,
            val_loader=val_loader)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # refused first
