"""benchmarks/gpu_check.sh on a machine without CUDA: one line, exit 0; and its step runner,
driven by a stand-in for python, runs the four parts and reports a failing one."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

GPU_CHECK = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"
PARTS = ("tests", "train", "generate", "notebook")

needs_bash = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils' timeout")


@needs_bash
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_without_cuda_one_line_and_exit_0():
    out = subprocess.run(["bash", str(GPU_CHECK)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("\n") == 1 and "no CUDA GPU" in out.stdout


@needs_bash
def test_runs_every_part_and_names_the_one_that_failed(tmp_path):
    # A stand-in python: "succeeds" at the CUDA check, prints each part it is asked to run, and
    # fails the generation part.
    fake = tmp_path / "python"
    fake.write_text('#!/usr/bin/env bash\necho "ran $*"\n[ "$2" = generate ] && exit 3\nexit 0\n',
                    encoding="utf-8")
    fake.chmod(0o755)
    out = subprocess.run(["bash", str(GPU_CHECK)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHON": str(fake)})
    assert out.returncode == 1
    for part in PARTS:
        assert f"ran benchmarks/bench_gpu.py {part}" in out.stdout
    assert "generate: failed (exit code 3)" in out.stdout
    assert "gpu_check: failed: generate" in out.stdout


@pytest.mark.parametrize("name,tflops", [
    ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H200", 989.0),
    ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA A10G", 125.0), ("NVIDIA L40S", 362.0),
    ("NVIDIA L4", 121.0), ("NVIDIA GeForce RTX 4090", 165.0), ("Tesla T4", 65.0),
    ("Some Future GPU", None),
])
def test_bf16_peak_lookup_prefers_the_specific_name(monkeypatch, name, tflops):
    monkeypatch.syspath_prepend(str(GPU_CHECK.parent))  # the benchmark scripts import `common`
    from bench_gpu import bf16_peak

    assert bf16_peak(name)[0] == tflops
