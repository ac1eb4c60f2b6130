"""Chapter 7's recipe for the TinyStories fallback: validation ROUGE-L after chosen epochs.

    python benchmarks/sweep_ch07_fallback.py --epochs 8 --eval-epochs 2,4,6 --mask --test --out run.json

Fine-tunes chapter 5's fallback model on the 935 training entries (chapter 5's `train`, AdamW
with weight decay, the schedule given), answers the 55 validation entries greedily (at most 128
new tokens) after each epoch of --eval-epochs and at the end, and prints their ROUGE-L
with
--test also the 110 test entries'. Writes the numbers and answers to --out (JSON) and the weights
beside it (.pt, for benchmarks/sweep_dpo_fallback.py). One torch thread, so two runs can share a
2-core machine. The rows of benchmarks/results/ch07_fallback_sweep.csv come from it (2026-12-06),
and chapter 7's fallback recipe (`ch07_instruct.RECIPES`, `MASK_PROMPT`) was chosen from them.
"""
import argparse
import copy
import json
import time
import torch
from ch05_pretrain import get_fallback_model
from ch05_pretrain.train import train
from ch05_pretrain.device import fast_adamw
from ch05_pretrain.chunked_loss import chunked_lm_loss
from ch07_instruct.data import InstructionDataset, load_instruction_data, make_loader, split_entries
from ch07_instruct.respond import generate_responses
from ch07_instruct.scores import rouge_l

ap = argparse.ArgumentParser()
ap.add_argument("--epochs", type=int, default=2)
ap.add_argument("--lr", type=float, default=1e-3)
ap.add_argument("--sched", default="cosine")
ap.add_argument("--mask", action="store_true")
ap.add_argument("--seed", type=int, default=123)
ap.add_argument("--wd", type=float, default=0.1)
ap.add_argument("--bs", type=int, default=8)
ap.add_argument("--eval-epochs", default="")
ap.add_argument("--test", action="store_true")
ap.add_argument("--out", required=True)
a = ap.parse_args()
torch.set_num_threads(1)
tr, va, test_entries = split_entries(load_instruction_data())
model, info = get_fallback_model()
model = copy.deepcopy(model)
ds = InstructionDataset(tr, max_length=model.cfg.context_length)
loader = make_loader(ds, a.bs, shuffle=True, drop_last=True, seed=a.seed, mask_prompt=a.mask)
steps_per_epoch = len(loader)
eval_epochs = {int(x) for x in a.eval_epochs.split(",") if x}
log = {"args": vars(a), "val": {}}
t0 = time.time()

def on_eval(m, step):
    ep = step // steps_per_epoch
    if step % steps_per_epoch == 0 and ep in eval_epochs:
        m.set_fast_path(False)
        m.eval()
        with torch.no_grad():
            r = rouge_l(generate_responses(m, va, max_new_tokens=128, progress=False), [e["output"] for e in va])
        log["val"][ep] = r
        print(f"epoch {ep}: val ROUGE-L {r:.3f} ({time.time()-t0:.0f}s)", flush=True)
        m.set_fast_path(True)
        m.train()

params = [p for p in model.parameters() if p.requires_grad]
opt = fast_adamw(params, lr=a.lr, weight_decay=a.wd)
model.set_fast_path(True)
hist = train(model, opt, loader, chunked_lm_loss, epochs=a.epochs, eval_every=steps_per_epoch if eval_epochs else None,
             lr_schedule=a.sched, on_eval=on_eval if eval_epochs else None, seed=a.seed, progress=False)
model.set_fast_path(False)
model.eval()
log["train_loss"] = hist.train_loss[-1]
with torch.no_grad():
    vr = generate_responses(model, va, max_new_tokens=128, progress=False)
log["val"][a.epochs] = rouge_l(vr, [e["output"] for e in va])
print(f"final val ROUGE-L {log['val'][a.epochs]:.3f} ({time.time()-t0:.0f}s)", flush=True)
if a.test:
    with torch.no_grad():
        tr_ = generate_responses(model, test_entries, max_new_tokens=128, progress=False)
    log["test"] = rouge_l(tr_, [e["output"] for e in test_entries])
    log["test_responses"] = tr_
    print(f"test ROUGE-L {log['test']:.3f}", flush=True)
log["val_responses"] = vr
log["seconds"] = time.time() - t0
json.dump(log, open(a.out, "w"), indent=1)
torch.save(model.state_dict(), a.out.replace(".json", ".pt"))
