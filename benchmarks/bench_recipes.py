"""The notebooks' long training runs, before and after they moved to the chunked loss.

Issue 15 asks the long runs (chapter 5's GPT-2 124M run on The Verdict, the TinyStories
fallback pretraining, chapter 7's instruction fine-tuning) to train on the fast path with
`chunked_lm_loss` and to be at least 25% faster than before. Timing a whole run twice takes
tens of minutes and drifts with the machine's load, so this script times their steps instead,
as `bench_train_step.py` does: two copies of each recipe's model (the same initial weights),
one set up as the run was ("before"), one as it is now ("after"), take turns on the same real
batches, and the ratio after/before is the median of the per-round ratios. It also times one
evaluation batch each way (the runs evaluate every few steps, forward only).

    recipe     model, batch                         before                          after
    fallback   16M TinyStories model, 4 x 256       fast path, lm_loss, fused AdamW  fast path, chunked_lm_loss, fused AdamW
    verdict    GPT-2 124M (context 256), 2 x 256    fast path, lm_loss, AdamW        fast path, chunked_lm_loss, fused AdamW
    instruct   16M fallback model, 8 instructions   fast path, lm_loss, fused AdamW  fast path, chunked_lm_loss, fused AdamW

The losses of the first round are printed side by side: both variants compute the same
function, so they must agree (to float32 rounding).

Usage:
    python benchmarks/bench_recipes.py                    # all three, 12 rounds each
    python benchmarks/bench_recipes.py --recipes fallback --steps 30
    python benchmarks/bench_recipes.py --quick            # tiny models, seconds
"""

from __future__ import annotations

import argparse
import copy
import itertools
import time

import torch
from bench_train_step import train_step  # forward, loss, backward, AdamW update of one variant
from common import (RESULTS_DIR, machine_info, markdown_table, median, paired_ratio, print_machine,
                    summary_row, write_json)

from ch02_data import create_dataloader, fetch, gpt2_encoding
from ch04_gpt import GPT_CONFIGS, GPTModel
from ch05_pretrain import chunked_lm_loss, fast_adamw, lm_loss
from ch05_pretrain.fallback import DATA_FILE, FULL, split_text

RECIPES = ("fallback", "verdict", "instruct")
GOALS = {"fallback": "<= 0.75", "verdict": "<= 0.75"}  # issue 15: these two runs at least 25% faster


def recipe_batches(name: str, quick: bool) -> tuple[GPTModel, list, str]:
    """The recipe's model (fast path, initial weights) and a list of its real training batches."""
    tokenizer = gpt2_encoding()
    torch.manual_seed(123)
    if name == "fallback":
        cfg = FULL.cfg
        text = split_text(fetch(DATA_FILE).read_text(encoding="utf-8"), FULL.val_fraction)[0]
        B, text = FULL.batch_size, text[:400_000]  # 100k tokens: more windows than any run here needs
    elif name == "verdict":
        cfg = GPT_CONFIGS["gpt2"].replace(context_length=256)  # the chapter-5 notebook's run
        B, text = 2, fetch("the-verdict.txt").read_text(encoding="utf-8")
    else:
        from ch07_instruct import InstructionDataset, load_instruction_data, make_loader, split_entries

        cfg = FULL.cfg
        train_entries = split_entries(load_instruction_data())[0]
        if quick:
            cfg = cfg.replace(emb_dim=32, n_heads=2, n_layers=1)
        loader = make_loader(InstructionDataset(train_entries, tokenizer, max_length=cfg.context_length),
                             8, shuffle=True, drop_last=True, seed=123)
        return GPTModel(cfg).set_fast_path(True), list(itertools.islice(loader, 40)), "8 instructions"
    if quick:
        cfg = cfg.replace(emb_dim=32, n_heads=2, n_layers=1)
    T = cfg.context_length
    loader = create_dataloader(text, batch_size=B, max_length=T, stride=T, shuffle=True,
                               drop_last=True, tokenizer=tokenizer)
    return GPTModel(cfg).set_fast_path(True), list(itertools.islice(loader, 40)), f"{B} x {T}"


