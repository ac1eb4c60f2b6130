"""Run every benchmark script in its own process and print one combined markdown table.

Each `bench_*.py` writes `benchmarks/results/<script name>.json` (git-ignored) with a "summary"
list (see `common.summary_row`); this script collects those rows and checks each goal.

Usage:
    python benchmarks/run_all.py                  # the full benchmarks (minutes on a laptop CPU)
    python benchmarks/run_all.py --quick          # tiny configs, a smoke test
    python benchmarks/run_all.py --only bench_generate
Set OMP_NUM_THREADS to fix the number of threads torch uses in every script.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS_DIR, goal_met, machine_info, markdown_table, print_machine, write_json

HERE = Path(__file__).resolve().parent
SCRIPTS = ["bench_train_step", "bench_generate", "bench_load_memory"]


def run_script(name: str, quick: bool) -> dict:
    """Run benchmarks/<name>.py; return its JSON payload, or {"error": ...} if it failed."""
    out = RESULTS_DIR / f"{name}.json"
    out.unlink(missing_ok=True)  # never report a stale result from an earlier run
    cmd = [sys.executable, str(HERE / f"{name}.py")] + (["--quick"] if quick else [])
    print(f"\n## {name}\n\n$ {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd)  # its output goes straight to our stdout
    print(f"({name}: {time.perf_counter() - t0:.0f} s, exit code {proc.returncode})", flush=True)
    if proc.returncode != 0 or not out.exists():
        return {"error": f"exit code {proc.returncode}" if proc.returncode else f"{out} not written"}
    with open(out, encoding="utf-8") as f:
        return json.load(f)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="pass --quick to every script")
    p.add_argument("--only", nargs="+", choices=SCRIPTS, default=SCRIPTS, help="scripts to run")
    args = p.parse_args()

    info = machine_info()
    print_machine(info)
    results = {name: run_script(name, args.quick) for name in args.only}

    rows = []
    for name, res in results.items():
        if "error" in res:
            rows.append({"benchmark": name, "variant": "FAILED", "metric": res["error"]})
        for r in res.get("summary", []):
            met = goal_met(r)
            rows.append({**r, "goal": f"{r.get('goal_on', 'value')} {r['goal']}" if r.get("goal") else "",
                         "met": "" if met is None else "(quick)" if args.quick else "yes" if met else "NO"})
    print("\n## All benchmarks\n")
    print_machine(info)
    print(markdown_table(rows, ["benchmark", "variant", "metric", "value", "ratio_vs_hf", "goal", "met"]))
    path = write_json(RESULTS_DIR / "all.json", {"machine": info, "quick": args.quick, "summary": rows})
    print(f"\nwrote {path}")
    if any("error" in res for res in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
