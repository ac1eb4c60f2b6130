"""Helpers shared by the benchmark scripts: timing, medians, machine info, peak matmul speed,
peak memory, markdown tables and JSON.

Every script writes a JSON file with three keys, which `run_all.py` relies on:
    "machine": machine_info(),
    "rows":    the script's own table (list of dicts),
    "summary": list of summary_row(...) dicts, one per headline number.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ch05_pretrain.memory import PeakRSS  # noqa: F401  (the benchmarks import it from here)

RESULTS_DIR = Path(__file__).resolve().parent / "results"  # git-ignored


def time_call(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call of `fn` (CPU work is synchronous, so no device sync needed)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median(xs: Sequence[float]) -> float:
    """Median: robust to the odd slow run caused by other processes sharing the CPU."""
    return statistics.median(xs)


def paired_ratio(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Median of xs[i] / ys[i] over rounds i, where round i timed both variants back to back.

    On a shared machine the speed drifts by tens of percent over seconds. A slow spell slows both
    runs of a round alike, so the per-round ratio cancels it; the ratio of two medians does not.
    """
    if len(xs) != len(ys) or not xs:
        raise ValueError(f"need two equally long, non-empty lists, got {len(xs)} and {len(ys)}")
    return statistics.median(x / y for x, y in zip(xs, ys))


def cpu_model() -> str:
    """The CPU's marketing name, e.g. "AMD EPYC" (from /proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """What a reader needs to compare numbers: versions, CPU, threads."""
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        info["transformers"] = None
    return info


def print_machine(info: dict) -> None:
    print(
        f"torch {info['torch']}, transformers {info['transformers']}, python {info['python']}; "
        f"CPU {info['cpu']} ({info['cpu_count']} logical cores), torch threads {info['torch_threads']}"
    )


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Best fp32 GFLOP/s of an (n x n) @ (n x n) matmul in this process, with these threads.

    A square matmul of this size is about as fast as this CPU gets in fp32, so it serves as the
    "peak" for model FLOPs utilisation. One matmul costs 2 n^3 FLOPs (a multiply and an add each).
    """
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm up (thread pool, allocator)
    best = min(time_call(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def summary_row(benchmark: str, variant: str, metric: str, value: float, ratio_vs_hf: float | None = None,
                goal: str = "", goal_on: str = "value") -> dict:
    """One headline number for run_all's combined table.

    `goal` is a condition such as "<= 0.90" or ">= 4"; `goal_on` says which number it applies
    to, "value" or "ratio_vs_hf". `goal_met` compares them.
    """
    return {"benchmark": benchmark, "variant": variant, "metric": metric, "value": value,
            "ratio_vs_hf": ratio_vs_hf, "goal": goal, "goal_on": goal_on}


def goal_met(row: dict) -> bool | None:
    """True/False if the summary row's goal holds, None when it has no goal (or no number)."""
    goal, x = row.get("goal") or "", row.get(row.get("goal_on") or "value")
    if not goal or x is None:
        return None
    op, bound = goal.split()
    return x <= float(bound) if op == "<=" else x >= float(bound)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return "" if v is None else str(v)


def markdown_table(rows: list[dict], columns: Sequence[str] | None = None) -> str:
    """Rows of dicts -> a GitHub markdown table (floats to 3 significant digits)."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_json(path: str | Path, payload: dict) -> Path:
    """Write `payload` as indented JSON, creating the folder; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2)
    return path
