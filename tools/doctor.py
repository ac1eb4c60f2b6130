"""Can this machine run the course? One line per check, then what blocks it, if anything.

    python -m tools.doctor

Checks, in order: Python, PyTorch, the packages the chapters import, the device the chapters would
use (and whether a tiny forward and backward pass there agrees with the CPU), memory, disk, the data
files (present, in DATA_MIRROR, or downloadable), tiktoken's cache, OpenAI's GPT-2 weights (which
sizes, where) and an Ollama server for chapter 7's judge. Exit status 0 when the course can run,
offline included: missing GPT-2 weights (the chapters fall back to chapter 5's TinyStories model),
no tiktoken cache (encoder.json and vocab.bpe are read instead) and no Ollama server (the judge is
optional) are reported but do not block. Otherwise exit status 1, with one sentence per blocking
problem. README's troubleshooting asks for this output in a bug report.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

MIN_PYTHON = (3, 10)
MIN_TORCH = (2, 4)
# Imported by the chapters (requirements.txt); the tests' packages are not needed to run a lesson.
PACKAGES = ("tiktoken", "regex", "numpy", "safetensors", "tqdm", "matplotlib", "pandas", "psutil", "sklearn",
            "rouge_score", "ollama", "huggingface_hub")
MIN_FREE_DISK_GB = 1.0  # data 6 MB, checkpoints/ 64 MB, ch05 saves a 1.9 GB checkpoint for a moment
WARN_FREE_DISK_GB = 3.0
MIN_MEMORY_GB = 2.0  # fast mode and chapters 2-4 fit in less; chapter 5's 124M run wants about 4 GB
NETWORK_TIMEOUT_S = 3.0  # per host for the data check
OLLAMA_TIMEOUT_S = 2.0  # in all: the judge is optional, the doctor must not hang on it

OK, WARN, FAIL, INFO = "ok", "warn", "FAIL", "info"


@dataclass
class Check:
    """One line of the report. `problem` is the sentence printed at the end when status is FAIL."""

    name: str
    status: str
    detail: str
    problem: str = ""


def _version_tuple(version: str) -> tuple[int, int]:
    major, minor = version.split("+")[0].split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def check_python() -> list[Check]:
    v = sys.version_info
    detail = f"{platform.python_version()} ({sys.executable})"
    if (v.major, v.minor) < MIN_PYTHON:
        need = ".".join(map(str, MIN_PYTHON))
        return [Check("python", FAIL, detail, f"Python {need} or newer is needed (this is {v.major}.{v.minor}).")]
    return [Check("python", OK, detail)]


def check_torch() -> list[Check]:
    try:
        import torch
    except ImportError:
        return [Check("pytorch", FAIL, "not installed",
                      "PyTorch is not installed: follow README's 'Installing PyTorch', then "
                      "`pip install -r requirements.txt`.")]
    if _version_tuple(torch.__version__) < MIN_TORCH:
        need = ".".join(map(str, MIN_TORCH))
        return [Check("pytorch", FAIL, torch.__version__,
                      f"PyTorch {need} or newer is needed (found {torch.__version__}).")]
    return [Check("pytorch", OK, torch.__version__)]


def check_packages() -> list[Check]:
    missing = []
    for name in PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        return [Check("packages", FAIL, "missing: " + ", ".join(missing),
                      f"Packages the chapters import are missing ({', '.join(missing)}): run "
                      "`pip install -r requirements.txt`.")]
    return [Check("packages", OK, f"the {len(PACKAGES)} the chapters import are installed")]


def _agrees_with_cpu(device) -> float:
    """Largest difference between CPU and `device` in a tiny linear-GELU-linear forward and backward."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))
    x = torch.randn(8, 16)
    results = []
    for where in (torch.device("cpu"), device):
        net.zero_grad()
        net.to(where)
        out = net(x.to(where)).softmax(-1)
        out.pow(2).sum().backward()
        results.append([out.detach().cpu()] + [p.grad.detach().cpu() for p in net.parameters()])
    return max((a - b).abs().max().item() for a, b in zip(*results))


