"""The DPO bonus's recipe for the fallback: politeness and ROUGE-L of greedy answers, before and after.

    python benchmarks/sweep_dpo_fallback.py --sft run.pt --lr 3e-4 --sft-weight 1.0 --out dpo.json

Starts from a chapter-7 model (weights from benchmarks/sweep_ch07_fallback.py), trains DPO on the
distinct training pairs for --epochs with chapter 5's `fine_tune` (`DPOLoss` with the reference
frozen, optionally the SFT term of `sft_weight`), and measures on the validation prompts (--split
val, the default
the test prompts stay out of the choice): the mean politeness of the greedy
answers (`bonus_dpo.politeness_scorer`, trained on the training pairs), their ROUGE-L against
chapter 7's reference answers, and DPO's statistics. The rows of
benchmarks/results/dpo_fallback_sweep.csv come from it (2026-12-06).
"""
import argparse
import copy
import json
import time
import statistics
import torch
from ch02_data import gpt2_encoding
from ch05_pretrain import Recipe, fine_tune, get_fallback_model
from ch07_instruct import generate_responses, rouge_l
from bonus_dpo import (DPOLoss, PreferenceDataset, distinct_pairs, load_preference_data, make_preference_loader,
                       policy_and_reference, politeness_scorer, split_preference, preference_stats)

ap = argparse.ArgumentParser()
ap.add_argument("--sft", required=True)
ap.add_argument("--lr", type=float, default=1e-4)
ap.add_argument("--epochs", type=int, default=1)
ap.add_argument("--beta", type=float, default=0.1)
ap.add_argument("--sft-weight", type=float, default=0.0)
ap.add_argument("--seed", type=int, default=123)
ap.add_argument("--split", default="val")
ap.add_argument("--out", required=True)
a = ap.parse_args()
torch.set_num_threads(1)
tok = gpt2_encoding()
tr, va, test_entries = split_preference(load_preference_data())
evalset = va if a.split == "val" else test_entries
scorer = politeness_scorer(tr)
base, _ = get_fallback_model()
model = copy.deepcopy(base)
model.load_state_dict(torch.load(a.sft, weights_only=True))
policy, reference = policy_and_reference(model)
window = policy.cfg.context_length
t0 = time.time()
before = generate_responses(reference, evalset, max_new_tokens=128, progress=False)
train_ds = PreferenceDataset(distinct_pairs(tr), tok)
loader = make_preference_loader(train_ds, 8, shuffle=True, drop_last=True, seed=a.seed, max_length=window)
loss = DPOLoss(reference, a.beta, fast=True, sft_weight=a.sft_weight)
hist = fine_tune(policy, loader, recipe=Recipe(lr=a.lr, epochs=a.epochs, weight_decay=0.01, seed=a.seed), loss_fn=loss, progress=False)
policy.eval()
after = generate_responses(policy, evalset, max_new_tokens=128, progress=False)
val_loader = make_preference_loader(PreferenceDataset(va, tok), 8, max_length=window)
stats = preference_stats(policy, val_loader, reference, a.beta, fast=True)
outs = [e["output"] for e in evalset]
log = {"args": vars(a), "polite_before": statistics.mean(scorer(before)), "polite_after": statistics.mean(scorer(after)),
       "rouge_out_before": rouge_l(before, outs), "rouge_out_after": rouge_l(after, outs),
       "rouge_chosen_after": rouge_l(after, [e["chosen"] for e in evalset]), "stats": stats,
       "changed": sum(b != c for b, c in zip(before, after)), "seconds": time.time() - t0,
       "before": before, "after": after}
print({k: v for k, v in log.items() if k not in ("before", "after")}, flush=True)
json.dump(log, open(a.out, "w"), indent=1)
