"""The GPU check's Python part (`benchmarks/gpu_check.sh` runs it, one part per process).

Parts, each a few minutes at most on one CUDA GPU:
    tests     the tests that only run on CUDA (files that ask torch.cuda.is_available()), unskipped
    train     GPT-2 124M training steps in bf16 autocast with torch.compile and flash attention
              (the fast path's scaled_dot_product_attention), batch 16 x 1024, fused AdamW:
              tokens/s and MFU against the GPU's dense bf16 peak, looked up by device name
    generate  cached greedy generation (fast path), 200 new tokens, batch 1 and batch 16
    notebook  chapter 5's notebook in fast mode (FAST_DEV_RUN=1) under nbval; nothing is written
              into the notebook

MFU uses the same count of training FLOPs per token as `bench_train_step.py`, 6N + 12 L C T.

Usage:
    python benchmarks/bench_gpu.py train [--batch-size 16] [--steps 10] [--peak-tflops 989]
    python benchmarks/bench_gpu.py train --chunked   # also time chapter 5's chunked_lm_loss
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import RESULTS_DIR, markdown_table, write_json

from ch04_gpt import GPT_CONFIGS, GPTModel
from ch05_pretrain import chunked_lm_loss, fast_adamw, generate, lm_loss

REPO = Path(__file__).resolve().parent.parent

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from NVIDIA's data sheets; the T4 and V100
# have no bf16, so their fp16 peak is given. First match wins: more specific names come first
# ("H100 PCIe" before "H100", "L40S" before "L4", "A100" before "A10").
BF16_PEAK_TFLOPS = [
    ("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H800", 989.0),
    ("A100", 312.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0), ("A10G", 125.0), ("A10", 125.0),
    ("RTX 4090", 165.0), ("T4", 65.0), ("V100", 125.0),
]


def bf16_peak(name: str) -> tuple[float | None, str]:
    """(peak TFLOP/s, the table entry that matched) for a device name such as 'NVIDIA H100 80GB HBM3'."""
    for key, tflops in BF16_PEAK_TFLOPS:
        if key.lower() in name.lower():
            return tflops, key
    return None, "no entry"


def flops_per_token(model: GPTModel) -> float:
    """6 N + 12 L C T training FLOPs per token, N without the position embeddings (as bench_train_step)."""
    cfg = model.cfg
    n = sum(p.numel() for p in model.parameters()) - model.pos_emb.weight.numel()
    return 6 * n + 12 * cfg.n_layers * cfg.emb_dim * cfg.context_length


def run_tests() -> int:
    """pytest on every test file that checks torch.cuda.is_available(); on a GPU none is skipped
    for lack of one (tests skipped *because* CUDA exists, e.g. the missing-CUDA error, stay skipped)."""
    files = sorted(str(p.relative_to(REPO)) for p in REPO.glob("*/tests/test_*.py")
                   if "torch.cuda.is_available()" in p.read_text(encoding="utf-8"))
    print("test files that mention CUDA:", ", ".join(files))
    return subprocess.call([sys.executable, "-m", "pytest", *files, "-q", "-rs"], cwd=REPO)


def timed_steps(step, steps: int) -> float:
    """Seconds for `steps` calls of `step()`, waiting for the GPU before and after."""
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def run_train(args) -> dict:
    """124M steps in bf16 autocast, compiled, flash attention; returns one row per loss."""
    torch.backends.cuda.matmul.allow_tf32 = True  # fp32 leftovers (the optimizer's math) on tensor cores
    cfg = GPT_CONFIGS["gpt2"].replace(drop_rate=0.0)  # context 1024
    B, T = args.batch_size, cfg.context_length
    name = torch.cuda.get_device_name()
    peak, entry = (args.peak_tflops, "--peak-tflops") if args.peak_tflops else bf16_peak(name)
    print(f"device {name}; dense bf16 peak {peak} TFLOP/s ({entry}); batch {B} x {T}")
    torch.manual_seed(0)
    model = GPTModel(cfg).set_fast_path(True).cuda().train()
    opt = fast_adamw(model.parameters(), lr=4e-4)
    data = torch.randint(0, cfg.vocab_size, (B, T + 1), device="cuda")
    batch = (data[:, :-1], data[:, 1:])
    fpt = flops_per_token(model)
    rows = []

    def measure(label: str, net, loss_fn) -> None:
        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = loss_fn(net, batch)
            loss.backward()
            opt.step()

        t_compile = timed_steps(step, args.warmup)  # the first step compiles
        torch.cuda.reset_peak_memory_stats()
        seconds = timed_steps(step, args.steps)
        tokens_per_s = B * T * args.steps / seconds
        mfu = fpt * tokens_per_s / (peak * 1e12) if peak else None
        rows.append({"loss": label, "warm-up incl. compile (s)": t_compile,
                     "step (ms)": 1000 * seconds / args.steps, "tokens/s": tokens_per_s,
                     "MFU (%)": None if mfu is None else 100 * mfu, "goal": ">= 40%",
                     "peak memory (GiB)": torch.cuda.max_memory_allocated() / 2**30})

    measure("lm_loss, compiled model", torch.compile(model), lm_loss)
    if args.chunked:  # chunked_lm_loss calls hidden_states: compile that method on the instance
        model.hidden_states = torch.compile(model.hidden_states)
        measure("chunked_lm_loss, compiled hidden_states", model, chunked_lm_loss)
    print(markdown_table(rows))
    return {"device": name, "bf16_peak_tflops": peak, "peak_entry": entry, "batch": [B, T],
            "flops_per_token": fpt, "rows": rows}


@torch.no_grad()
def run_generate(args) -> dict:
    """Greedy generation with the KV cache on the fast path (fp32 weights, TF32 matmuls)."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(0)
    model = GPTModel(GPT_CONFIGS["gpt2"]).set_fast_path(True).cuda().eval()
    rows = []
    for B in (1, 16):
        prompt = torch.randint(0, model.cfg.vocab_size, (B, 10), device="cuda")
        generate(model, prompt, 8)  # warm up kernels and the allocator
        seconds = timed_steps(lambda: generate(model, prompt, args.new_tokens), 1)
        rows.append({"batch": B, "new tokens": args.new_tokens, "seconds": seconds,
                     "new tokens/s (all rows)": B * args.new_tokens / seconds})
    print(markdown_table(rows))
    return {"device": torch.cuda.get_device_name(), "rows": rows}


