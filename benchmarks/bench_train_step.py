"""One GPT-2 training step on the CPU: our GPTModel (readable and fast path) against Hugging Face.

A step = forward, cross-entropy on shifted targets, backward, AdamW update, in fp32, for the
GPT-2 124M configuration at batch 2 x 256 (the shape chapter 5 trains with). Every variant takes
its loss with `ch05_pretrain.lm_loss` on the model's logits, except "fast path + chunked loss",
which uses `ch05_pretrain.chunked_lm_loss` (the same loss without the (B*T, V) logits). All
variants live in the same process and run in turn, one step each per round with the order
rotating between rounds, so a slow spell on a shared machine hits all of them alike. We report
median step times, and compare with HF by the median of the per-round ratios
(`common.paired_ratio`), which cancels the machine's drift between rounds.

Model FLOPs utilisation (MFU) uses the standard count of training FLOPs per token,
    6 N + 12 L C T
(Kaplan et al. 2020, sec. 2.1, for the 6N; Chowdhery et al. 2022, PaLM, appendix B, for the
attention term), with N the parameters taking part in matmuls: every parameter except the
position embeddings (the tied token-embedding matrix counts once, as the output head). The peak
it is divided by is measured here, as the best speed of a large fp32 matmul.

Usage:
    python benchmarks/bench_train_step.py                 # full run (GPT-2 124M, 10 steps)
    python benchmarks/bench_train_step.py --quick         # tiny config, seconds
    python benchmarks/bench_train_step.py --profile       # plus the top ops of one step per variant
    python benchmarks/bench_train_step.py --chunk-size 512  # rows of logits per chunk of the chunked loss
"""

from __future__ import annotations

import argparse
import functools
import time

import torch
import torch.nn as nn
from common import (PeakRSS, RESULTS_DIR, machine_info, markdown_table, matmul_peak_gflops, median,
                    paired_ratio, print_machine, summary_row, write_json)

from ch04_gpt import GPT_CONFIGS, GPTConfig, GPTModel
from ch05_pretrain import DEFAULT_CHUNK_SIZE, chunked_lm_loss, fast_adamw, lm_loss

Batch = tuple[torch.Tensor, torch.Tensor]  # (inputs (B, T), targets (B, T)), as lm_loss takes


class HFLogits(nn.Module):
    """Wraps a Hugging Face causal LM so that, like GPTModel, calling it returns logits only."""

    def __init__(self, hf: nn.Module):
        super().__init__()
        self.hf = hf

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.hf(input_ids=idx, use_cache=False).logits  # (B, T, V)


def hf_gpt2(cfg: GPTConfig) -> nn.Module:
    """transformers' GPT2LMHeadModel with the same shape as `cfg`, SDPA attention, no dropout."""
    from transformers import GPT2Config, GPT2LMHeadModel

    hf_cfg = GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.context_length, n_embd=cfg.emb_dim,
        n_layer=cfg.n_layers, n_head=cfg.n_heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        tie_word_embeddings=True, use_cache=False, attn_implementation="sdpa",
        bos_token_id=cfg.vocab_size - 1, eos_token_id=cfg.vocab_size - 1,  # GPT-2: <|endoftext|>
    )
    return GPT2LMHeadModel(hf_cfg)


def adamw_fast(params) -> tuple[torch.optim.Optimizer, str]:
    """The fast path's optimizer, `ch05_pretrain.fast_adamw`, and which kernel it got."""
    opt = fast_adamw(params, lr=4e-4, weight_decay=0.1)
    return opt, "fused" if opt.defaults.get("fused") else "foreach"


# Goals of issue 15 (the second round): time vs HF per variant; HF itself has none.
TIME_GOALS = {"readable": "<= 1.05", "fast": "<= 0.90", "chunked": "<= 0.80", "hf": ""}
RSS_GOALS = {"chunked": "<= 0.80"}  # peak RSS of a step vs HF's


def build_variants(cfg: GPTConfig, compile_fast: bool, chunk_size: int) -> list[dict]:
    """One dict per variant: key, name, module (holds the parameters), model (what the loss
    calls; the compiled module with --compile), loss_fn, opt and its label. On CPU tensors,
    AdamW's default implementation is the per-parameter for-loop. HF comes last."""
    torch.manual_seed(0)
    readable = GPTModel(cfg)
    fast = GPTModel(cfg).set_fast_path(True)
    chunked = GPTModel(cfg).set_fast_path(True)
    hf = hf_gpt2(cfg)
    fast_opt, fast_opt_name = adamw_fast(fast.parameters())
    chunked_opt, _ = adamw_fast(chunked.parameters())
    plus_compile = " + compile" if compile_fast else ""
    variants = [
        dict(key="readable", name="ours, readable", module=readable, loss_fn=lm_loss,
             opt=torch.optim.AdamW(readable.parameters(), lr=4e-4, weight_decay=0.1),
             opt_name="default (for-loop on CPU)"),
        dict(key="fast", name="ours, fast path" + plus_compile, module=fast, loss_fn=lm_loss,
             opt=fast_opt, opt_name=fast_opt_name),
        dict(key="chunked", name="ours, fast path + chunked loss" + plus_compile, module=chunked,
             loss_fn=functools.partial(chunked_lm_loss, chunk_size=chunk_size),
             opt=chunked_opt, opt_name=fast_opt_name),
        dict(key="hf", name="HF transformers (sdpa)", module=HFLogits(hf), loss_fn=lm_loss,
             opt=torch.optim.AdamW(hf.parameters(), lr=4e-4, weight_decay=0.1),
             opt_name="default (for-loop on CPU)"),
    ]
    for v in variants:
        v["module"].train()
        v["model"] = v["module"]
    if compile_fast:
        variants[1]["model"] = torch.compile(fast)
        # chunked_lm_loss calls hidden_states (a compiled wrapper's forward would return logits):
        # compile that method on the instance instead.
        chunked.hidden_states = torch.compile(chunked.hidden_states)
    return variants


