"""DPO inside chapter 5's `train` on a tiny GPT: the policy learns, the reference stays frozen;
metrics, precomputed reference log-probs, skipped batches, and the offline GPT-2 path."""

import math

import pytest
import torch

from bonus_dpo import (
    METRIC_NAMES,
    DPOLoss,
    PreferenceDataset,
    dpo_metrics,
    make_preference_loader,
    policy_and_reference,
    precompute_reference_logps,
    preference_collate,
    preference_stats,
)
from ch02_data import gpt2_encoding
from ch04_gpt import GPTConfig, GPTModel
from ch05_pretrain import NoTargetsError, evaluate, load_gpt2, train

TOK = gpt2_encoding()
WORDS = ("apples rivers clocks tigers violins deserts bridges comets lanterns harbors pencils "
         "glaciers owls meadows rockets castles").split()
ENTRIES = [{"instruction": f"Describe {w}.", "input": "", "chosen": f"{w.capitalize()}: lovely.",
            "rejected": f"Stupid {w}!"} for w in WORDS]  # 16 pairs: polite chosen, rude rejected


def tiny_gpt(seed: int = 0) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(GPTConfig(vocab_size=50257, context_length=64, emb_dim=16, n_heads=2,
                              n_layers=1, drop_rate=0.0))


@pytest.fixture(scope="module")
def dataset():
    return PreferenceDataset(ENTRIES, TOK, style="phi3", max_length=64)  # short prompts: fast


def perturbed_pair(seed: int = 0):
    """(policy, reference) where the policy already differs from the reference a little."""
    policy, reference = policy_and_reference(tiny_gpt(seed))
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return policy, reference


def test_policy_and_reference_gives_a_frozen_independent_copy():
    model = tiny_gpt().train()
    policy, reference = policy_and_reference(model)
    assert policy is model and policy.training and all(p.requires_grad for p in policy.parameters())
    assert not reference.training and not any(p.requires_grad for p in reference.parameters())
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(policy(ids), reference(ids))
    with torch.no_grad():
        policy.tok_emb.weight.add_(1.0)
    assert not torch.equal(policy(ids), reference(ids))  # no shared storage


def test_dpo_in_chapter_5_train_moves_the_policy_and_not_the_reference(dataset):
    policy, reference = policy_and_reference(tiny_gpt())
    ref_before = {k: v.clone() for k, v in reference.state_dict().items()}
    policy_before = {k: v.clone() for k, v in policy.state_dict().items()}
    loader = make_preference_loader(dataset, batch_size=8, shuffle=True)

    history = train(policy, torch.optim.AdamW(policy.parameters(), lr=3e-2), loader,
                    DPOLoss(reference), epochs=1, eval_every=1, progress=False,
                    metrics=dpo_metrics(reference))  # 2 steps, metrics after each

    assert all(not torch.equal(policy_before[k], v) for k, v in policy.state_dict().items()
               if k.endswith("weight"))
    assert all(torch.equal(ref_before[k], v) for k, v in reference.state_dict().items())
    assert all(p.grad is None and not p.requires_grad for p in reference.parameters())
    assert set(history.metrics) == {f"train_{name}" for name in METRIC_NAMES}
    # Step 1 starts with policy = reference: every reward is 0, so the loss is exactly log 2.
    assert history.train_loss[0] == pytest.approx(math.log(2))
    assert history.train_loss[1] < math.log(2) - 0.05
    margins = history["train_margin"]
    assert 0 < margins[0] < margins[1]
    assert history["train_pref_acc"][-1] > 0.5


@pytest.mark.parametrize("average", [False, True])
def test_precomputed_reference_logps_give_the_live_loss(dataset, average):
    policy, reference = perturbed_pair()
    window = len(dataset[0]["prompt"]) + 3  # cuts most responses: truncation must agree
    items = [dict(item) for item in dataset]  # copies: the module's dataset stays clean
    precompute_reference_logps(reference, items, batch_size=5, max_length=window)
    batch = preference_collate(items[:8], max_length=window)
    assert "ref_chosen_logps" in batch
    live = DPOLoss(reference, beta=0.5, average=average)(policy, {k: v for k, v in batch.items()
                                                                   if not k.startswith("ref_")})
    stored = DPOLoss(None, beta=0.5, average=average)(policy, batch)  # no reference needed
    assert stored.item() == pytest.approx(live.item(), rel=1e-5)
    assert live.item() != pytest.approx(math.log(2), abs=1e-4)  # the comparison is not trivial


def test_the_reference_runs_without_gradients_even_if_unfrozen_later(dataset):
    policy, reference = perturbed_pair()
    loss_fn = DPOLoss(reference)
    assert not reference.training and not any(p.requires_grad for p in reference.parameters())
    reference.requires_grad_(True).train()  # someone undoes the freezing
    batch = preference_collate([dataset[0], dataset[1]])
    ref_chosen, ref_rejected = loss_fn.reference_logps(policy, batch)
    assert not ref_chosen.requires_grad and not ref_rejected.requires_grad
    assert not reference.training  # put back in eval mode: no dropout in the reference
    loss_fn(policy, batch).backward()
    assert all(p.grad is None for p in reference.parameters())


def test_a_loss_without_reference_or_stored_logps_is_refused(dataset):
    batch = preference_collate([dataset[0]])
    with pytest.raises(ValueError, match="carries no 'ref_chosen_logps'"):
        DPOLoss(None)(tiny_gpt(), batch)