def check_device() -> list[Check]:
    try:
        import torch

        from ch05_pretrain.device import MIN_MPS_TORCH, _mps_usable, get_device
    except ImportError as e:
        return [Check("device", FAIL, f"cannot import ({e})", "The device cannot be checked until the imports "
                      "above work.")]
    mps_note = ""
    if _mps_usable() and _version_tuple(torch.__version__) < MIN_MPS_TORCH:
        mps_note = f"; MPS is present but needs PyTorch >= {MIN_MPS_TORCH[0]}.{MIN_MPS_TORCH[1]}, so the CPU is used"
    try:
        device = get_device(verbose=False)
    except RuntimeError as e:
        return [Check("device", FAIL, str(e), f"The device asked for cannot be used: {e}.")]
    trusted = f"PyTorch >= {MIN_MPS_TORCH[0]}.{MIN_MPS_TORCH[1]}"
    if device.type == "cpu":
        return [Check("device", OK, f"cpu (no CUDA, no MPS with {trusted}; every chapter runs on the CPU)" + mps_note)]
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"Apple MPS, PyTorch {torch.__version__}, {trusted} trusted")
    try:
        diff = _agrees_with_cpu(device)
    except Exception as e:  # a broken driver, an op missing on MPS
        return [Check("device", FAIL, f"{device} ({name}): a tiny forward/backward failed ({type(e).__name__})",
                      f"A tiny forward and backward pass fails on {device} ({e}); run with DEVICE=cpu.")]
    if not diff < 1e-3:
        return [Check("device", FAIL, f"{device} ({name}): differs from the CPU by {diff:.1e}",
                      f"{device} gives results that differ from the CPU by {diff:.1e} in a tiny forward and "
                      "backward pass: upgrade PyTorch, or run with DEVICE=cpu.")]
    return [Check("device", OK, f"{device} ({name}); a tiny forward/backward agrees with the CPU "
                  f"(largest difference {diff:.1e})")]


def check_memory() -> list[Check]:
    try:
        import psutil
    except ImportError:
        return [Check("memory", INFO, "unknown (psutil is not installed)")]
    vm = psutil.virtual_memory()
    detail = f"{vm.total / 1e9:.1f} GB, {vm.available / 1e9:.1f} GB available; {os.cpu_count()} CPU cores"
    if vm.total / 1e9 < MIN_MEMORY_GB:
        return [Check("memory", WARN, detail + f" (under {MIN_MEMORY_GB:g} GB: use fast mode, FAST_DEV_RUN=1)")]
    return [Check("memory", OK, detail)]


def _data_dir() -> Path:
    try:
        from ch02_data.sources import data_dir

        return data_dir()
    except ImportError:
        return Path(os.environ.get("DATA_DIR") or Path(__file__).resolve().parent.parent / "data")


def check_disk() -> list[Check]:
    folder = _data_dir()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    free = shutil.disk_usage(existing).free / 1e9
    detail = f"{free:.1f} GB free at {existing}"
    if free < MIN_FREE_DISK_GB:
        return [Check("disk", FAIL, detail, f"Only {free:.1f} GB of disk is free where the data goes ({existing}); "
                      f"the course needs at least {MIN_FREE_DISK_GB:g} GB (set DATA_DIR and CHECKPOINT_DIR elsewhere).")]
    if free < WARN_FREE_DISK_GB:
        return [Check("disk", WARN, detail + " (chapter 5 saves a 1.9 GB checkpoint for a moment)")]
    return [Check("disk", OK, detail)]


