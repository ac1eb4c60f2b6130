"""Getting GPT-2's weights: through $GPT2_DIR and through a Hugging Face Hub stand-in on 127.0.0.1
(HF_ENDPOINT), verified by sha256, cached, refused when tampered with; one sentence naming GPT2_DIR
when neither works; `load_base_model`'s choice and its one line. No test touches the internet.

GPT-2 124M is a random model written by transformers; the larger sizes are sparse files with the
exact header (see tools.gpt2_standins). 124M and 355M are loaded into a model; for 774M and 1558M
the route, the config and every tensor's shape are checked, and the streaming of their weights,
the same code, is left to the smaller sizes (it would add a minute of reading zeros)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch

from ch04_gpt import GPT_CONFIGS, GPTModel
from ch04_gpt.hf_weights import check_hf_shapes
from ch05_pretrain import gpt2_hub, gpt2_weights, load_base_model, load_gpt2
from ch02_data import sha256_of as sha256_file
from ch05_pretrain.gpt2_hub import GPT2_HUB, GPT2Unavailable
from ch05_pretrain.gpt2_weights import read_safetensors_header
from ch05_pretrain.tests.fake_hub import FakeHub
from tools.gpt2_standins import write_standin

RANDOM, LARGE = ("gpt2",), ("gpt2-large", "gpt2-xl")


def _link(src, dst):
    """dst: a folder of hard links to src's files (no copy; works without symlink rights on Windows)."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        try:
            os.link(f, dst / f.name)
        except OSError:  # another file system
            shutil.copy(f, dst / f.name)


@pytest.fixture(scope="module")
def standins(tmp_path_factory, gpt2_standin_dir):
    """A GPT2_DIR with all four sizes: the session's random 124M, sparse files for the others."""
    root = tmp_path_factory.mktemp("gpt2_all_sizes")
    _link(gpt2_standin_dir / "gpt2", root / "gpt2")
    for name in GPT2_HUB:
        if name not in RANDOM:
            write_standin(root, name, sparse=True)
    return root


@pytest.fixture(scope="module")
def sha(standins):
    """Each stand-in's sha256, computed once (the two largest take seconds each)."""
    return {name: sha256_file(standins / name / "model.safetensors") for name in GPT2_HUB}


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A running fake hub as HF_ENDPOINT, online, with an empty Hugging Face cache."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.delenv("GPT2_DIR", raising=False)
    with FakeHub() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        yield fake


def _serve(hub, name, path, sha):
    f = GPT2_HUB[name]
    hub.serve(f.repo_id, f.revision, "model.safetensors", path, sha)


def _pin(monkeypatch, name, sha):
    """Pin `name` to `sha` as the table pins gpt2 (the stand-in is not OpenAI's file)."""
    f = GPT2_HUB[name]
    monkeypatch.setitem(GPT2_HUB, name, gpt2_hub.HubFile(f.repo_id, f.revision, sha))


def _check_header_only(monkeypatch):
    """Make load_gpt2 stop after the shape check for the two largest sizes (see the docstring)."""

    def check(cfg, path, device, dtype):
        header, _ = read_safetensors_header(path)
        with torch.device("meta"):
            model = GPTModel(cfg)
        check_hf_shapes(model, ((k, v["shape"]) for k, v in header.items()))
        return model.eval()

    monkeypatch.setattr(gpt2_weights, "load_gpt2_from_file", check)


@pytest.mark.parametrize("name", list(GPT2_HUB))
def test_every_size_from_gpt2_dir(standins, monkeypatch, name):
    monkeypatch.setenv("GPT2_DIR", str(standins))
    if name in LARGE:
        _check_header_only(monkeypatch)
    model = load_gpt2(name, drop_rate=0.0)
    cfg = GPT_CONFIGS[name]
    assert (model.cfg.emb_dim, model.cfg.n_layers, model.cfg.n_heads) == (cfg.emb_dim, cfg.n_layers, cfg.n_heads)
    assert model.cfg.drop_rate == 0.0 and not model.training
    if name in RANDOM:  # random values, read as written
        from safetensors import safe_open

        with safe_open(str(standins / name / "model.safetensors"), "pt") as f:
            key = next(k for k in f.keys() if k.endswith("h.0.mlp.c_fc.weight"))
            assert torch.equal(model.blocks[0].ff.fc1.weight.t(), f.get_tensor(key))


@pytest.mark.parametrize("name", list(GPT2_HUB))
def test_every_size_from_the_hub_verified_and_cached(standins, sha, hub, monkeypatch, name):
    _serve(hub, name, standins / name / "model.safetensors", sha[name])
    if GPT2_HUB[name].sha256 is not None:
        _pin(monkeypatch, name, sha[name])
    if name in LARGE:
        _check_header_only(monkeypatch)
    model = load_gpt2(name)  # downloaded, verified, loaded
    assert model.cfg.emb_dim == GPT_CONFIGS[name].emb_dim
    assert hub.gets == 1
    got = gpt2_hub.download_from_hub(name)
    assert got.stat().st_size == (standins / name / "model.safetensors").stat().st_size
    gets = hub.gets
    assert gpt2_hub.download_from_hub(name) == got  # the second time: the cache, no download
    assert hub.gets == gets


@pytest.mark.parametrize("offline", [True, False], ids=["HF_HUB_OFFLINE", "hub-gone"])
def test_a_cached_file_needs_no_network(standins, sha, hub, monkeypatch, offline):
    from huggingface_hub import constants

    _serve(hub, "gpt2", standins / "gpt2" / "model.safetensors", sha["gpt2"])
    _pin(monkeypatch, "gpt2", sha["gpt2"])
    gpt2_hub.download_from_hub("gpt2")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing there: must not be asked
    assert gpt2_hub.download_from_hub("gpt2").is_file()