def test_a_reference_sharing_the_policys_weights_is_refused(dataset):
    model = tiny_gpt()
    batch = preference_collate([dataset[0]])
    with pytest.raises(ValueError, match="shares its parameters with the reference"):
        DPOLoss(model)(model, batch)


def test_metrics_share_one_pass_and_restore_the_mode(dataset):
    policy, reference = perturbed_pair()
    policy.train()
    loader = make_preference_loader(dataset.items[:6], batch_size=3)
    calls = []
    reference.register_forward_hook(lambda *args: calls.append(1))
    metrics = dpo_metrics(reference, beta=0.1)
    values = {name: fn(policy, loader) for name, fn in metrics.items()}
    assert len(calls) == len(loader)  # four metrics, one pass
    assert policy.training
    stats = preference_stats(policy, loader, reference)
    assert values == {name: pytest.approx(stats[name]) for name in METRIC_NAMES}
    assert values["margin"] == pytest.approx(values["chosen_reward"] - values["rejected_reward"])
    calls.clear()
    with torch.no_grad():
        policy.out_head.weight.mul_(1.5)  # what an optimizer step does: new weights, new values
    assert metrics["margin"](policy, loader) != pytest.approx(values["margin"])
    assert len(calls) == len(loader)
    with pytest.raises(ValueError, match="max_batches=0"):
        dpo_metrics(reference, max_batches=0)


def test_train_skips_a_batch_whose_pairs_were_all_dropped(dataset, capsys):
    policy, reference = policy_and_reference(tiny_gpt())
    window = len(dataset[0]["prompt"])  # prompts fill the window: every pair dropped
    empty = preference_collate([dataset[0], dataset[1]], max_length=window)
    good = preference_collate([dataset[2], dataset[3]])
    assert empty["chosen"].shape[0] == 0 and empty["dropped"] == 2
    before = policy.tok_emb.weight.clone()
    train(policy, torch.optim.AdamW(policy.parameters(), lr=1e-2), [empty, good],
          DPOLoss(reference), epochs=1, eval_every=None, progress=False)
    assert "skipped 1 micro-batch of 2" in capsys.readouterr().out
    assert not torch.equal(before, policy.tok_emb.weight)
    with pytest.raises(NoTargetsError, match="none of the 1 evaluated batches"):
        evaluate(policy, [empty], DPOLoss(reference))


def test_a_run_whose_pairs_were_all_dropped_keeps_the_hint_to_raise_max_length(dataset):
    policy, reference = policy_and_reference(tiny_gpt())
    window = len(dataset[0]["prompt"])
    empty = preference_collate([dataset[0], dataset[1]], max_length=window)
    with pytest.raises(NoTargetsError, match=r"every target was -100.*raise max_length"):
        train(policy, torch.optim.AdamW(policy.parameters(), lr=1e-2), [empty, empty],
              DPOLoss(reference), epochs=1, eval_every=None, progress=False)


def test_offline_gpt2_path_through_a_transformers_checkpoint(tmp_path):
    """The notebook's path: a GPT-2 folder written by transformers, loaded with load_gpt2,
    copied into policy and reference, two DPO steps with chapter 5's train."""
    transformers = pytest.importorskip("transformers")
    hf_cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=128, vocab_size=50257)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(hf_cfg).save_pretrained(tmp_path, safe_serialization=True)
    policy, reference = policy_and_reference(load_gpt2(tmp_path))
    window = policy.cfg.context_length
    ds = PreferenceDataset(ENTRIES[:4], TOK, max_length=window)  # alpaca prompts, as the book
    loader = make_preference_loader(ds, batch_size=2, shuffle=True, max_length=window)
    before = {k: v.clone() for k, v in policy.blocks[0].state_dict().items()}
    history = train(policy, torch.optim.AdamW(policy.parameters(), lr=1e-3), loader,
                    DPOLoss(reference, average=True), max_steps=2, eval_every=2, progress=False,
                    metrics=dpo_metrics(reference, average=True, max_batches=1))
    assert math.isfinite(history.train_loss[-1]) and math.isfinite(history["train_margin"][-1])
    assert any(not torch.equal(before[k], v) for k, v in policy.blocks[0].state_dict().items())


def test_the_policy_starts_without_dropout(tmp_path):
    """GPT-2's config carries dropout 0.1; policy_and_reference switches it off, so the policy in
    train mode computes exactly the reference's log-probabilities at step 0 (loss log 2)."""
    transformers = pytest.importorskip("transformers")
    hf_cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=128, vocab_size=50257)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(hf_cfg).save_pretrained(tmp_path, safe_serialization=True)
    model = load_gpt2(tmp_path)
    assert model.cfg.drop_rate == 0.1  # what the file says
    policy, reference = policy_and_reference(model)
    assert policy.cfg.drop_rate == 0.0 and reference.cfg.drop_rate == 0.0
    ds = PreferenceDataset(ENTRIES[:4], TOK, max_length=policy.cfg.context_length)
    batch = next(iter(make_preference_loader(ds, batch_size=4, shuffle=False, max_length=policy.cfg.context_length)))
    policy.train()
    torch.manual_seed(1)
    assert DPOLoss(reference)(policy, batch).item() == pytest.approx(math.log(2), abs=1e-6)
