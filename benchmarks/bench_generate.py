"""Greedy generation speed on the CPU: our `generate` with and without KV cache against Hugging Face.

200 new tokens from a 10-token prompt, batch 1, GPT-2 124M configuration (context 1024), eval
mode, no gradients. Both models get the same (random) weights, copied from the Hugging Face
model with `ch04_gpt.load_hf_gpt2_weights`, so greedy decoding must produce the same tokens;
the script checks that. Variants run in turn (ours cached, ours uncached, ours fast path cached,
HF), `--repeats` times, the order rotating between rounds. We report the median time of each and
compare with HF by the median of the per-round ratios (`common.paired_ratio`), which cancels the
machine's drift between rounds.

Two more rows time a floor rather than a decoder: per token, one matrix-vector product with every
weight matrix of the model and nothing else (`matmul_floor`), in nn.Linear's (out, in) layout and
in the (in, out) layout of HF's Conv1D blocks. At batch 1 decoding reads every weight once per
token, so no fp32 decoder in that layout can be faster than its floor; HF's time over the floor's
is the most any of ours could gain on HF.

Usage:
    python benchmarks/bench_generate.py              # full run
    python benchmarks/bench_generate.py --quick      # tiny config, seconds
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from common import (RESULTS_DIR, machine_info, markdown_table, median, paired_ratio, print_machine,
                    summary_row, write_json)

from ch04_gpt import GPT_CONFIGS, GPTConfig, GPTModel, load_hf_gpt2_weights
from ch05_pretrain.generate import generate


FLOOR = "floor: weight matmuls only"
FLOOR_T = "floor: weight matmuls only, (in, out) layout"


def build_models(cfg: GPTConfig) -> tuple[GPTModel, torch.nn.Module]:
    """A random Hugging Face GPT2LMHeadModel (SDPA attention) and our GPTModel with its weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    eos = cfg.vocab_size - 1  # GPT-2's <|endoftext|> is the last id
    hf = GPT2LMHeadModel(GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.context_length, n_embd=cfg.emb_dim,
        n_layer=cfg.n_layers, n_head=cfg.n_heads, bos_token_id=eos, eos_token_id=eos,
        attn_implementation="sdpa",
    )).eval()
    hf.generation_config.pad_token_id = eos  # silences "setting pad_token_id" on every call
    ours = load_hf_gpt2_weights(GPTModel(cfg), hf.state_dict().items()).eval()
    return ours, hf


