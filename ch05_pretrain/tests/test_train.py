"""The training loop: learning, accumulation, schedule, history, NaN guard, exact resume, wrappers."""

import json
import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from ch02_data import seeded_loader
from ch04_gpt import GPTConfig, GPTModel
from ch05_pretrain.checkpoint import load_checkpoint
from ch05_pretrain.losses import evaluate, lm_loss
from ch05_pretrain.train import History, lr_factor, train

V, T = 40, 8
TINY = GPTConfig(vocab_size=V, context_length=T, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)


def make_data(n=24, seed=0):
    """n windows of T tokens from a random sequence, as (inputs, targets) shifted by one."""
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(0, V, (n, T + 1), generator=g)
    return TensorDataset(seq[:, :-1], seq[:, 1:])


def make_model(cfg=TINY, seed=0):
    torch.manual_seed(seed)
    return GPTModel(cfg)


def params_of(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_loss_falls_on_repeated_text():
    # One fixed batch seen 30 times: a working loop must memorise it.
    model = make_model()
    loader = DataLoader(make_data(n=4), batch_size=4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    h = train(model, opt, loader, lm_loss, val_loader=loader, epochs=30, eval_every=10, progress=False)
    assert h.step == [10, 20, 30]
    assert h.train_loss[0] < math.log(V) + 0.5
    assert h.val_loss[-1] < h.val_loss[0] - 1.0


def test_grad_accumulation_equals_big_batch():
    # 7 micro-batches of 2 with accum 4 -> steps over 8 and 6 samples; the same as batches 8 and 6.
    data = make_data(n=14)
    x, y = data.tensors
    micro = [(x[i : i + 2], y[i : i + 2]) for i in range(0, 14, 2)]
    big = [(x[:8], y[:8]), (x[8:], y[8:])]
    results = []
    for loader, accum in [(micro, 4), (big, 1)]:
        model = make_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        h = train(model, opt, loader, lm_loss, grad_accum_steps=accum, max_grad_norm=None,
                  lr_schedule="constant", eval_every=1, progress=False)
        results.append((params_of(model), h))
    (p_micro, h_micro), (p_big, h_big) = results
    assert h_micro.step == h_big.step == [1, 2]
    assert h_micro.tokens_seen == h_big.tokens_seen == [8 * T, 14 * T]
    for k in p_big:
        torch.testing.assert_close(p_micro[k], p_big[k], atol=1e-6, rtol=0)
    assert not torch.equal(p_big["blocks.0.ff.fc1.weight"], params_of(make_model())["blocks.0.ff.fc1.weight"])


def test_lr_factor_warmup_and_cosine():
    assert lr_factor(0, 100, warmup_steps=10) == pytest.approx(0.1)
    assert lr_factor(4, 100, warmup_steps=10) == pytest.approx(0.5)
    assert lr_factor(10, 100, warmup_steps=10) == pytest.approx(1.0)
    assert lr_factor(55, 100, warmup_steps=10, min_lr_ratio=0.1) == pytest.approx(0.55)  # half way
    assert lr_factor(100, 100, warmup_steps=10, min_lr_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(50, 100, warmup_steps=10, schedule="constant") == 1.0
    factors = [lr_factor(s, 100, warmup_steps=10) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(factors, factors[1:]))  # cosine only decreases
    with pytest.raises(ValueError):
        lr_factor(0, 10, schedule="linear")


def test_train_sets_lr_per_step_from_base_lr():
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = DataLoader(make_data(n=8), batch_size=2)
    h = train(model, opt, loader, lm_loss, epochs=2, warmup_steps=3, min_lr_ratio=0.2,
              eval_every=1, progress=False)
    expected = [1e-3 * lr_factor(s, 8, 3, "cosine", 0.2) for s in range(8)]
    assert h.lr == pytest.approx(expected)
    assert opt.param_groups[0]["initial_lr"] == 1e-3


def test_history_fields_metrics_and_on_eval():
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    train_loader = DataLoader(make_data(n=12), batch_size=3)  # 4 batches per epoch
    val_loader = DataLoader(make_data(n=6, seed=1), batch_size=3)
    calls = []

    def n_batches(model, loader):
        assert not model.training and not torch.is_grad_enabled()
        return float(len(loader))

    h = train(model, opt, train_loader, lm_loss, val_loader=val_loader, max_steps=10, eval_every=4,
              metrics={"nb": n_batches}, on_eval=lambda m, step: calls.append((step, m.training)),
              progress=False)
    assert model.training  # mode restored
    assert h.step == [4, 8, 10]  # every 4 steps and after the last one
    assert calls == [(4, False), (8, False), (10, False)]
    assert h.tokens_seen == [4 * 3 * T, 8 * 3 * T, 10 * 3 * T]
    assert h["val_nb"] == [2.0] * 3 and h["train_nb"] == [4.0] * 3
    for name in ("train_loss", "val_loss", "lr", "elapsed"):
        assert len(h[name]) == 3
    assert h.elapsed == sorted(h.elapsed)
    d = json.loads(json.dumps(h.to_dict()))
    assert History.from_dict(d) == h


def test_nan_loss_raises_before_the_step():
    model = make_model()
    before = params_of(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = DataLoader(make_data(n=4), batch_size=2)

    def nan_loss(model, batch):
        return lm_loss(model, batch) * float("nan")

    with pytest.raises(FloatingPointError, match=r"step 1 .*lower learning rate"):
        train(model, opt, loader, nan_loss, progress=False)
    for k, v in before.items():
        assert torch.equal(v, model.state_dict()[k])


class Crash(RuntimeError):
    pass


def first_batch_loss(model, loader):
    # Iterating the train loader draws from its RNG: resume must account for that too.
    return lm_loss(model, next(iter(loader))).item()


@pytest.mark.parametrize("own_generator", [True, False, "seeded_loader"])
@pytest.mark.parametrize("checkpoint_every", [4, 3])  # mid-epoch, epoch boundary
def test_resume_reproduces_uninterrupted_run_exactly(tmp_path, own_generator, checkpoint_every):
    cfg = TINY.replace(drop_rate=0.2)  # dropout: the RNG state must be restored too
    data = make_data(n=10)

    def setup():
        model = make_model(cfg, seed=1)
        opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
        if own_generator == "seeded_loader":  # the order comes from (seed, epoch) alone
            return model, opt, seeded_loader(data, 2, shuffle=True, seed=7)
        g = torch.Generator().manual_seed(7) if own_generator else None
        loader = DataLoader(data, batch_size=2, shuffle=True, generator=g)  # 5 batches
        return model, opt, loader

    kw = dict(epochs=3, grad_accum_steps=2, warmup_steps=2, eval_every=1, seed=3,
              val_loader=DataLoader(data, batch_size=5), metrics={"first": first_batch_loss},
              checkpoint_every=checkpoint_every, progress=False)  # 3 steps per epoch, 9 in all

    model, opt, loader = setup()
    full = train(model, opt, loader, lm_loss, checkpoint_path=tmp_path / "a.pt", **kw)
    full_params = params_of(model)

    def crash_after(model, step):
        if step == checkpoint_every + 1:  # after the step following the checkpoint
            raise Crash

    model, opt, loader = setup()
    with pytest.raises(Crash):
        train(model, opt, loader, lm_loss, checkpoint_path=tmp_path / "b.pt", on_eval=crash_after, **kw)
    assert load_checkpoint(tmp_path / "b.pt")["train_state"]["step"] == checkpoint_every

    model, opt, loader = setup()
    torch.manual_seed(1234)  # a fresh process would have a different RNG state
    resumed = train(model, opt, loader, lm_loss, checkpoint_path=tmp_path / "b.pt", resume=True, **kw)
    assert resumed.step == full.step == list(range(1, 10))
    assert resumed.train_loss == full.train_loss
    assert resumed.val_loss == full.val_loss
    assert resumed.metrics == full.metrics
    assert resumed.tokens_seen == full.tokens_seen
    for k, v in full_params.items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_resume_of_finished_run_returns_its_history(tmp_path):
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = DataLoader(make_data(n=4), batch_size=2)
    h1 = train(model, opt, loader, lm_loss, epochs=2, checkpoint_path=tmp_path / "c.pt", progress=False)
    h2 = train(model, opt, loader, lm_loss, epochs=2, checkpoint_path=tmp_path / "c.pt", resume=True,
               progress=False)
    assert h2 == h1


def test_compiled_model_saves_unwrapped_state_dict(tmp_path):
    model = make_model()
    compiled = torch.compile(model, backend="eager")  # exercises the wrapper without a C compiler
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = DataLoader(make_data(n=4), batch_size=2)
    train(compiled, opt, loader, lm_loss, checkpoint_path=tmp_path / "m.pt", progress=False)
    keys = load_checkpoint(tmp_path / "m.pt")["model"].keys()
    assert keys == model.state_dict().keys()


def test_ddp_model_uses_no_sync_and_saves_unwrapped(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        model = make_model()
        ddp = DDP(model)
        entered = []
        no_sync = ddp.no_sync
        ddp.no_sync = lambda: (entered.append(1), no_sync())[1]
        opt = torch.optim.AdamW(ddp.parameters(), lr=1e-3)
        loader = DataLoader(make_data(n=6), batch_size=2)  # 3 micro-batches = 1 step
        h = train(ddp, opt, loader, lm_loss, grad_accum_steps=3, checkpoint_path=tmp_path / "d.pt",
                  progress=False)
        assert h.step == [1] and len(entered) == 2  # all but the last micro-batch
        assert load_checkpoint(tmp_path / "d.pt")["model"].keys() == model.state_dict().keys()
    finally:
        dist.destroy_process_group()


def whole_loader_loss(model, loader):
    """A train-set metric that reads the whole loader (a full pass: it would count an epoch)."""
    return sum(lm_loss(model, batch).item() for batch in loader)


@pytest.mark.parametrize("loader_kind", ["seeded", "global"])
def test_evaluation_never_changes_the_batches_training_sees(loader_kind):
    # A peek, another eval_every, a validation loader or a train-set metric: the same batches in
    # the same order, the same dropout masks, so the same weights and the same step losses.
    cfg = TINY.replace(drop_rate=0.2)
    data = make_data(n=10)

    def run(eval_every, peek=False, metrics=None, val=False):
        model = make_model(cfg, seed=1)
        opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
        if loader_kind == "seeded":
            loader = seeded_loader(data, 2, shuffle=True, seed=123)  # 5 batches
        else:  # a plain DataLoader that shuffles from torch's global random state
            loader = DataLoader(data, batch_size=2, shuffle=True)
        if peek:
            next(iter(loader))
        seen = []

        def recording_loss(model, batch):
            if model.training:  # a training batch, not a validation one
                seen.append(batch[0].tolist())
            return lm_loss(model, batch)

        train(model, opt, loader, recording_loss, epochs=3, eval_every=eval_every, seed=3,
              val_loader=DataLoader(data, batch_size=4, shuffle=val) if val else None,
              metrics=metrics, progress=False)
        return seen, params_of(model)

    base_seen, base_params = run(15)
    assert len(base_seen) == 15
    variants = [dict(eval_every=1), dict(eval_every=2, val=True),
                dict(eval_every=1, metrics={"all": whole_loader_loss, "first": first_batch_loss})]
    if loader_kind == "seeded":
        variants.append(dict(eval_every=15, peek=True))
    for kw in variants:
        seen, params = run(**kw)
        assert seen == base_seen, kw
        for k, v in base_params.items():
            assert torch.equal(v, params[k]), (kw, k)


def test_evaluate_on_the_training_loader_keeps_its_order():
    # Chapter 5 measures the untrained loss on the training loader, then runs its own loop
    # (`for batch in loader`) and `train` on it: both must see epoch 0 first.
    data = make_data(n=10)
    fresh, evaluated = seeded_loader(data, 2, shuffle=True, seed=7), seeded_loader(data, 2, shuffle=True, seed=7)
    evaluate(make_model(), evaluated)  # a full pass
    for _ in range(2):  # two epochs of a plain loop
        assert [b[0].tolist() for b in fresh] == [b[0].tolist() for b in evaluated]
