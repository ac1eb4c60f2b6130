"""The chat page's GPT-2 branch: `python -m ch07_instruct.chat --base gpt2` serves GPT-2 124M
through chapter 5's load_base_model (here stand-in weights of its exact shapes in $GPT2_DIR), and
the page answers through gradio_client on loopback, streaming from the 124M model."""

import socket

import pytest

from ch07_instruct import chat
from ch07_instruct.chat_model import bundle_from_base, describe

gr = pytest.importorskip("gradio", reason="the chat page needs gradio (pip install -r requirements.txt)")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_base_gpt2_is_loaded_with_one_line(gpt2_standin_dir, monkeypatch, capsys):
    monkeypatch.setenv("GPT2_DIR", str(gpt2_standin_dir))
    monkeypatch.setenv("FAST_DEV_RUN", "1")
    bundle_from_base("gpt2", "cpu")
    assert "Base model: OpenAI GPT-2 124M (gpt2), from GPT2_DIR." in capsys.readouterr().out


def test_base_gpt2_is_served_and_answers(gpt2_standin_dir, monkeypatch):
    # No capsys here: the server's threads would keep writing to its stream after the test.
    pytest.importorskip("gradio_client", reason="this test needs gradio_client")
    from gradio_client import Client

    monkeypatch.setenv("GPT2_DIR", str(gpt2_standin_dir))
    monkeypatch.setenv("FAST_DEV_RUN", "1")
    bundle = bundle_from_base("gpt2", "cpu")
    assert not bundle.fallback and bundle.kind == "pretrained"
    assert sum(p.numel() for p in bundle.model.parameters()) == 124_439_808
    header = describe(bundle)
    assert "`gpt2`: 124.4M parameters, a window of 1024 tokens" in header and "fallback" not in header
    demo = chat.build_app(bundle)
    url = chat.serve(demo, "127.0.0.1", free_port())
    try:
        client = Client(url, verbose=False, download_files=False, analytics_enabled=False,
                        httpx_kwargs={"timeout": 60})
        text, note = client.predict("Every effort moves you", 0.0, 50, 1.0, 8, api_name="/complete")
        client.close()
    finally:
        demo.close()
    assert isinstance(text, str) and text.startswith("Every effort moves you") and len(text) > 22, (text, note)


def test_base_and_checkpoint_together_are_refused(capsys, tmp_path):
    with pytest.raises(SystemExit):
        chat.main(["--base", "gpt2", "--checkpoint", str(tmp_path / "x.pt")])
    assert "--base and --checkpoint: give one of them" in capsys.readouterr().err


def test_an_unknown_base_is_one_sentence(capsys):
    with pytest.raises(SystemExit):
        chat.main(["--base", "gpt3"])
    assert "--base 'gpt3': use one of gpt2, gpt2-medium, gpt2-large, gpt2-xl or fallback" in capsys.readouterr().err


