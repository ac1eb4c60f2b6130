"""The chat page in a real browser: headless Chromium driven by Playwright's Python package.

The browser is Debian's `chromium` package (`.ci/run` installs it when missing), started through
`executable_path`, so Playwright's own browser download is never needed. Without Playwright or
Chromium these tests are skipped with the reason. Every server listens on 127.0.0.1 only and is
closed when its tests end.
"""

import json
import shutil
import socket
import statistics
import time
from pathlib import Path

import pytest
import torch

from ch04_gpt import GPT_CONFIGS, GPTConfig, GPTModel
from ch05_pretrain import save_checkpoint

pytest.importorskip("gradio", reason="the chat page needs gradio (pip install -r requirements.txt)")
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed: pip install "
                               "playwright (its own browser download is not needed: Debian's chromium is used)")
from ch07_instruct import chat, chat_model  # noqa: E402  (after the skips above)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing")

# The last assistant message, and the note under the chat, as the reader sees them.
LAST_REPLY = "() => { const b = document.querySelectorAll('#chatbot .bot'); return b.length ? b[b.length - 1].innerText.trim() : '' }"
NOTE = "() => document.querySelector('#chat-note').innerText"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium_executable() -> str | None:
    """Debian's Chromium. /usr/bin/chromium is a shell wrapper around the real binary; start
    the binary itself, as the wrapper adds nothing headless needs."""
    real = Path("/usr/lib/chromium/chromium")
    if real.is_file():
        return str(real)
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    executable = chromium_executable()
    if executable is None:
        pytest.skip("no Chromium found: install Debian's package (apt-get install chromium); .ci/run does")
    with sync_api.sync_playwright() as pw:
        # --no-sandbox: Chromium's sandbox refuses to run as root, which CI containers are.
        b = pw.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"],
                               timeout=30_000)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def tiny_page(tmp_path_factory):
    """The page's URL, serving a tiny random model loaded from a checkpoint as the command line
    would load it."""
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=50257, context_length=128, emb_dim=32, n_heads=2, n_layers=1, drop_rate=0.0)
    path = save_checkpoint(tmp_path_factory.mktemp("chat") / "tiny.pt", GPTModel(cfg), base="tiny-random")
    demo = chat.build_app(chat.load_bundle(path, device="cpu"))
    try:
        yield chat.serve(demo, "127.0.0.1", free_port())
    finally:
        demo.close()


def open_page(browser, url):
    """A fresh page at `url`, recording console errors and uncaught exceptions in page.errors."""
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.set_default_timeout(20_000)
    page.errors = []
    page.on("console", lambda m: m.type == "error" and page.errors.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: page.errors.append(f"page error: {e}"))
    page.goto(url)
    # The message box takes the focus by itself, so a keyboard user can type at once.
    page.wait_for_function("() => document.activeElement && document.activeElement.closest('#prompt')")
    return page


def test_type_a_prompt_press_enter_and_watch_tokens_arrive(browser, tiny_page, tmp_path):
    page = open_page(browser, tiny_page)
    assert "Talk to your model" in page.inner_text("#header")
    # Record every text the answer shows while it grows.
    page.evaluate("""() => { window.seen = new Set();
        new MutationObserver(() => { const b = document.querySelectorAll('#chatbot .bot');
            if (b.length) window.seen.add(b[b.length - 1].innerText); })
        .observe(document.querySelector('#chatbot'), {subtree: true, childList: true, characterData: true}); }""")
    page.keyboard.type("Name a color.")  # the message box has the focus when the page opens
    page.keyboard.press("Enter")
    page.wait_for_function(f"({LAST_REPLY})().length > 0")
    page.wait_for_function(f"({NOTE})().includes('tokens,')")  # the answer is complete
    seen = {s for s in page.evaluate("() => [...window.seen]") if s.strip()}
    assert len(seen) > 2, seen  # the answer grew token by token
    assert page.input_value("#prompt textarea") == ""  # the box is ready for the next message
    page.screenshot(path=tmp_path / "chat-page.png", full_page=True)
    assert (tmp_path / "chat-page.png").stat().st_size > 10_000
    page.locator("#chatbot").get_by_role("button", name="Clear").click()  # the trash icon
    page.wait_for_function(f"({NOTE})().trim() === ''")  # the conversation is forgotten too
    assert page.locator("#chatbot .user").count() == 0
    assert page.errors == []
    page.close()


