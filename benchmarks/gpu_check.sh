#!/usr/bin/env bash
# GPU check (issue 15): on one CUDA GPU, in at most 8 minutes, run
#   1. the CUDA-only tests, unskipped                                     (limit 1.5 min)
#   2. GPT-2 124M train steps, bf16 autocast + torch.compile + flash attention,
#      batch 16 x 1024: tokens/s and MFU against the GPU's dense bf16 peak  (limit 3 min)
#   3. cached generation tokens/s at batch 1 and batch 16                   (limit 1 min)
#   4. chapter 5's notebook in fast mode (FAST_DEV_RUN=1), on the GPU       (limit 2.5 min)
# Each step has its own time limit, so one that hangs cannot eat the others' time. The
# measurements are printed and written to benchmarks/results/bench_gpu_*.json (git-ignored).
# On a machine without CUDA it says so in one line and exits 0.
#
#     bash benchmarks/gpu_check.sh
set -u
cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-python}

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA GPU visible to PyTorch on this machine; nothing to check."
    exit 0
fi

failed=()
step() {  # step SECONDS PART: one part of bench_gpu.py under its own time limit
    echo
    echo "## $2 (limit $1 s)"
    local t0=$SECONDS
    timeout "$1" "$PY" benchmarks/bench_gpu.py "$2"
    local rc=$?
    if [ "$rc" -ne 0 ]; then
        [ "$rc" -eq 124 ] && echo "$2: timed out after $1 s" || echo "$2: failed (exit code $rc)"
        failed+=("$2")
    fi
    echo "($2: $((SECONDS - t0)) s)"
}

step 90 tests
step 180 train
step 60 generate
step 150 notebook

echo
if [ ${#failed[@]} -eq 0 ]; then
    echo "gpu_check: all four parts passed in $SECONDS s."
else
    echo "gpu_check: failed: ${failed[*]} ($SECONDS s)."
    exit 1
fi
