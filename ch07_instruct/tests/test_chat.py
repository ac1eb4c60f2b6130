"""The chat page: streaming equals `generate`, inputs are checked, and the app answers through
gradio_client on loopback (a tiny random model, a few seconds)."""

import socket
import threading

import pytest
import torch

from ch02_data import EOT_ID, gpt2_encoding
from ch04_gpt import GPTConfig, GPTModel
from ch05_pretrain import generate, save_checkpoint
from ch07_instruct import chat
from ch07_instruct import chat_model
from ch07_instruct.chat import NO_CLASSIFIER
from ch07_instruct.chat_input import LIMITS, MAX_PROMPT_CHARS, BadInput, chat_prompt, check_settings, clean_text
from ch07_instruct.chat_model import decode, default_checkpoint, describe, load_bundle, stream_tokens
from ch07_instruct.data import format_prompt
from ch07_instruct.respond import extract_response

gr = pytest.importorskip("gradio", reason="the chat page needs gradio (pip install -r requirements.txt)")
TOK = gpt2_encoding()
# Gradio's queue calls a pandas option that pandas 3 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing")


def tiny_model(seed=0, context_length=64):
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=50257, context_length=context_length, emb_dim=32, n_heads=2,
                    n_layers=1, drop_rate=0.0)
    return GPTModel(cfg).eval()


def free_port() -> int:
    """A port nobody listens on now (the OS picks it), on loopback only."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def expected_answer(model, message: str, max_new_tokens: int) -> str:
    """What the page should answer: chapter 5's `generate`, greedy, then `extract_response`."""
    ids = TOK.encode(format_prompt({"instruction": message, "input": ""}))
    out = generate(model, torch.tensor([ids]), max_new_tokens, eos_id=EOT_ID)[0, len(ids):].tolist()
    if EOT_ID in out:
        out = out[: out.index(EOT_ID)]
    return extract_response(decode(TOK, out))


# --- Streaming ------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt_len,max_new", [(5, 20), (60, 8), (64, 3), (80, 3)])
def test_stream_tokens_equals_generate_greedy(prompt_len, max_new):
    """Also across the window's end (64): the prompt fills it, or the answer runs past it."""
    model = tiny_model()
    ids = torch.randint(0, 50257, (prompt_len,), generator=torch.Generator().manual_seed(1)).tolist()
    want = generate(model, torch.tensor([ids]), max_new)[0, prompt_len:].tolist()
    assert list(stream_tokens(model, ids, max_new)) == want


def test_stream_tokens_equals_generate_sampling_and_stops_at_eos():
    model = tiny_model()
    ids = TOK.encode("Once upon a time")
    kw = dict(temperature=1.3, top_k=20, top_p=0.9)
    want = generate(model, torch.tensor([ids]), 8, generator=torch.Generator().manual_seed(7), **kw)
    got = list(stream_tokens(model, ids, 8, generator=torch.Generator().manual_seed(7), **kw))
    assert got == want[0, len(ids):].tolist()
    eos = got[3]  # pretend the 4th token is the end token: the stream yields it and stops
    assert list(stream_tokens(model, ids, 8, eos_id=eos, generator=torch.Generator().manual_seed(7),
                              **kw)) == got[: got.index(eos) + 1]


def test_stream_tokens_restores_training_mode_and_refuses_no_prompt():
    model = tiny_model().train()
    assert len(list(stream_tokens(model, [1, 2], 2))) == 2 and model.training
    with pytest.raises(ValueError, match="empty"):
        next(stream_tokens(model, [], 2))


def test_decode_holds_back_half_characters():
    ids = TOK.encode("a🙂")
    assert decode(TOK, ids[:-1], final=False) == "a"  # the emoji's bytes are not complete yet
    assert decode(TOK, ids) == "a🙂"


# --- Checking inputs ------------------------------------------------------------------------------


def test_clean_text():
    assert clean_text("Hi\r\nthere\t!") == ("Hi\nthere\t!", [])
    text, notes = clean_text("Hi\x00\x1b[31m\udcff!")  # NUL, an escape sequence, invalid UTF-8
    assert text == "Hi[31m!" and "Removed 3" in notes[0]
    text, notes = clean_text("x" * (MAX_PROMPT_CHARS + 5) + "END")
    assert text.endswith("END") and len(text) == MAX_PROMPT_CHARS and "last" in notes[0]
    for bad in ("", "  \n ", "\x00\x07", None):
        with pytest.raises(BadInput, match="empty"):
            clean_text(bad)
    with pytest.raises(BadInput, match="must be text"):
        clean_text(["a list"])


