"""What a full run of each notebook would cost with GPT-2 instead of the fallback, on this machine.

    python -m benchmarks.bench_gpt2_cost [--rounds 3] [--sizes gpt2 gpt2-medium]

OpenAI's weights cannot be downloaded here, but a step's time and memory do not depend on the
weights' values, so stand-ins of GPT-2's exact shapes (random, `tools.gpt2_standins`) measure them.
For each notebook's dominant work this times the fallback model and each GPT-2 size on the same
batch, in alternating rounds (paired: a slow spell of the machine slows both), and reports

- the time ratio GPT-2 / fallback, median over rounds;
- the projected full-run minutes: the stored fallback run's minutes, with the part that runs the
  model scaled by that ratio (for the distillation bonus, only the teacher's part);
- the peak resident memory of the GPT-2 step (weights, gradients, AdamW's two moments, activations).

The workloads, as the notebooks run them in full mode:
- ch06: a training step of the classifier (last block, final norm and head trainable), 8 x 120 tokens;
- ch07: a full fine-tuning step on 8 instruction examples (chunked loss, fast path), and the
  greedy generation of one answer token with the KV cache (the test answers);
- DPO: a DPO step on 8 preference pairs (policy and frozen reference);
- distillation: the teacher's forward pass over 64 windows of 128 tokens.
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import PeakRSS, machine_info, markdown_table, median, paired_ratio, print_machine, write_json
from ch04_gpt import GPTModel
from ch05_pretrain import chunked_lm_loss, fast_adamw, load_gpt2
from ch05_pretrain.fallback import FULL

# The stored full runs with the fallback model (README's chapter table): total minutes, and the
# minutes of it that run the model (the rest: data, students, plotting).
STORED = {
    "ch06": (2.3, 2.3),
    "ch07": (8.0, 8.0),
    "dpo": (6.4, 6.4),
    "distill": (12.1, 2.2),  # the teacher's passes and text: 2.2 min; the seven students: no teacher
}


def _fallback() -> GPTModel:
    torch.manual_seed(0)
    return GPTModel(FULL.cfg).eval()  # the fallback's shapes; the values do not change the time


def _step(model, batch, loss_fn, params) -> float:
    """Seconds of one optimizer step (forward, backward, AdamW) on the fast path: the second of
    two, so that AdamW's state and the allocator's first requests are not counted."""
    opt = fast_adamw(params, lr=1e-5)
    model.train()
    for _ in range(2):
        t0 = time.perf_counter()
        loss_fn(model, batch).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def _ch07_batch(window: int):
    from ch02_data import gpt2_encoding
    from ch07_instruct import InstructionDataset, load_instruction_data, make_loader, split_entries

    train = split_entries(load_instruction_data())[0]
    ds = InstructionDataset(train[:8], gpt2_encoding(), max_length=window)
    return make_loader(ds, 8).collate_fn([ds[i] for i in range(8)])


def _workloads(model: GPTModel):
    """name -> zero-argument function returning seconds, for one model."""
    from bonus_dpo import DPOLoss, PreferenceDataset, load_preference_data, make_preference_loader, policy_and_reference
    from ch02_data import gpt2_encoding
    from ch06_classify import classification_loss, to_classifier
    from ch05_pretrain import generate

    tok = gpt2_encoding()
    out = {}

    def ch06():
        clf = to_classifier(copy.deepcopy(model), num_classes=2).set_fast_path(True)
        batch = {"input_ids": torch.randint(0, 50257, (8, 120)), "lengths": torch.full((8,), 120),
                 "labels": torch.randint(0, 2, (8,))}
        return _step(clf, batch, classification_loss, [p for p in clf.parameters() if p.requires_grad])

    def ch07():
        m = copy.deepcopy(model).set_fast_path(True)
        return _step(m, _ch07_batch(m.cfg.context_length), chunked_lm_loss, list(m.parameters()))

    def ch07_generate_token():
        prompt = torch.tensor([tok.encode("### Instruction:\nName a fruit.\n\n### Response:\n")])
        n = 32
        with torch.no_grad():
            t0 = time.perf_counter()
            generate(model, prompt, max_new_tokens=n)
        return (time.perf_counter() - t0) / n

    def dpo():
        policy, reference = policy_and_reference(copy.deepcopy(model))
        ds = PreferenceDataset(load_preference_data()[:8], tok, max_length=policy.cfg.context_length)
        batch = next(iter(make_preference_loader(ds, 8, max_length=policy.cfg.context_length)))
        return _step(policy, batch, DPOLoss(reference, fast=True), list(policy.parameters()))

    def distill_teacher():
        x = torch.randint(0, 50257, (64, 128))
        with torch.no_grad():
            t0 = time.perf_counter()
            model.set_fast_path(True)(x)
            model.set_fast_path(False)
        return time.perf_counter() - t0

    out.update(ch06=ch06, ch07=ch07, ch07_generate_token=ch07_generate_token, dpo=dpo,
               distill=distill_teacher)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", nargs="+", default=["gpt2", "gpt2-medium"])
    parser.add_argument("--workloads", nargs="+", default=None,
                        help="only these (ch06, ch07, ch07_generate_token, dpo, distill)")
    args = parser.parse_args(argv)
    info = machine_info()
    print_machine(info)
    from tools.gpt2_standins import write_standin

    rows = []
    with tempfile.TemporaryDirectory() as root:
        for size in args.sizes:
            write_standin(root, size)
            gpt2 = load_gpt2(Path(root) / size, drop_rate=0.0)
            fallback = _fallback()
            w_fb, w_g2 = _workloads(fallback), _workloads(gpt2)
            for name in w_fb:
                if size != "gpt2" and name.startswith(("ch06", "distill")):
                    continue  # these chapters use GPT-2 124M
                if args.workloads is not None and name not in args.workloads:
                    continue
                w_fb[name](), w_g2[name]()  # warm-up
                fb, g2 = [], []
                with PeakRSS() as mem:
                    for _ in range(args.rounds):
                        fb.append(w_fb[name]())
                        g2.append(w_g2[name]())
                        gc.collect()
                ratio = paired_ratio(g2, fb)
                total, model_part = STORED.get(name, (None, None))
                projected = None if total is None else total - model_part + model_part * ratio
                rows.append({"workload": name, "gpt2 size": size, "fallback s": round(median(fb), 4),
                             "gpt2 s": round(median(g2), 4), "ratio": round(ratio, 1),
                             "stored fallback min": total,
                             "projected min": None if projected is None else round(projected, 0),
                             "peak RSS GB": round(mem.peak / 2**30, 1)})
                print(markdown_table(rows[-1:]), flush=True)
            del gpt2, fallback, w_fb, w_g2
            gc.collect()
            os.remove(Path(root) / size / "model.safetensors")
    print()
    print(markdown_table(rows))
    write_json(Path(__file__).resolve().parent / "results" / "gpt2_cost.json",
               {"machine": info, "rows": rows, "summary": []})


if __name__ == "__main__":
    main()