def variants_for(name: str, model: GPTModel) -> list[dict]:
    """Two copies of `model`: as the run trained before, and as it trains now."""
    before, after = model, copy.deepcopy(model)
    lr = 4e-4 if name == "verdict" else 1e-3
    # Chapter 5's notebook built a plain AdamW for its 124M run; the other runs used fused AdamW.
    before_opt = (torch.optim.AdamW(before.parameters(), lr=lr, weight_decay=0.1) if name == "verdict"
                  else fast_adamw(before.parameters(), lr=lr, weight_decay=0.1))
    return [
        dict(key="before", name="before: lm_loss", model=before, loss_fn=lm_loss, opt=before_opt,
             opt_name="default" if name == "verdict" else "fused"),
        dict(key="after", name="after: chunked_lm_loss", model=after, loss_fn=chunked_lm_loss,
             opt=fast_adamw(after.parameters(), lr=lr, weight_decay=0.1), opt_name="fused"),
    ]


@torch.no_grad()
def eval_step(v: dict, batch) -> float:
    return v["loss_fn"](v["model"], batch).item()


def bench_recipe(name: str, steps: int, warmup: int, quick: bool) -> tuple[list[dict], list[dict]]:
    model, batches, shape = recipe_batches(name, quick)
    variants = variants_for(name, model)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"\n## {name}: {n_params / 1e6:.1f}M parameters, batches of {shape}, {len(batches)} distinct batches")
    first = []
    for v in variants:  # the same weights, batch and dropout masks: the same loss
        torch.manual_seed(0)
        first.append(train_step(v, batches[0]))
    print(f"first step's loss: before {first[0]:.6f}, after {first[1]:.6f} (difference {abs(first[0] - first[1]):.1e})")
    for i in range(1, warmup):
        for v in variants:
            train_step(v, batches[i % len(batches)])
    for v in variants:
        v["times"], v["eval_times"] = [], []
    for r in range(steps):
        batch = batches[(warmup + r) % len(batches)]
        order = variants if r % 2 == 0 else variants[::-1]  # neither always goes first
        for v in order:
            t0 = time.perf_counter()
            train_step(v, batch)
            v["times"].append(time.perf_counter() - t0)
        for v in order[::-1]:
            v["model"].eval()
            t0 = time.perf_counter()
            eval_step(v, batch)
            v["eval_times"].append(time.perf_counter() - t0)
            v["model"].train()

    before = variants[0]
    rows, summary = [], []
    for v in variants:
        ratio = paired_ratio(v["times"], before["times"])
        eval_ratio = paired_ratio(v["eval_times"], before["eval_times"])
        goal = GOALS.get(name, "") if v["key"] == "after" else ""
        rows.append({"recipe": name, "variant": v["name"], "AdamW": v["opt_name"],
                     "median step (s)": median(v["times"]), "step vs before": ratio,
                     "median eval batch (s)": median(v["eval_times"]), "eval vs before": eval_ratio,
                     "goal": goal})
        # run_all's summary calls its ratio column ratio_vs_hf; here it is the ratio to "before".
        summary.append(summary_row(f"{name} run", v["name"], "median step (s)", median(v["times"]),
                                   ratio, goal, goal_on="ratio_vs_hf"))
    print(markdown_table(rows))
    return rows, summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipes", nargs="+", choices=RECIPES, default=list(RECIPES))
    p.add_argument("--steps", type=int, default=12, help="timed rounds per recipe")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--quick", action="store_true", help="tiny models for a smoke test")
    p.add_argument("--json", default=str(RESULTS_DIR / "bench_recipes.json"), help="output JSON path")
    args = p.parse_args()
    if args.steps < 1 or args.warmup < 1:
        p.error(f"--steps {args.steps} and --warmup {args.warmup}: both must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info()
    print_machine(info)
    rows, summary = [], []
    for name in args.recipes:
        r, s = bench_recipe(name, args.steps, args.warmup, args.quick)
        rows += r
        summary += s
    print()
    print(markdown_table(rows))
    payload = {"benchmark": "recipes", "machine": info, "steps": args.steps, "warmup": args.warmup,
               "quick": args.quick, "rows": rows, "summary": summary}
    print(f"\nwrote {write_json(args.json, payload)}")


if __name__ == "__main__":
    main()
