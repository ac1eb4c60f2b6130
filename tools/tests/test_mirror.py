"""tools.mirror: verified data files, tiktoken's cache names, GPT-2 in the GPT2_DIR layout, the printed
environment lines, and what it could not get. No test reaches the network."""

import importlib
import os
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest

from ch02_data.download import sha256_of
from tools import mirror
from tools.course_files import DATA_FILES, tiktoken_cache_names

SHARED = os.environ.get("DATA_MIRROR", "")  # the mirror this test run was given (CI: /work/shared/data)
needs_mirror = pytest.mark.skipif(not (SHARED and (Path(SHARED) / "the-verdict.txt").is_file()),
                                  reason="needs DATA_MIRROR with the data files")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def offline(url, tmp, timeout, desc):
        raise urllib.error.URLError("no network in tests")

    # the module, not the function of the same name that ch02_data exports
    monkeypatch.setattr(importlib.import_module("ch02_data.download"), "_fetch_url", offline)
    monkeypatch.delenv("GPT2_DIR", raising=False)


@needs_mirror
def test_fills_data_and_tiktoken_from_data_mirror(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("DATA_MIRROR", SHARED)
    out_dir = tmp_path / "course"
    assert mirror.main([str(out_dir)]) == 0
    for f in DATA_FILES:
        assert sha256_of(out_dir / "data" / f.name) == f.sha256, f.name
    names = tiktoken_cache_names()
    assert names == {"vocab.bpe": "6d1cbeee0f20b3d9449abfede4726ed8212e3aee",
                     "encoder.json": "6c7ea1a7e38e3a7f062df639a5b80947f075ffe6"}
    assert sorted(p.name for p in (out_dir / "tiktoken").iterdir()) == sorted(names.values())
    out = capsys.readouterr().out
    root = out_dir.resolve()
    for line in (f"export DATA_MIRROR={root / 'data'}", f"export TIKTOKEN_CACHE_DIR={root / 'tiktoken'}",
                 f"export GPT2_DIR={root / 'gpt2'}"):
        assert line in out
    assert "Could not get" not in out
    # tiktoken itself reads the cache: no network in a fresh process
    code = "import tiktoken; print(tiktoken.get_encoding('gpt2').encode('Hello, I am'))"
    env = dict(os.environ, TIKTOKEN_CACHE_DIR=str(root / "tiktoken"))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[15496, 11, 314, 716]", result.stderr
    # a second run keeps the verified files and still succeeds
    assert mirror.main([str(out_dir)]) == 0


@needs_mirror
def test_a_file_missing_from_the_source_is_listed(monkeypatch, tmp_path, capsys):
    partial = tmp_path / "partial"
    partial.mkdir()
    for f in DATA_FILES:
        if f.name != "the-verdict.txt":
            (partial / f.name).symlink_to(Path(SHARED) / f.name)
    monkeypatch.setenv("DATA_MIRROR", str(partial))
    assert mirror.main([str(tmp_path / "course")]) == 1
    out = capsys.readouterr().out
    listed = out.split("Could not get:\n")[1].strip().splitlines()
    assert len(listed) == 1 and listed[0].startswith("- the-verdict.txt: Could not download")
    assert "data: 7 of 8 files verified" in out


def test_gpt2_from_gpt2_dir_and_from_the_hub(monkeypatch, tmp_path, capsys):
    source = tmp_path / "teacher-gpt2" / "gpt2"
    source.mkdir(parents=True)
    (source / "config.json").write_text('{"n_layer": 12}', encoding="utf-8")
    (source / "model.safetensors").write_bytes(b"weights of 124M")
    monkeypatch.setenv("GPT2_DIR", str(source.parent))
    cached = tmp_path / "hf-cache-blob"
    cached.write_bytes(b"weights of 355M")

    def fake_hub(name):
        if name == "gpt2-medium":
            return cached
        raise mirror.gpt2_hub.GPT2Unavailable(name, "https://hub.example/x", "the hub is unreachable")

    monkeypatch.setattr(mirror.gpt2_hub, "download_from_hub", fake_hub)
    monkeypatch.setattr(mirror, "fill_data", lambda root: {})  # this test is about GPT-2 only
    monkeypatch.setattr(mirror, "fill_tiktoken", lambda root: {})
    out_dir = tmp_path / "course"
    assert mirror.main([str(out_dir), "--gpt2", "gpt2", "gpt2-medium", "gpt2-large"]) == 1
    assert (out_dir / "gpt2" / "gpt2" / "model.safetensors").read_bytes() == b"weights of 124M"
    assert (out_dir / "gpt2" / "gpt2" / "config.json").read_text(encoding="utf-8") == '{"n_layer": 12}'
    assert (out_dir / "gpt2" / "gpt2-medium" / "model.safetensors").read_bytes() == b"weights of 355M"
    assert '"n_embd": 1024' in (out_dir / "gpt2" / "gpt2-medium" / "config.json").read_text(encoding="utf-8")
    assert not (out_dir / "gpt2" / "gpt2-large").exists()
    out = capsys.readouterr().out
    assert "- GPT-2 gpt2-large: the hub is unreachable" in out
    assert "GPT-2: gpt2, gpt2-medium in" in out
    monkeypatch.setenv("GPT2_DIR", str(out_dir / "gpt2"))  # the mirror's folder is GPT2_DIR's layout
    assert mirror.gpt2_hub.sizes_in_gpt2_dir() == ["gpt2", "gpt2-medium"]