@pytest.mark.parametrize("name,value", [
    ("temperature", -5), ("temperature", float("nan")), ("temperature", float("inf")),
    ("temperature", "0.5"), ("top_k", 10**9), ("top_k", 2.5), ("top_k", True), ("top_p", 0),
    ("top_p", 1.5), ("max_new_tokens", 0), ("max_new_tokens", None), ("max_new_tokens", 10**6),
    ("temperature", 10**400), ("top_k", -10**400), ("max_new_tokens", 10**400),  # no float holds them
])
def test_check_settings_refuses_absurd_values(name, value):
    settings = {k: v[2] for k, v in LIMITS.items()} | {name: value}
    with pytest.raises(BadInput, match=f"^{name}="):
        check_settings(**settings)


def test_check_settings_turns_0_and_1_into_off():
    got = check_settings(temperature=0, top_k=0, top_p=1, max_new_tokens=5.0)
    assert got == {"temperature": 0.0, "top_k": None, "top_p": None, "max_new_tokens": 5}


def test_chat_prompt_keeps_the_end_and_drops_old_turns():
    prompt = format_prompt({"instruction": "Say hi.", "input": ""})
    ids, notes = chat_prompt(TOK, [], "Say hi.", 256, 10)
    assert ids == TOK.encode(prompt) and notes == []
    ids, notes = chat_prompt(TOK, [], "word " * 300 + "LAST", 256, 10)
    assert len(ids) == 256 and TOK.decode(ids).endswith("LAST\n\n### Response:\n")
    assert "longer than the model's window of 256" in notes[0]
    history = [("Q1 " * 40, "A1"), ("Q2", "A2")]
    ids, notes = chat_prompt(TOK, history, "Say hi.", 128, 20)  # the first turn no longer fits
    assert TOK.decode(ids).startswith(format_prompt({"instruction": "Q2", "input": ""}) + "A2<|endoftext|>")
    assert "first 1 of its turns" in notes[0]


# --- Which model, and what the header says ---------------------------------------------------------


def test_default_checkpoint_prefers_the_instruction_model(tmp_path, monkeypatch):
    monkeypatch.setenv("CHECKPOINT_DIR", str(tmp_path))
    assert default_checkpoint() is None
    fallback = chat_model.checkpoint_dir() / chat_model.current_recipe().file_name
    save_checkpoint(fallback, tiny_model(), info={"recipe": {"file_name": fallback.name}})
    assert default_checkpoint() == fallback
    bundle = load_bundle(fallback, device="cpu")
    assert bundle.kind == "pretrained" and bundle.fallback
    assert "This is the fallback model" in describe(bundle) and "Complete tab" in describe(bundle)
    instruct = chat_model.instruction_checkpoint_path("tinystories-fallback-fast" if chat_model.fast_dev_run()
                                                else "tinystories-fallback")
    save_checkpoint(instruct, tiny_model(), base="tinystories-fallback")
    assert default_checkpoint() == instruct
    bundle = load_bundle(instruct, device="cpu")
    assert bundle.kind == "instruction" and "instruction-tuned" in describe(bundle)


def test_load_bundle_refuses_a_classifier_as_the_model(tmp_path):
    from ch06_classify import save_classifier, to_classifier

    path = save_classifier(tmp_path / "clf.pt", to_classifier(tiny_model()))
    with pytest.raises(ValueError, match="pass it with --classifier"):
        load_bundle(path, device="cpu")


