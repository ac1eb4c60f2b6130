"""tools.doctor: optional pieces missing still exit 0; a blocking problem exits 1 with one sentence."""

import os
from pathlib import Path

import pytest

from tools import doctor

MIRROR = os.environ.get("DATA_MIRROR", "")  # the one the test run was given (CI: /work/shared/data)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network, no GPT-2 weights, no Ollama, an empty data folder and an empty tiktoken cache."""
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken"))
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")  # discard port: nothing answers
    monkeypatch.delenv("GPT2_DIR", raising=False)
    monkeypatch.setattr(doctor, "_reachable", lambda url, timeout=0: False)
    monkeypatch.setattr(doctor, "_hf_cached", lambda name: None)
    return tmp_path


def lines_by_name(out: str) -> dict[str, str]:
    return {line[7:22].strip(): line for line in out.splitlines() if line.startswith("[")}


def test_optional_pieces_missing_still_exit_0(offline, monkeypatch, capsys):
    if not (MIRROR and (Path(MIRROR) / "the-verdict.txt").is_file()):
        pytest.skip("needs DATA_MIRROR with the data files")
    monkeypatch.setenv("DATA_MIRROR", MIRROR)
    assert doctor.main([]) == 0
    out = capsys.readouterr().out
    lines = lines_by_name(out)
    assert set(lines) == {"python", "pytorch", "packages", "device", "memory", "disk", "data",
                          "tiktoken cache", "gpt-2 weights", "ollama"}
    assert "in DATA_MIRROR of 8" in lines["data"]
    assert lines["gpt-2 weights"].startswith("[info]") and "TinyStories" in lines["gpt-2 weights"]
    assert lines["ollama"].startswith("[info]") and "no server" in lines["ollama"]
    assert lines["tiktoken cache"].startswith("[info]")
    assert out.rstrip().endswith("The course can run here.")


def test_missing_data_without_network_blocks_with_one_sentence(offline, monkeypatch, capsys):
    monkeypatch.setenv("DATA_MIRROR", str(offline / "empty-mirror"))
    assert doctor.main([]) == 1
    out = capsys.readouterr().out
    assert lines_by_name(out)["data"].startswith("[FAIL]")
    problems = out.split("The course cannot run here yet:\n")[1].strip().splitlines()
    assert len(problems) == 1 and problems[0].startswith("- Data files are missing")
    assert problems[0].count(". ") == 0 and "tools.mirror" in problems[0]  # one sentence, with the fix


def test_gpt2_dir_sizes_are_listed(offline, monkeypatch, tmp_path):
    folder = tmp_path / "gpt2dir" / "gpt2"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}", encoding="utf-8")
    (folder / "model.safetensors").write_bytes(b"")
    monkeypatch.setenv("GPT2_DIR", str(tmp_path / "gpt2dir"))
    [check] = doctor.check_gpt2()
    assert check.status == doctor.OK and "gpt2 in GPT2_DIR" in check.detail and "gpt2-medium" not in check.detail


def test_a_failing_device_and_a_broken_check_are_reported(offline, monkeypatch):
    import torch

    monkeypatch.setattr(doctor, "check_device", lambda: [doctor.Check("device", doctor.FAIL, "cuda: differs",
                                                                     "cuda differs from the CPU.")])

    def check_memory():
        return 1 / 0

    monkeypatch.setattr(doctor, "check_memory", check_memory)
    results = {c.name: c for c in doctor.run_checks()}
    assert results["device"].status == doctor.FAIL
    assert results["memory"].status == doctor.WARN and "ZeroDivisionError" in results["memory"].detail
    assert doctor._agrees_with_cpu(torch.device("cpu")) == 0.0  # the comparison itself, CPU against CPU


def test_old_torch_blocks(monkeypatch):
    import torch

    monkeypatch.setattr(torch, "__version__", "2.1.0")
    [check] = doctor.check_torch()
    assert check.status == doctor.FAIL and "2.4 or newer" in check.problem


def test_ollama_check_is_quick_and_optional(offline):
    import time

    start = time.perf_counter()
    [check] = doctor.check_ollama()
    assert check.status == doctor.INFO and time.perf_counter() - start < doctor.OLLAMA_TIMEOUT_S + 1