def test_keyboard_alone(browser, tiny_page):
    page = open_page(browser, tiny_page)
    page.keyboard.press("Enter")  # an empty prompt: a message, no request to the model
    page.wait_for_function(f"({NOTE})().includes('empty')")
    page.keyboard.type("Hi")
    page.keyboard.press("Tab")  # from the message box to Send
    assert page.evaluate("document.activeElement.id") == "send"
    page.keyboard.press("Enter")
    page.wait_for_function(f"({NOTE})().includes('tokens,')")
    assert page.locator("#chatbot .user").count() == 1
    page.keyboard.press("Tab")  # then to New conversation
    assert page.evaluate("document.activeElement.id") == "new-conversation"
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelectorAll('#chatbot .user').length == 0")
    assert page.errors == []
    page.close()


def test_classify_tab_without_a_classifier_says_how_to_make_one(browser, tiny_page):
    page = open_page(browser, tiny_page)
    page.get_by_role("tab", name="Classify").click()
    page.get_by_text("No classifier is loaded").wait_for()
    assert "--classifier" in page.inner_text("#classify-note")
    assert page.errors == []
    page.close()


def test_first_token_of_gpt2_124m_within_a_second(browser, record_property, tmp_path):
    """The issue's goal, measured in the browser: from pressing Enter to the first token of the
    answer on screen, with a GPT-2 124M (random weights: OpenAI's are not available offline;
    the time does not depend on the values). The best of three tries must meet the goal, so a
    moment of load on a shared machine does not fail the test; all three are reported."""
    torch.manual_seed(0)
    model = GPTModel(GPT_CONFIGS["gpt2"].replace(drop_rate=0.0)).set_fast_path(True).eval()
    # Served as load_bundle would serve it, without the 500 MB round trip through a file
    # (loading is tested with the tiny model; what counts here is the time per request).
    bundle = chat_model.Bundle(model, Path("gpt2-124M-random.pt"), "pretrained", False,
                               torch.device("cpu"), chat_model.gpt2_encoding())
    demo = chat.build_app(bundle)
    url = chat.serve(demo, "127.0.0.1", free_port())
    try:
        page = open_page(browser, url)
        page.get_by_label("number input for max new tokens").fill("4")  # short answers: quick test
        page.get_by_label("number input for max new tokens").press("Tab")
        box, times = page.locator("#prompt textarea"), []
        for question in ("Name a color.", "What is the capital of France?", "Give me a synonym for fast."):
            box.click()
            box.fill(question)
            start = time.perf_counter()
            box.press("Enter")
            page.wait_for_function(f"({LAST_REPLY})().length > 0", polling="raf")
            times.append(time.perf_counter() - start)
            page.wait_for_function(f"({NOTE})().includes('tokens,')")
            page.get_by_role("button", name="New conversation").click()
            page.wait_for_function("() => document.querySelectorAll('#chatbot .user').length == 0")
        assert page.errors == []
        page.close()
    finally:
        demo.close()
    result = {"model": "GPT-2 124M (random weights)", "first_token_s": [round(t, 3) for t in times],
              "median_s": round(statistics.median(times), 3), "torch_threads": torch.get_num_threads()}
    (tmp_path / "first-token.json").write_text(json.dumps(result), encoding="utf-8")
    record_property("first_token_s", result["first_token_s"])
    print(f"first token on screen after {result['first_token_s']} s (median {result['median_s']} s)")
    assert min(times) < 1.0, result
