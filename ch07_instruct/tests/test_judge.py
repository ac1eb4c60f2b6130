"""The LLM judge against a fake Ollama server on 127.0.0.1: scores, options, retries, errors.

The fake server speaks the two endpoints the judge uses: `GET /api/tags` (the pulled models)
and `POST /api/chat` (non-streaming), and answers each chat with the next scripted reply.
"""

import importlib
import json
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ch07_instruct.judge import (
    RETRY_REMINDER,
    JudgeUnavailable,
    check_server,
    judge,
    judge_prompt,
    judge_summary,
    parse_score,
)

# The module itself (the package's `judge` attribute is the function of that name).
judge_module = importlib.import_module("ch07_instruct.judge")

ENTRIES = [
    {"instruction": "Name the capital of France.", "input": "", "output": "Paris"},
    {"instruction": "Convert to passive voice.", "input": "The cat chased the mouse.",
     "output": "The mouse was chased by the cat."},
]
RESPONSES = ["The capital is Paris.", "The mouse was chased."]


class FakeOllama:
    """State of the fake server: what it lists, what it replies, what it received."""

    def __init__(self):
        self.models = ["llama3.2:latest"]
        self.replies = deque()  # scripted chat replies, one per request
        self.chat_delay = 0.0  # seconds to wait before answering a chat
        self.chats = []  # JSON bodies of the chat requests received
        self.released = threading.Event()  # set at teardown: a waiting handler gives up at once
        self.chat_answer = "ok"  # "ok", or a broken answer: "drip", "error", "wrong shape", "not json"
        self.host = ""