def _reachable(url: str, timeout: float = NETWORK_TIMEOUT_S) -> bool:
    """True when the host of `url` answers an HTTP HEAD request (any status) within `timeout`."""
    req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "gpt-from-scratch-doctor"})
    try:
        with urllib.request.urlopen(req, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True  # the server answered; a 403/405 on HEAD still means the network works
    except Exception:
        return False


def _verified(path: Path, sha256: str) -> bool:
    from ch02_data.download import sha256_of

    return path.is_file() and sha256_of(path) == sha256


def check_data() -> list[Check]:
    try:
        from tools.course_files import DATA_FILES
    except ImportError as e:
        return [Check("data", FAIL, f"cannot import the file list ({e})", "The data files cannot be checked until "
                      "the imports above work.")]
    folder, mirror = _data_dir(), os.environ.get("DATA_MIRROR", "").strip()
    present, mirrored, to_download, missing, bad = [], [], [], [], []
    hosts: dict[str, bool] = {}
    for f in DATA_FILES:
        if _verified(folder / f.name, f.sha256):
            present.append(f.name)
            continue
        if mirror and (_verified(Path(mirror) / f.name, f.sha256)
                       or (f.packed_name and (Path(mirror) / f.packed_name).is_file())):
            mirrored.append(f.name)
            continue
        if mirror and (Path(mirror) / f.name).is_file():
            bad.append(f.name)
        host = urllib.parse.urlsplit(f.urls[0]).netloc
        if host not in hosts:
            hosts[host] = any(_reachable(u) for u in f.urls)
        (to_download if hosts[host] else missing).append(f.name)
    parts = [f"{len(present)} in {folder}"]
    if mirror:
        parts.append(f"{len(mirrored)} in DATA_MIRROR")
    if to_download:
        parts.append(f"{len(to_download)} to download (reachable)")
    detail = ", ".join(parts) + f" of {len(DATA_FILES)}"
    if bad:
        detail += f"; wrong sha256 in DATA_MIRROR: {', '.join(bad)}"
    if missing:
        return [Check("data", FAIL, detail + f"; missing and unreachable: {', '.join(missing)}",
                      f"Data files are missing and cannot be downloaded ({', '.join(missing)}): fill a folder with "
                      "`python -m tools.mirror DIR` on a connected machine and set DATA_MIRROR to it.")]
    return [Check("data", WARN if bad else OK, detail)]


def check_tiktoken() -> list[Check]:
    try:
        from tools.course_files import tiktoken_cache_dir, tiktoken_cache_names
    except ImportError as e:
        return [Check("tiktoken cache", INFO, f"cannot check ({e})")]
    folder = tiktoken_cache_dir()
    if folder is None:
        return [Check("tiktoken cache", INFO, "caching is off (TIKTOKEN_CACHE_DIR is empty); encoder.json and "
                      "vocab.bpe are read from the data files instead")]
    names = tiktoken_cache_names()
    have = [n for n, key in names.items() if (folder / key).is_file()]
    if len(have) == len(names):
        return [Check("tiktoken cache", OK, f"{folder} holds vocab.bpe and encoder.json under tiktoken's names")]
    return [Check("tiktoken cache", INFO, f"{folder} lacks {', '.join(sorted(set(names) - set(have)))}; tiktoken "
                  "downloads them, else chapter 2's gpt2_encoding() reads the data files (no loss)")]


def _hf_cached(name: str) -> str | None:
    """Path of size `name`'s weights in the Hugging Face cache, without any network request."""
    try:
        from huggingface_hub import try_to_load_from_cache

        from ch05_pretrain.gpt2_hub import GPT2_HUB, WEIGHTS_FILE
    except ImportError:
        return None
    f = GPT2_HUB[name]
    path = try_to_load_from_cache(f.repo_id, WEIGHTS_FILE, revision=f.revision)
    return path if isinstance(path, str) else None


def check_gpt2() -> list[Check]:
    try:
        from ch05_pretrain.gpt2_hub import GPT2_SIZES, gpt2_dir, local_folder
    except ImportError as e:
        return [Check("gpt-2 weights", INFO, f"cannot check ({e})")]
    found = []
    for name in GPT2_SIZES:
        if local_folder(name) is not None:
            found.append(f"{name} in GPT2_DIR ({gpt2_dir()})")
        elif _hf_cached(name):
            found.append(f"{name} in the Hugging Face cache")
    if found:
        return [Check("gpt-2 weights", OK, "; ".join(found))]
    return [Check("gpt-2 weights", INFO, "none found locally (GPT2_DIR "
                  f"{'unset' if gpt2_dir() is None else 'holds no size'}, none in the Hugging Face cache): chapters "
                  "download GPT-2 124M on first use, else use chapter 5's TinyStories model")]


def _ollama_models(host: str, timeout: float) -> list[str]:
    """Names of the models an Ollama server at `host` has pulled; raises when it does not answer."""
    import json

    with urllib.request.urlopen(host.rstrip("/") + "/api/tags", timeout=timeout) as resp:
        return [m.get("name", "?") for m in json.load(resp).get("models", [])]


def check_ollama() -> list[Check]:
    host = os.environ.get("OLLAMA_HOST") or "http://localhost:11434"
    if "://" not in host:
        host = "http://" + host
    try:
        models = _ollama_models(host, OLLAMA_TIMEOUT_S)
    except Exception as e:
        reason = getattr(e, "reason", e)
        return [Check("ollama", INFO, f"no server at {host} ({type(reason).__name__}); optional: chapter 7 reports "
                      "ROUGE-L without its judge (`ollama serve`, then `ollama pull llama3.2`)")]
    judge = "llama3.2"
    has = any(m.split(":")[0] == judge for m in models)
    listed = ", ".join(models) or "no models"
    if not has:
        return [Check("ollama", INFO, f"server at {host}: {listed}; `ollama pull {judge}` for chapter 7's judge")]
    return [Check("ollama", OK, f"server at {host}: {listed}")]


def run_checks() -> list[Check]:
    """Every check, in report order (looked up at call time, so tests can replace one)."""
    checks = [check_python, check_torch, check_packages, check_device, check_memory, check_disk, check_data,
              check_tiktoken, check_gpt2, check_ollama]
    results = []
    for check in checks:
        try:
            results.extend(check())
        except Exception as e:  # a check that breaks must not hide the others
            results.append(Check(check.__name__.removeprefix("check_"), WARN, f"the check itself failed: {e!r}"))
    return results


def report(results: list[Check]) -> int:
    """Print one line per check and the blocking problems; return the exit status."""
    for c in results:
        print(f"[{c.status:>4}] {c.name:15s} {c.detail}")
    problems = [c.problem for c in results if c.status == FAIL]
    if problems:
        print("\nThe course cannot run here yet:")
        for p in problems:
            print("- " + p)
        return 1
    print("\nThe course can run here.")
    return 0


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    return report(run_checks())


if __name__ == "__main__":
    sys.exit(main())