@pytest.mark.parametrize("argv,words", [
    (["--port", "99999"], ["--port", "99999"]),
    (["--port", "web"], ["--port", "web"]),
    (["--checkpoint", "no/such.pt"], ["--checkpoint", "no/such.pt", "no such file"]),
    (["--checkpoint", "{text}"], ["--checkpoint", "notes.txt", "not a PyTorch file"]),
    (["--checkpoint", "{model}", "--classifier", "{model}"], ["--classifier", "model.pt", "not a classifier"]),
    (["--checkpoint", "{model}", "--device", "tpu"], ["--device", "tpu", "use cuda, mps or cpu"]),
    (["--checkpoint", "{model}", "--host", "256.1.1.1"], ["--host '256.1.1.1'", "cannot listen there"]),
])
def test_command_line_errors_name_the_argument(argv, words, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a model", encoding="utf-8")
    save_checkpoint(tmp_path / "model.pt", tiny_model())
    paths = {"text": tmp_path / "notes.txt", "model": tmp_path / "model.pt"}
    with pytest.raises(SystemExit) as e:
        chat.main([a.format(**paths) for a in argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err


def test_command_line_without_any_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHECKPOINT_DIR", str(tmp_path))
    with pytest.raises(SystemExit):
        chat.main([])
    assert "no model found" in capsys.readouterr().err


def test_classify_tab_says_how_to_make_a_classifier(tmp_path):
    bundle = load_bundle(save_checkpoint(tmp_path / "m.pt", tiny_model(), base="x"), device="cpu")
    demo = chat.build_app(bundle)
    texts = [b.value for b in demo.blocks.values() if isinstance(b, gr.Markdown)]
    assert NO_CLASSIFIER in texts
    assert "save_classifier" in NO_CLASSIFIER and "--classifier" in NO_CLASSIFIER


# --- The app, through gradio_client ---------------------------------------------------------------


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The page on 127.0.0.1 with a tiny random model and classifier; closed after the tests."""
    pytest.importorskip("gradio_client", reason="these tests need gradio_client")
    from ch06_classify import save_classifier, to_classifier

    folder = tmp_path_factory.mktemp("chat")
    model_path = save_checkpoint(folder / "tiny.pt", tiny_model(), base="tiny-random")
    clf_path = save_classifier(folder / "clf.pt", to_classifier(tiny_model(1)), max_length=20)
    bundle = load_bundle(model_path, device="cpu").add_classifier(clf_path)
    demo = chat.build_app(bundle)
    url = chat.serve(demo, "127.0.0.1", free_port())
    try:
        yield bundle, url
    finally:
        demo.close()


def client(url):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=False, analytics_enabled=False,
                  httpx_kwargs={"timeout": 30})


def reply_of(chat_value) -> str:
    """The text of the last assistant message in a Chatbot value from gradio_client."""
    last = [m for m in chat_value if m["role"] == "assistant"][-1]
    return "".join(part["text"] for part in last["content"] if part.get("type") == "text")


@pytest.fixture(scope="module")
def bad_input_client(app):
    """One session for all bad inputs: none of them may add to its conversation."""
    c = client(app[1])
    yield c
    c.close()


def ask(c, message, temperature=0.0, top_k=50, top_p=1.0, max_new_tokens=24):
    job = c.submit(message, temperature, top_k, top_p, max_new_tokens, api_name="/chat")
    return job.result(timeout=60), job.outputs()


def test_prompt_gets_a_streamed_reply(app):
    bundle, url = app
    c = client(url)
    (conversation, note, box), updates = ask(c, "Name a color.")
    assert reply_of(conversation) == expected_answer(bundle.model, "Name a color.", 24)
    streamed = [reply_of(u[0]) for u in updates if any(m["role"] == "assistant" for m in u[0])]
    assert len(streamed) > 2 and streamed[0] != streamed[-1]  # token by token, not all at once
    assert "24 tokens" in note and box == ""
    (conversation, _, _), _ = ask(c, "And another?")  # the same session remembers the first turn
    assert [m["role"] for m in conversation] == ["user", "assistant"] * 2
    conversation, note = c.predict(api_name="/new_conversation")
    assert conversation == [] and note == ""
    c.close()


@pytest.mark.parametrize("args,message", [
    (("",), "The prompt is empty"),
    (("\x00\x07",), "The prompt is empty"),
    (("Hi", -5), "temperature=-5 is not allowed"),
    (("Hi", 0.0, 10**9), "top_k=1000000000 is not allowed"),
    (("Hi", 0.0, 50, 1.0, 0), "max_new_tokens=0 is not allowed"),
    (("Hi", 0.0, 50, "0.9"), "top_p='0.9' is not allowed"),
])
def test_bad_input_gets_a_message(bad_input_client, args, message):
    (conversation, note, _), _ = ask(bad_input_client, *args)
    assert message in note and conversation == []  # nothing was asked of the model


def call_raw(url: str, body: bytes):
    """POST `body` as it is to the chat endpoint's REST route; (HTTP status, final data or text).
    gradio_client cannot send what a browser never would (it refuses lone surrogates)."""
    import json

    import httpx

    r = httpx.post(url + "gradio_api/call/chat", content=body, timeout=30,
                   headers={"content-type": "application/json"})
    if r.status_code != 200:
        return r.status_code, r.text
    events = httpx.get(url + f"gradio_api/call/chat/{r.json()['event_id']}", timeout=30).text
    assert "event: complete" in events, events
    return r.status_code, json.loads(events.rsplit("data: ", 1)[1])


def test_invalid_utf8_and_control_characters_are_removed(app):
    # Invalid UTF-8 arrives in JSON as a lone surrogate ("\udcff"); ESC is a control character.
    status, (conversation, _, note, _) = call_raw(
        app[1], b'{"data": ["Name\\u001b a color.\\udcff", 0, 50, 1, 3]}')
    assert status == 200 and conversation[0]["content"][0]["text"] == "Name a color."
    assert "Removed 2 control or invalid" in note
    # Raw invalid bytes do not even parse as JSON: refused with a message, no traceback.
    status, text = call_raw(app[1], b'{"data": ["Name \xff\xfe color", 0, 50, 1, 3]}')
    assert status == 400 and "error" in text and "Traceback" not in text
    # Something that is not text at all.
    status, (conversation, _, note, _) = call_raw(app[1], b'{"data": [["x"], {"a": 1}, 50, 1, 3]}')
    assert conversation == [] and "The prompt must be text, not list" in note


def test_complete_and_classify(app):
    bundle, url = app
    c = client(url)
    text, note = c.predict("Once upon a time", 0.0, 50, 1.0, 10, api_name="/complete")
    ids = TOK.encode("Once upon a time")
    want = generate(bundle.model, torch.tensor([ids]), 10, eos_id=EOT_ID)[0, len(ids):].tolist()
    assert text == "Once upon a time" + decode(TOK, [t for t in want if t != EOT_ID])
    label, note = c.predict("WIN a FREE prize now!!!", api_name="/classify")
    assert label["label"] in ("ham", "spam") and "spam probability" in note
    probs = {d["label"]: d["confidence"] for d in label["confidences"]}
    assert abs(probs["spam"] + probs["ham"] - 1) < 1e-6
    _, note = c.predict("", api_name="/classify")
    assert "The message is empty" in note
    c.close()


def test_requests_take_turns_and_keep_their_own_cache(app, monkeypatch):
    """Two visitors at once: one generation at a time, and each gets the answer it gets alone."""
    bundle, url = app
    active, most = [0], [0]
    lock = threading.Lock()
    real = chat.stream_tokens

    def counting(*args, **kwargs):
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        try:
            yield from real(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(chat, "stream_tokens", counting)
    questions = ["Name a color.", "Write a long story about a cat and a dog."]
    clients = [client(url) for _ in questions]
    jobs = [c.submit(q, 0.0, 50, 1.0, 60, api_name="/chat") for c, q in zip(clients, questions)]
    answers = [reply_of(j.result(timeout=60)[0]) for j in jobs]
    assert answers == [expected_answer(bundle.model, q, 60) for q in questions]
    assert most[0] == 1
    for c in clients:
        c.close()


def test_new_conversation_stops_an_answer_asked_through_the_api(app, monkeypatch):
    """An answer still being written when "New conversation" is asked never lands in the new one."""
    import time

    real, started = chat.stream_tokens, threading.Event()

    def slow(*args, **kwargs):
        for token in real(*args, **kwargs):
            started.set()
            time.sleep(0.02)
            yield token

    monkeypatch.setattr(chat, "stream_tokens", slow)
    monkeypatch.setattr(chat, "MARKERS", ())  # never stop early: the answer runs to its limit
    c = client(app[1])
    job = c.submit("Write a long story.", 0.0, 50, 1.0, 200, api_name="/chat")
    assert started.wait(30)
    assert c.predict(api_name="/new_conversation") == ([], "")
    job.result(timeout=60)
    (conversation, _, _), _ = ask(c, "Name a color.", max_new_tokens=2)
    assert [m["role"] for m in conversation] == ["user", "assistant"]  # the new question alone
    c.close()