def train_step(v: dict, batch: Batch) -> float:
    """Forward, loss, backward, AdamW update; returns the loss."""
    v["opt"].zero_grad(set_to_none=True)
    loss = v["loss_fn"](v["model"], batch)
    loss.backward()
    v["opt"].step()
    return loss.item()


def flops_per_token(model: GPTModel) -> float:
    """6 N + 12 L C T training FLOPs per token (see the module docstring)."""
    cfg = model.cfg
    n = sum(p.numel() for p in model.parameters()) - model.pos_emb.weight.numel()
    return 6 * n + 12 * cfg.n_layers * cfg.emb_dim * cfg.context_length


def profile_step(v: dict, batch: Batch, top: int = 12) -> None:
    """Print the ops taking the most CPU time in one training step."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_step(v, batch)
    print(f"\n### Profile: {v['name']}\n")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="tiny config for a smoke test")
    p.add_argument("--compile", action="store_true", help="torch.compile the fast-path models")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE,
                   help=f"rows of logits per chunk of the chunked loss (default {DEFAULT_CHUNK_SIZE})")
    p.add_argument("--profile", action="store_true", help="profile one step of each variant")
    p.add_argument("--json", default=str(RESULTS_DIR / "bench_train_step.json"), help="output JSON path")
    args = p.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = GPT_CONFIGS["gpt2"].replace(context_length=256, drop_rate=0.0)
    if args.quick:
        cfg = cfg.replace(vocab_size=512, context_length=32, emb_dim=64, n_heads=4, n_layers=2)
    B, T = args.batch_size, cfg.context_length

    info = machine_info()
    print_machine(info)
    peak = matmul_peak_gflops()  # measured again after the steps; the higher value is kept
    print(f"config: C={cfg.emb_dim} L={cfg.n_layers} nh={cfg.n_heads} V={cfg.vocab_size}; "
          f"batch {B} x {T}; loss ch05_pretrain.lm_loss (chunked_lm_loss: chunks of {args.chunk_size} rows)")

    variants = build_variants(cfg, args.compile, args.chunk_size)
    fpt = flops_per_token(variants[0]["module"])
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, cfg.vocab_size, (B, T + 1), generator=g)
    batch = (data[:, :-1], data[:, 1:])  # targets are the inputs shifted left by one

    for _ in range(args.warmup):
        for v in variants:
            train_step(v, batch)
    for v in variants:
        v["times"], v["mem"], v["losses"] = [], [], []
    for r in range(args.steps):
        # Every round runs each variant once, starting one variant later each round, so no variant
        # always follows the same neighbour (whose freed memory and caches it would inherit).
        for v in variants[r % len(variants):] + variants[: r % len(variants)]:
            with PeakRSS() as rss:
                t0 = time.perf_counter()
                v["losses"].append(train_step(v, batch))
                v["times"].append(time.perf_counter() - t0)
            v["mem"].append(rss.peak_increase)

    # A slow spell during one peak measurement would inflate MFU; the best of two is closer to the truth.
    peak = max(peak, matmul_peak_gflops())
    print(f"fp32 matmul peak (best 2048^3 matmul, before and after the steps): {peak:.1f} GFLOP/s")

    hf = variants[-1]
    rows, summary = [], []
    for v in variants:
        t = median(v["times"])
        ratio = paired_ratio(v["times"], hf["times"])  # median over rounds of ours / HF
        goal, rss_goal = TIME_GOALS[v["key"]], RSS_GOALS.get(v["key"], "")
        mem = max(v["mem"]) / 2**20  # the highest of the steps' peaks
        mem_ratio = max(v["mem"]) / max(hf["mem"])
        rows.append({
            "variant": v["name"], "AdamW": v["opt_name"], "median step (s)": t,
            "min step (s)": min(v["times"]), "tokens/s": B * T / t,
            "MFU (%)": 100 * fpt * B * T / t / (peak * 1e9), "time vs HF": ratio,
            "goal vs HF": goal, "step peak RSS (MiB)": mem, "RSS vs HF": mem_ratio,
            "RSS goal": rss_goal, "last loss": v["losses"][-1],
        })
        summary.append(summary_row("train step", v["name"], "median step (s)", t, ratio, goal,
                                   goal_on="ratio_vs_hf"))
        if rss_goal:
            summary.append(summary_row("train step", v["name"], "step peak RSS (MiB)", mem, mem_ratio,
                                       rss_goal, goal_on="ratio_vs_hf"))
        assert torch.isfinite(torch.tensor(v["losses"])).all(), f"{v['name']}: loss is not finite"
    print()
    print(markdown_table(rows))

    if args.profile:
        for v in variants:
            profile_step(v, batch)

    payload = {"benchmark": "train_step", "machine": info, "matmul_peak_gflops": peak,
               "config": cfg.to_dict(), "batch": [B, T], "steps": args.steps, "warmup": args.warmup,
               "flops_per_token": fpt, "compile": args.compile, "quick": args.quick,
               "chunk_size": args.chunk_size,
               "rows": rows, "summary": summary,
               "times": {v["name"]: v["times"] for v in variants},
               "peak_rss_bytes": {v["name"]: v["mem"] for v in variants}}
    print(f"\nwrote {write_json(args.json, payload)}")


if __name__ == "__main__":
    main()