def run_notebook() -> int:
    """Chapter 5's notebook in fast mode, executed by nbval (which does not write the file)."""
    env = {**os.environ, "FAST_DEV_RUN": "1"}
    return subprocess.call([sys.executable, "-m", "pytest", "--nbval-lax", "-q",
                            "ch05_pretrain/ch05_pretrain.ipynb"], cwd=REPO, env=env)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("part", choices=["tests", "train", "generate", "notebook"])
    p.add_argument("--batch-size", type=int, default=16, help="train: sequences of 1024 tokens")
    p.add_argument("--steps", type=int, default=10, help="train: timed steps")
    p.add_argument("--warmup", type=int, default=3, help="train: untimed steps first (compilation)")
    p.add_argument("--peak-tflops", type=float, default=None, help="train: dense bf16 peak, if not in the table")
    p.add_argument("--chunked", action="store_true", help="train: also time chunked_lm_loss")
    p.add_argument("--new-tokens", type=int, default=200, help="generate: tokens per call")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA GPU visible to PyTorch; nothing to measure.")
        return
    if args.part in ("tests", "notebook"):
        sys.exit(run_tests() if args.part == "tests" else run_notebook())
    result = run_train(args) if args.part == "train" else run_generate(args)
    print(f"wrote {write_json(RESULTS_DIR / f'bench_gpu_{args.part}.json', result)}")


if __name__ == "__main__":
    main()