def matmul_floor(model: GPTModel, transposed: bool = False):
    """A run function that does, per new token, only what no batch-1 decoder of these fp32 weights
    can skip: one matrix-vector product with every weight matrix (the blocks' and the output
    head's). No attention, norms, cache or sampling, so its time per token is a floor: HF's time
    over the floor's bounds how much faster than HF any decoder in that weight layout can be.
    `transposed` stores each matrix as (in, out), the layout of HF's Conv1D blocks, instead of
    nn.Linear's (out, in); MKL reads that layout faster in matrix-vector products here."""
    mats = [m.weight.detach() for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if transposed:
        mats = [w.T.contiguous() for w in mats]  # (in, out): x @ w
    sizes = {w.shape[0] if transposed else w.shape[1] for w in mats}  # each matrix's input width
    inputs = {k: torch.randn(1, k) for k in sizes}

    @torch.no_grad()
    def run(n: int) -> None:
        for _ in range(n):
            for w in mats:
                if transposed:
                    torch.mm(inputs[w.shape[0]], w)
                else:
                    F.linear(inputs[w.shape[1]], w)

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--new-tokens", type=int, default=200)
    p.add_argument("--prompt-len", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per variant")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--quick", action="store_true", help="tiny config for a smoke test")
    p.add_argument("--json", default=str(RESULTS_DIR / "bench_generate.json"), help="output JSON path")
    args = p.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = GPT_CONFIGS["gpt2"]
    if args.quick:
        cfg = cfg.replace(vocab_size=512, context_length=256, emb_dim=64, n_heads=4, n_layers=2)
    N = args.new_tokens
    info = machine_info()
    print_machine(info)
    print(f"config: C={cfg.emb_dim} L={cfg.n_layers} nh={cfg.n_heads} V={cfg.vocab_size} "
          f"context {cfg.context_length}; prompt {args.prompt_len} tokens, {N} new, batch 1, greedy")

    ours, hf = build_models(cfg)
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, cfg.vocab_size, (1, args.prompt_len), generator=g)  # (1, T)

    def ours_run(fast: bool, use_cache: bool, n: int) -> torch.Tensor:
        ours.set_fast_path(fast)
        return generate(ours, prompt, n, use_cache=use_cache)

    @torch.no_grad()
    def hf_run(n: int) -> torch.Tensor:
        return hf.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                           max_new_tokens=n, min_new_tokens=n, use_cache=True)

    variants = {
        "ours, KV cache": lambda n: ours_run(False, True, n),
        "ours, no cache": lambda n: ours_run(False, False, n),
        "ours, fast path + KV cache": lambda n: ours_run(True, True, n),
        "HF generate (sdpa, cache)": hf_run,
        FLOOR: matmul_floor(ours),
        FLOOR_T: matmul_floor(ours, transposed=True),
    }
    for run in variants.values():
        run(8)  # warm up: allocator, thread pool, first-call overheads
    times = {name: [] for name in variants}
    tokens = {}
    names = list(variants)
    for r in range(args.repeats):  # alternate so a busy spell on the machine hits all variants
        for name in names[r % len(names):] + names[: r % len(names)]:  # rotate the order too
            run = variants[name]
            t0 = time.perf_counter()
            tokens[name] = run(N)  # (1, prompt_len + N)
            times[name].append(time.perf_counter() - t0)
            print(f"  {name}: {times[name][-1]:.2f} s", flush=True)

    hf_name = "HF generate (sdpa, cache)"
    t = {name: median(ts) for name, ts in times.items()}
    # Speed relative to HF: HF's time / ours, per round, then the median.
    vs_hf = {name: paired_ratio(times[hf_name], ts) for name, ts in times.items()}
    rows = []
    for name in variants:
        same = "n/a" if tokens[name] is None else "yes" if torch.equal(tokens[name], tokens[hf_name]) else "no"
        rows.append({"variant": name, "median time (s)": t[name], "new tokens/s": N / t[name],
                     "speed vs HF": vs_hf[name], "same tokens as HF": same})
    print()
    print(markdown_table(rows))
    cached_vs_hf = vs_hf["ours, KV cache"]
    cache_speedup = paired_ratio(times["ours, no cache"], times["ours, KV cache"])
    fast_vs_hf = vs_hf["ours, fast path + KV cache"]
    all_same = all(r["same tokens as HF"] in ("yes", "n/a") for r in rows)
    print(f"\nours cached vs HF: {cached_vs_hf:.2f}x tokens/s (goal >= 1.1); "
          f"fast path cached vs HF: {fast_vs_hf:.2f}x (goal >= 1.5); "
          f"ours cached vs uncached: {cache_speedup:.2f}x (goal >= 4); "
          f"all variants produce HF's tokens: {'yes' if all_same else 'no'}")
    print(f"floor (weight matmuls alone): {1000 * t[FLOOR] / N:.1f} ms per token in nn.Linear's layout, "
          f"{1000 * t[FLOOR_T] / N:.1f} ms in (in, out) layout, HF {1000 * t[hf_name] / N:.1f} ms: no decoder "
          f"of these fp32 weights gets past {vs_hf[FLOOR]:.2f}x HF in the first layout, {vs_hf[FLOOR_T]:.2f}x "
          f"in the second")

    summary = [
        summary_row("generate", "ours, KV cache", "new tokens/s", N / t["ours, KV cache"], cached_vs_hf,
                    ">= 1.1", goal_on="ratio_vs_hf"),
        summary_row("generate", "ours, fast path + KV cache", "new tokens/s",
                    N / t["ours, fast path + KV cache"], fast_vs_hf, ">= 1.5", goal_on="ratio_vs_hf"),
        summary_row("generate", "ours, no cache", "new tokens/s", N / t["ours, no cache"],
                    vs_hf["ours, no cache"]),
        summary_row("generate", "KV cache speed-up (ours cached / uncached)", "ratio", cache_speedup,
                    None, ">= 4"),
        summary_row("generate", hf_name, "new tokens/s", N / t[hf_name], 1.0),
        summary_row("generate", FLOOR, "new tokens/s", N / t[FLOOR], vs_hf[FLOOR]),
        summary_row("generate", FLOOR_T, "new tokens/s", N / t[FLOOR_T], vs_hf[FLOOR_T]),
        summary_row("generate", "all of ours", "same greedy tokens as HF (1 = yes)", float(all_same),
                    None, ">= 1"),
    ]
    payload = {"benchmark": "generate", "machine": info, "config": cfg.to_dict(),
               "prompt_len": args.prompt_len, "new_tokens": N, "repeats": args.repeats,
               "quick": args.quick, "same_tokens": all_same, "rows": rows, "summary": summary,
               "times": times}
    print(f"wrote {write_json(args.json, payload)}")


if __name__ == "__main__":
    main()