def model_entry(name: str) -> dict:
    return {"name": name, "model": name, "modified_at": "2024-09-25T10:00:00Z", "size": 2019393189,
            "digest": "a80c4f17acd5", "details": {"parent_model": "", "format": "gguf", "family": "llama",
                                                  "families": ["llama"], "parameter_size": "3.2B",
                                                  "quantization_level": "Q4_K_M"}}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output quiet
        pass

    def send_json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        fake = self.server.fake
        if self.path == "/api/tags":
            self.send_json(200, {"models": [model_entry(name) for name in fake.models]})
        else:
            self.send_json(404, {"error": f"no route {self.path}"})

    def do_POST(self):
        fake = self.server.fake
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != "/api/chat" or body.get("stream") is not False:
            self.send_json(400, {"error": f"expected a non-streaming /api/chat request, got {self.path} {body}"})
            return
        fake.chats.append(body)
        if fake.chat_delay and fake.released.wait(fake.chat_delay):
            return  # torn down while waiting: the client is gone, answer nothing
        if fake.chat_answer == "error":
            self.send_json(500, {"error": "model runner crashed"})
            return
        if fake.chat_answer == "wrong shape":
            self.send_json(200, {"answer": "85"})
            return
        if fake.chat_answer == "not json":
            self.send_response(200)
            self.send_header("Content-Length", "9")
            self.end_headers()
            self.wfile.write(b"<html>hi!")
            return
        if fake.chat_answer == "drip":  # a valid answer, one byte per second (at most 30 s)
            data = json.dumps({"model": body["model"], "message": {"role": "assistant", "content": "85"},
                               "done": True}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            for i in range(min(len(data), 30)):
                if fake.released.wait(1.0 if i else 0.0):
                    return
                try:
                    self.wfile.write(data[i:i + 1])
                    self.wfile.flush()
                except OSError:  # the client hung up
                    return
            return
        if not fake.replies:
            self.send_json(500, {"error": "the test scripted no reply for this request"})
            return
        self.send_json(200, {
            "model": body["model"], "created_at": "2024-09-25T10:00:00Z",
            "message": {"role": "assistant", "content": fake.replies.popleft()},
            "done": True, "done_reason": "stop", "total_duration": 1000, "eval_count": 2,
        })


@pytest.fixture
def server():
    """A fake Ollama server in a background thread; yields its FakeOllama state."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.fake = fake = FakeOllama()
    fake.host = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield fake
    fake.released.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture
def down_host():
    """The address of a port nothing listens on (bound to find a free one, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- judge against the fake server -----------------------------------------------------------


def test_judge_parses_the_replies_and_sends_the_prompts(server):
    server.replies.extend(["85", "Score: 70"])
    assert judge(ENTRIES, RESPONSES, host=server.host, progress=False) == [85, 70]
    assert len(server.chats) == 2
    for body, entry, response in zip(server.chats, ENTRIES, RESPONSES):
        assert body["model"] == "llama3.2"
        assert body["messages"] == [{"role": "user", "content": judge_prompt(entry, response)}]


@pytest.mark.parametrize("kwargs, options", [
    ({}, {"seed": 123, "temperature": 0.0, "num_ctx": 2048}),
    ({"seed": 7, "temperature": 0.5, "num_ctx": 4096}, {"seed": 7, "temperature": 0.5, "num_ctx": 4096}),
])
def test_judge_sends_seed_temperature_and_context_length(server, kwargs, options):
    server.replies.extend(["50", "60"])
    judge(ENTRIES, RESPONSES, host=server.host, progress=False, **kwargs)
    assert [body["options"] for body in server.chats] == [options, options]


def test_a_reply_without_a_score_is_asked_once_more_then_gives_none(server):
    server.replies.extend(["I cannot score this.", "Still no number, sorry."])
    assert judge(ENTRIES[:1], RESPONSES[:1], host=server.host, progress=False) == [None]
    assert len(server.chats) == 2
    first, second = (body["messages"][0]["content"] for body in server.chats)
    assert first == judge_prompt(ENTRIES[0], RESPONSES[0])
    assert second == f"{first}\n\n{RETRY_REMINDER}"


def test_the_second_try_can_give_the_score(server):
    server.replies.extend(["Let me think about it.", "60", "90"])
    assert judge(ENTRIES, RESPONSES, host=server.host, progress=False) == [60, 90]
    assert len(server.chats) == 3  # the retry only for the first pair


def test_judge_uses_the_default_host(server, monkeypatch):
    monkeypatch.setattr(judge_module, "DEFAULT_HOST", server.host)
    server.replies.append("42")
    assert judge(ENTRIES[:1], RESPONSES[:1], progress=False) == [42]
    check_server()


# --- the server or the model missing, a slow server --------------------------------------------


def test_a_down_server_says_how_to_start_one(down_host):
    with pytest.raises(JudgeUnavailable, match="ollama serve") as info:
        check_server(host=down_host)
    assert down_host in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(JudgeUnavailable, match="ollama serve"):
        judge(ENTRIES, RESPONSES, host=down_host, progress=False)


@pytest.mark.parametrize("model, listed", [
    ("llama3.2", True),
    ("llama3.2:latest", True),
    ("llama3.2:1b", False),
    ("llama3", False),
])
def test_check_server_matches_the_model_with_its_tag(server, model, listed):
    if listed:
        check_server(model, host=server.host)
    else:
        with pytest.raises(JudgeUnavailable, match=f"ollama pull {model}`"):
            check_server(model, host=server.host)


def test_a_missing_model_fails_before_any_chat(server):
    server.models = ["qwen2.5:0.5b"]
    with pytest.raises(JudgeUnavailable, match="ollama pull llama3.2`") as info:
        judge(ENTRIES, RESPONSES, host=server.host, progress=False)
    assert "qwen2.5:0.5b" in str(info.value)  # says what the server has
    assert server.chats == []


def test_a_slow_server_raises_naming_the_timeout(server):
    server.chat_delay = 2.0
    start = time.perf_counter()
    with pytest.raises(JudgeUnavailable, match=r"timeout of 0\.5 s") as info:
        judge(ENTRIES, RESPONSES, host=server.host, timeout=0.5, progress=False)
    assert time.perf_counter() - start < 1.8  # gave up after the timeout, not after the delay
    assert "\n" not in str(info.value)
    assert len(server.chats) == 1


# --- arguments, prompt, parsing, summary --------------------------------------------------------


@pytest.mark.parametrize("entries, responses, message", [
    (ENTRIES, RESPONSES[:1], "responses has 1 items but entries has 2"),
    (ENTRIES, ["ok", None], r"responses\[1\] is a NoneType"),
    (ENTRIES, "ok", "responses is a str"),
    ([{"instruction": "Say hi.", "input": ""}], ["hi"], r"entries\[0\] has no 'output' key"),
    (["Say hi."], ["hi"], r"entries\[0\] is a str"),
])
def test_bad_arguments_fail_before_contacting_the_server(down_host, entries, responses, message):
    with pytest.raises(ValueError, match=message):
        judge(entries, responses, host=down_host, progress=False)


def test_judge_prompt_holds_the_task_the_reference_and_the_response():
    with_input = judge_prompt(ENTRIES[1], "The mouse was chased.")
    for part in (ENTRIES[1]["instruction"], ENTRIES[1]["input"], ENTRIES[1]["output"], "The mouse was chased.",
                 "0 to 100", "integer number only"):
        assert part in with_input
    without_input = judge_prompt(ENTRIES[0], "Paris")
    assert "Input:" in with_input and "Input:" not in without_input


@pytest.mark.parametrize("text, score", [
    ("85", 85),
    (" 85\n", 85),
    ("Score: 85", 85),
    ("85/100", 85),
    ("**85**", 85),
    ("I'd give it 85 out of 100.", 85),
    ("0", 0),
    ("100", 100),
    ("85.5", 86),
    ("250, no: 40", 40),
    ("llama3 says 70", 70),
    ("I cannot score this", None),
    ("250", None),
    ("-5", None),
    ("", None),
    ("On a scale of 0 to 100, I would rate this 85.", 85),  # the scale is not the score
    ("Out of 100, I'd give it a 40", 40),
    ("Score (0-100): 72", 72),
    ("8/10", 80),  # another scale, converted
    ("4 out of 5", 80),
    ("Rating: 7.5/10", 75),
    ("I rate it 60 out of 100", 60),
])
def test_parse_score(text, score):
    assert parse_score(text) == score


def test_judge_summary_leaves_unscored_out_of_the_mean():
    assert judge_summary([80, None, 40]) == {"scored": 2, "total": 3, "mean": 60.0}
    assert judge_summary([None]) == {"scored": 0, "total": 1, "mean": None}


def test_ask_local_llm_returns_replies_with_the_options(server):
    server.replies.extend(["Please check the report.", "Check it."])
    replies = judge_module.ask_local_llm(["rewrite politely", "rewrite rudely"], host=server.host, progress=False)
    assert replies == ["Please check the report.", "Check it."]
    assert [c["messages"][0]["content"] for c in server.chats] == ["rewrite politely", "rewrite rudely"]
    assert server.chats[0]["options"] == {"seed": 123, "temperature": 0.0, "num_ctx": 2048}


def test_ask_local_llm_without_a_server(down_host):
    with pytest.raises(JudgeUnavailable, match="ollama serve"):
        judge_module.ask_local_llm(["hi"], host=down_host, progress=False)
    with pytest.raises(ValueError, match="prompts must be a list of strings"):
        judge_module.ask_local_llm("hi", host=down_host)


# --- a server that answers slowly, wrongly, or not as Ollama does ---------------------------------


def test_a_server_that_drips_its_answer_is_given_up_on_after_the_timeout(server):
    server.chat_answer = "drip"  # each read gets a byte within the per-read timeout
    start = time.perf_counter()
    with pytest.raises(JudgeUnavailable, match=r"within the timeout of 2\.0 s"):
        judge(ENTRIES[:1], RESPONSES[:1], host=server.host, timeout=2.0, progress=False)
    assert time.perf_counter() - start < 4.0  # the whole request, not each read


@pytest.mark.parametrize("answer, words", [
    ("error", r"answered with an error \(HTTP 500: model runner crashed\)"),
    ("wrong shape", "not an Ollama reply"),
    ("not json", "not an Ollama reply"),
])
def test_a_broken_answer_is_judge_unavailable(server, answer, words):
    server.chat_answer = answer
    with pytest.raises(JudgeUnavailable, match=words) as info:
        judge(ENTRIES[:1], RESPONSES[:1], host=server.host, progress=False)
    assert "\n" not in str(info.value)
    from ch07_instruct.report import score_responses  # documented to always return a row
    row = score_responses(ENTRIES[:1], RESPONSES[:1], host=server.host)
    assert row["judge scored"] == "no server" and row["ROUGE-L"] > 0


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), "5", None])
def test_a_timeout_that_is_not_a_positive_number_is_refused(down_host, timeout):
    with pytest.raises(ValueError, match=r"timeout=.*; use a finite number > 0 \(seconds"):
        judge(ENTRIES, RESPONSES, host=down_host, timeout=timeout, progress=False)
    with pytest.raises(ValueError, match=r"timeout=.*; use a finite number > 0 \(seconds"):
        check_server(host=down_host, timeout=timeout)
