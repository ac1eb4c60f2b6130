"""Peak memory while loading GPT-2 weights: `load_gpt2` against loading the whole file first.

`ch05_pretrain.load_gpt2` builds the model and then streams the safetensors file into it one
tensor at a time, so it should never hold two copies of the weights. This script checks that
claim with numbers: it writes a Hugging Face GPT-2 checkpoint with random weights (124M shape by
default; `save_pretrained`, so the same layout as the released files), then loads it in a FRESH
Python process per method and records the peak resident memory (RSS) of that process:

- baseline: python + torch + the chapter packages imported, nothing loaded;
- load_gpt2: our streaming loader (goal: peak increase <= 1.3 x the file size);
- whole file: `safetensors.torch.load_file` (every tensor in memory), then copied into the model;
- transformers: `GPT2LMHeadModel.from_pretrained`, for reference.

After loading, every weight is read once inside the measurement, so that a loader that maps the
file and reads pages only on first use is measured with its weights actually in memory.

Peak RSS is read from the kernel's high-water mark (VmHWM, reset just before loading) on Linux,
and cross-checked by a thread that samples RSS every 2 ms. A fresh process per method matters:
freed memory is not always returned to the operating system, and would hide the next peak.

Usage:
    python benchmarks/bench_load_memory.py                    # GPT-2 124M shape, random weights
    python benchmarks/bench_load_memory.py --dir path/to/hf   # an existing save_pretrained folder
    python benchmarks/bench_load_memory.py --quick            # tiny model, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = ["baseline", "load_gpt2", "whole_file", "transformers"]
GOAL = 1.3


def _reset_peak_rss() -> None:
    """Linux: restart the kernel's high-water mark (VmHWM) from the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:
            f.write("5")
    except OSError:
        pass  # other systems: ru_maxrss below then includes the import peak (a small overestimate)


def _peak_rss() -> int:
    """Highest RSS of this process in bytes (since the last reset, on Linux)."""
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def child(method: str, folder: str) -> dict:
    """Runs in a fresh process: import, measure the baseline, load with `method`, measure the peak."""
    import gc

    import psutil
    import torch
    from common import PeakRSS

    from ch04_gpt import GPTModel, load_hf_gpt2_weights
    from ch05_pretrain.gpt2_weights import config_from_hf, load_gpt2

    torch.set_num_threads(1)
    path = Path(folder)
    with open(path / "config.json", encoding="utf-8") as f:
        cfg = config_from_hf(json.load(f))
    if method == "transformers":
        from transformers import GPT2LMHeadModel  # imported before the baseline is taken
    gc.collect()
    rss_before = psutil.Process().memory_info().rss
    _reset_peak_rss()
    t0 = time.perf_counter()
    with PeakRSS() as sampled:
        if method == "load_gpt2":
            model = load_gpt2(path)
        elif method == "whole_file":
            from safetensors.torch import load_file

            model = GPTModel(cfg)
            state = load_file(path / "model.safetensors")  # every tensor in memory at once
            load_hf_gpt2_weights(model, state.items())
            del state
        elif method == "transformers":
            model = GPT2LMHeadModel.from_pretrained(path)
        else:
            model = None
        if model is not None:
            # Read every weight once. A loader may map the file and read pages only when used
            # (transformers does); the peak should count a model that is ready to run.
            with torch.no_grad():
                for p in model.parameters():
                    p.sum()
    seconds = time.perf_counter() - t0
    peak = max(_peak_rss(), rss_before + sampled.peak_increase)
    n_bytes = 0 if model is None else sum(p.numel() * p.element_size() for p in model.parameters())
    return {"rss_before": rss_before, "peak_rss": peak, "peak_increase": peak - rss_before,
            "rss_after": psutil.Process().memory_info().rss, "param_bytes": n_bytes, "seconds": seconds}


def write_checkpoint(folder: Path, quick: bool) -> None:
    """A randomly initialised GPT-2 saved with save_pretrained (config.json + model.safetensors)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_embd=64, n_layer=2, n_head=4) if quick else GPT2Config()  # GPT2Config() = 124M
    GPT2LMHeadModel(cfg).save_pretrained(folder)


def run_child(method: str, folder: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", method, "--dir", str(folder)],
        capture_output=True, text=True, check=False,
        env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"},
    )
    if out.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", help="a save_pretrained GPT-2 folder (default: write a random one)")
    parser.add_argument("--quick", action="store_true", help="tiny random checkpoint, for a smoke test")
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--write-to", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(child(args.child, args.dir)))
        return
    if args.write_to:
        write_checkpoint(Path(args.write_to), args.quick)
        return

    from common import RESULTS_DIR, machine_info, markdown_table, print_machine, summary_row, write_json

    info = machine_info()
    print_machine(info)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.dir) if args.dir else Path(tmp) / "gpt2-random"
        if not args.dir:
            print(f"writing a random {'tiny' if args.quick else 'GPT-2 124M'} checkpoint to {folder} ...")
            # In a child process too, so this process stays small while the others are measured.
            cmd = [sys.executable, __file__, "--write-to", str(folder)] + (["--quick"] if args.quick else [])
            subprocess.run(cmd, check=True, env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"})
        file_size = (folder / "model.safetensors").stat().st_size
        rows = []
        for method in args.methods:
            r = run_child(method, folder)
            rows.append({
                "method": method,
                "RSS before (MB)": r["rss_before"] / 1e6,
                "peak RSS (MB)": r["peak_rss"] / 1e6,
                "peak increase (MB)": r["peak_increase"] / 1e6,
                "increase / file size": r["peak_increase"] / file_size if method != "baseline" else None,
                "seconds": r["seconds"],
            })
            print(f"  {method}: peak +{r['peak_increase'] / 1e6:.0f} MB")

    print(f"\nmodel.safetensors: {file_size / 1e6:.1f} MB\n")
    print(markdown_table(rows))
    ours = next((r for r in rows if r["method"] == "load_gpt2"), None)
    hf = next((r for r in rows if r["method"] == "transformers"), None)
    summary = []
    if ours:
        ratio = ours["increase / file size"]
        vs_hf = ours["peak increase (MB)"] / hf["peak increase (MB)"] if hf else None
        # A tiny --quick file is dwarfed by fixed costs (attention masks, allocator): no goal there.
        summary.append(summary_row("load_memory", "load_gpt2", "peak RSS increase / file size", ratio,
                                   vs_hf, goal="" if args.quick else f"<= {GOAL}"))
        verdict = "not checked with --quick" if args.quick else ("met" if ratio <= GOAL else "NOT met")
        print(f"\nload_gpt2 peak increase = {ratio:.2f} x file size (goal <= {GOAL}): {verdict}")
    payload = {"machine": info, "file_size": file_size, "rows": rows, "summary": summary}
    path = write_json(RESULTS_DIR / "bench_load_memory.json", payload)
    print(json.dumps(payload["summary"], indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