@pytest.mark.parametrize("pinned", [False, True], ids=["declared-sha", "pinned-sha"])
def test_a_tampered_file_is_refused_and_deleted(standins, hub, monkeypatch, tmp_path, pinned):
    good = standins / "gpt2" / "model.safetensors"
    bad = tmp_path / "bad.safetensors"
    data = bytearray(good.read_bytes())
    data[-1] ^= 1  # one bit of the last weight
    bad.write_bytes(bytes(data))
    _serve(hub, "gpt2", bad, sha256_file(good))  # the hub declares the good file's sha256
    _pin(monkeypatch, "gpt2", sha256_file(good) if pinned else None)
    with pytest.raises(GPT2Unavailable, match="sha256 mismatch") as err:
        load_gpt2("gpt2")
    assert "\n" not in str(err.value) and "GPT2_DIR" in str(err.value)
    cache = tmp_path / "hf_cache"
    assert not [p for p in cache.rglob("*") if p.is_file() and p.stat().st_size > 1000]


def test_no_network_and_no_folder_is_one_sentence_naming_gpt2_dir(hub, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # port 9 refuses at once
    for name in GPT2_HUB:
        with pytest.raises(GPT2Unavailable) as err:
            load_gpt2(name)
        message = str(err.value)
        assert "\n" not in message and message.count(". ") == 0
        assert f"$GPT2_DIR/{name}/" in message and "HF_ENDPOINT" in message
        assert f"127.0.0.1:9/openai-community/{name}/resolve/" in message
        assert err.value.name == name and "could not be reached" in err.value.reason


def test_offline_without_cache_says_so(hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(GPT2Unavailable) as err:
        load_gpt2("gpt2")
    assert err.value.reason.startswith("HF_HUB_OFFLINE is set")


def test_a_folder_of_another_size_is_refused(gpt2_standin_dir, tmp_path, monkeypatch):
    _link(gpt2_standin_dir / "gpt2", tmp_path / "gpt2-medium")
    monkeypatch.setenv("GPT2_DIR", str(tmp_path))
    with pytest.raises(ValueError, match=r"does not describe gpt2-medium: emb_dim 768 \(needs 1024\)"):
        load_gpt2("gpt2-medium")


@pytest.mark.parametrize("text, needs", [("{not json", "not valid JSON"), ('{"n_layer": 2}', "lacks")])
def test_a_broken_config_json_is_one_sentence(tmp_path, text, needs):
    (tmp_path / "config.json").write_text(text, encoding="utf-8")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=needs):
        load_gpt2(tmp_path)


# --- load_base_model: which model, and one line saying why --------------------------------------


def test_base_model_falls_back_from_medium_to_124m(gpt2_standin_dir, monkeypatch, capsys):
    monkeypatch.setenv("GPT2_DIR", str(gpt2_standin_dir))
    monkeypatch.setenv("FAST_DEV_RUN", "1")
    base = load_base_model("gpt2-medium")
    assert base.key == "gpt2" and base.is_gpt2 and base.source == "GPT2_DIR"
    assert base.model.cfg.drop_rate == 0.0  # fine-tuning and DPO start without dropout
    out = capsys.readouterr().out.strip()
    assert out.count("\n") == 0 and out.startswith("Base model: OpenAI GPT-2 124M (gpt2), from GPT2_DIR")
    assert "gpt2-medium: fast mode takes GPT-2 only from $GPT2_DIR/gpt2-medium/" in out


def test_base_model_fast_mode_never_downloads(hub, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("FAST_DEV_RUN", "1")
    monkeypatch.setenv("CHECKPOINT_DIR", str(tmp_path / "ckpt"))
    calls = []
    monkeypatch.setattr(gpt2_weights, "download_from_hub", lambda name: calls.append(name))
    from ch05_pretrain import base_model

    monkeypatch.setattr(base_model, "get_fallback_model", lambda device, verbose: (
        torch.nn.Linear(1, 1), {"path": None}))
    base = load_base_model("gpt2")
    assert calls == [] and base.key == "tinystories-fallback-fast" and not base.is_gpt2
    assert "GPT-2 unavailable: gpt2: fast mode takes GPT-2 only from $GPT2_DIR/gpt2/, which is not set" \
        in capsys.readouterr().out


def test_base_model_rejects_an_unknown_name():
    with pytest.raises(ValueError, match=r"name='gpt3' is not a GPT-2 size"):
        load_base_model("gpt3")


# A Jupyter kernel as tqdm.autonotebook detects one (ipykernel.zmqshell imported, a shell that is not
# a Qt console), in a fresh interpreter where huggingface_hub has not been imported yet.
_IN_A_KERNEL = """
import sys, types, warnings
warnings.simplefilter("always")
sys.modules["ipykernel.zmqshell"] = types.ModuleType("ipykernel.zmqshell")
class ZMQInteractiveShell: pass
import IPython
IPython.get_ipython = lambda: ZMQInteractiveShell()
{call}
"""


@pytest.mark.parametrize("call, warns", [
    ("from huggingface_hub import hf_hub_download", True),  # the library alone warns
    ("from ch05_pretrain.gpt2_hub import _reason; _reason(OSError('offline'))", False),
])
def test_no_ipywidgets_warning_in_a_kernel_without_ipywidgets(call, warns):
    pytest.importorskip("IPython")
    try:
        import ipywidgets  # noqa: F401
        pytest.skip("ipywidgets is installed: tqdm has its widget and never warns")
    except ImportError:
        pass
    result = subprocess.run([sys.executable, "-c", _IN_A_KERNEL.format(call=call)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert ("IProgress not found" in result.stderr) == warns, result.stderr[-2000:]
