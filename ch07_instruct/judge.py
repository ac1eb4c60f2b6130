"""An LLM judge: a larger language model scores each response of our fine-tuned GPT-2.

ROUGE-L and exact match (`scores.py`) only compare words. A judge reads the instruction, the
correct output and the model's response, and answers with a score from 0 to 100, so a correct
answer worded differently still scores well. We ask it through Ollama, a program that serves
open models on your own machine, with the official `ollama` Python client.

The judge needs a local Ollama server; nothing here downloads or starts one for you:

1. install Ollama from https://ollama.com/download,
2. start the server with `ollama serve` (the desktop app starts it for you),
3. fetch the judge model once with `ollama pull llama3.2` (about 2 GB).

The server listens on http://localhost:11434 unless the OLLAMA_HOST environment variable (read
when this module is imported) or the `host` argument says otherwise. Without a server,
`check_server` and `judge` raise `JudgeUnavailable`, whose message says how to fix it.

A judge's scores are opinions, not measurements: they change with the judge model (and its
version), and less so with the prompt, the seed and the hardware, so compare models only with
scores from the same judge. For scale: the book reports a mean of about 50 for the fine-tuned
GPT-2 355M when Llama 3 8B is the judge; the smaller default judge here may well differ.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from decimal import ROUND_HALF_UP, Decimal
from typing import TypeVar

import httpx
import ollama
import pydantic
from tqdm import tqdm  # plain text bar: no ipywidgets warning in notebooks

from ch02_data.checks import finite_number

from .data import check_entries

Result = TypeVar("Result")

DEFAULT_JUDGE = "llama3.2"
DEFAULT_HOST = os.environ.get("OLLAMA_HOST") or "http://localhost:11434"

# Added to the prompt when the judge's first reply holds no score.
RETRY_REMINDER = "Reply with one integer from 0 to 100 and nothing else."

# A number that stands alone: not part of a word ("llama3"), a decimal's tail or a negative.
_NUMBER = r"(?<![\w.-])\d+(?:\.\d+)?(?!\w)"
# The scale a reply names, which is not its score: "a scale of 0 to 100", "(1-10)", "0–100".
_SCALE = re.compile(r"(?<![\w.-])[01]\s*(?:to|-|–)\s*(?:10|100)(?!\w)", re.IGNORECASE)
# "out of 100" with no number before it ("Out of 100, I'd give it 40").
_OUT_OF = re.compile(r"(?<!\d)(?<!\d\s)\bout\s+of\s+\d+(?!\w)", re.IGNORECASE)
# A score: a fraction "a/b", "a out of b", or a number alone.
_SCORE = re.compile(rf"(?P<a>{_NUMBER})\s*(?:/|\bout\s+of\b)\s*(?P<b>{_NUMBER})|(?P<n>{_NUMBER})",
                    re.IGNORECASE)


class JudgeUnavailable(RuntimeError):
    """The judge cannot answer: no server, the model is not pulled, or the server is too slow.

    The message is one line that says what failed and how to fix it."""


def _start_hint(model: str) -> str:
    """How to get a server running with the judge `model` on it."""
    return f"start one with `ollama serve` and `ollama pull {model}`, or pass host=..."


@contextmanager
def _server_errors(host: str, model: str, timeout: float) -> Iterator[None]:
    """Turn the client's network errors into a `JudgeUnavailable` with a one-line fix."""
    try:
        yield
    except ConnectionError:  # what the ollama client raises when nothing listens at `host`
        raise JudgeUnavailable(
            f"no Ollama server answered at {host} (could not connect); {_start_hint(model)}"
        ) from None
    except httpx.TimeoutException:  # before TransportError: a timeout is one kind of transport error
        raise JudgeUnavailable(
            f"the Ollama server at {host} did not answer within the timeout of {timeout} s; "
            "pass a larger timeout=... or a smaller judge model=..."
        ) from None
    except httpx.TransportError as exc:
        raise JudgeUnavailable(
            f"the connection to the Ollama server at {host} failed ({type(exc).__name__}: {exc}); "
            "check that `ollama serve` is still running and try again"
        ) from None
    except ollama.ResponseError as exc:  # an HTTP error status
        raise JudgeUnavailable(
            f"the Ollama server at {host} answered with an error (HTTP {exc.status_code}: "
            f"{str(exc.error)[:200]}); check its log, or try again"
        ) from None
    except (json.JSONDecodeError, pydantic.ValidationError):  # JSON of another shape, or none
        raise JudgeUnavailable(
            f"the server at {host} answered with something that is not an Ollama reply; check "
            "that host=... is an Ollama server"
        ) from None


def _check_timeout(timeout) -> float:
    """`timeout` as a float of seconds > 0, else a ValueError (0 would fail as 'no answer')."""
    return finite_number("timeout", timeout, 0, above=True,
                         meaning="seconds: how long one request to the server may take in all")


def _within(timeout: float, client: ollama.Client, request: Callable[[], Result]) -> Result:
    """`request()`, given `timeout` seconds in all. The client's own timeout bounds each read, so
    a server that sends its answer slowly, a byte at a time, could hold it for ever; here the
    request runs in a thread we stop waiting for, and its connection is closed."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = request()
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)  # daemon: never keeps Python alive
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        client._client.close()  # closes the connection the worker reads from
        raise httpx.TimeoutException(f"no complete answer within {timeout} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _with_tag(name: str) -> str:
    """`name` with its tag, as the server lists it: "llama3.2" -> "llama3.2:latest"."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _check_model(client: ollama.Client, model: str, host: str, timeout: float) -> None:
    """Raise JudgeUnavailable unless the server behind `client` answers and has `model`."""
    with _server_errors(host, model, timeout):
        listed = _within(timeout, client, client.list)
    names = sorted(m.model for m in listed.models if m.model)
    if _with_tag(model) not in {_with_tag(name) for name in names}:
        raise JudgeUnavailable(
            f"the Ollama server at {host} has no model {model!r} (it has {names or 'none'}); "
            f"run `ollama pull {model}` or pass model=... with one it has"
        )


def check_server(model: str = DEFAULT_JUDGE, host: str | None = None, timeout: float = 5.0) -> None:
    """Check that an Ollama server answers at `host` (default DEFAULT_HOST) within `timeout`
    seconds and has `model` pulled; raise JudgeUnavailable, saying how to fix it, if not.

    A model named without a tag matches its ":latest" version ("llama3.2" is "llama3.2:latest").
    """
    host = host or DEFAULT_HOST
    timeout = _check_timeout(timeout)
    with ollama.Client(host=host, timeout=timeout) as client:
        _check_model(client, model, host, timeout)


def judge_prompt(entry: dict, response: str) -> str:
    """The message sent to the judge: the task (instruction, and its input when there is one),
    the correct output, the model's response, and how to answer (an integer from 0 to 100)."""
    task_input = entry.get("input", "").strip()
    input_part = f"Input:\n{task_input}\n\n" if task_input else ""
    return (
        "You are grading a response to a task against the correct output.\n\n"
        f"Instruction:\n{entry['instruction']}\n\n"
        f"{input_part}"
        f"Correct output:\n{entry['output']}\n\n"
        f"Response to grade:\n{response}\n\n"
        "Rate the response on a scale from 0 to 100, where 100 means it is as correct and complete "
        "as the correct output and 0 means it is wrong or unrelated. "
        "Respond with the integer number only."
    )


def parse_score(text: str) -> int | None:
    """The judge's score from 0 to 100 in its reply, or None if there is none.

    Copes with the ways models decorate a number: "85", "Score: 85", "85/100", "**85**",
    "I'd give it 85 out of 100." all give 85. A scale the reply names is not a score: "On a
    scale of 0 to 100, I rate it 85" and "Out of 100, I'd give it 40" give 85 and 40. A score on
    another scale is converted: "8/10" and "4 out of 5" give 80. Numbers outside 0..100 ("250")
    are skipped, and so are digits inside a word ("llama3") and negative numbers. A decimal is
    rounded half up: "85.5" gives 86.
    """
    if not isinstance(text, str):
        raise TypeError(f"text is a {type(text).__name__}; give the judge's reply as a str")
    for pattern in (_SCALE, _OUT_OF):  # blank the scale out, keeping the other positions
        text = pattern.sub(lambda m: " " * len(m.group()), text)
    for match in _SCORE.finditer(text):
        value = Decimal(match.group("n") or match.group("a"))
        if match.group("b") is not None:  # a fraction: a/b of the way from 0 to 100
            whole = Decimal(match.group("b"))
            if whole == 0 or value > whole:
                continue
            value = value * 100 / whole
        value = value.to_integral_value(rounding=ROUND_HALF_UP)
        if 0 <= value <= 100:
            return int(value)
    return None


def _check_responses(responses, n_entries: int) -> None:
    """Raise ValueError unless `responses` is a list of `n_entries` strings."""
    if isinstance(responses, (str, bytes)) or not isinstance(responses, Sequence):
        raise ValueError(
            f"responses is a {type(responses).__name__}; give a list of strings, one per entry"
        )
    if len(responses) != n_entries:
        raise ValueError(
            f"responses has {len(responses)} items but entries has {n_entries}; give one response per entry"
        )
    for i, response in enumerate(responses):
        if not isinstance(response, str):
            raise ValueError(
                f"responses[{i}] is a {type(response).__name__} ({response!r}); "
                "every response must be a str (empty is allowed)"
            )


def _ask(client: ollama.Client, model: str, prompt: str, options: dict, timeout: float) -> str:
    """The judge's reply to one user message, within `timeout` seconds in all."""
    reply = _within(timeout, client, lambda: client.chat(
        model=model, messages=[{"role": "user", "content": prompt}], options=options))
    return reply.message.content or ""


def _score_one(client: ollama.Client, model: str, prompt: str, options: dict,
               timeout: float) -> int | None:
    """Ask the judge for a score; if the reply holds none, ask once more with a reminder."""
    score = parse_score(_ask(client, model, prompt, options, timeout))
    if score is None:
        score = parse_score(_ask(client, model, f"{prompt}\n\n{RETRY_REMINDER}", options, timeout))
    return score


def judge(
    entries: Sequence[dict],
    responses: Sequence[str],
    model: str = DEFAULT_JUDGE,
    host: str | None = None,
    *,
    timeout: float = 60.0,
    seed: int = 123,
    temperature: float = 0.0,
    num_ctx: int = 2048,
    progress: bool = True,
) -> list[int | None]:
    """Score each response (0 to 100) with the judge `model` served by Ollama at `host`.

    `entries` are the dataset's dicts ("instruction", "input", "output" = the correct answer);
    `responses[i]` is the model's answer to `entries[i]`. The server is checked first, so a
    missing server or model fails at once. Each pair is sent as `judge_prompt(entry, response)`;
    a reply without a score is asked once more, and if it still has none the score is None.

    `seed` and `temperature=0.0` make the judge as repeatable as it can be; `num_ctx` is the
    judge's context length in tokens (prompt and reply). `timeout` (seconds) bounds each
    request as a whole; a server that stops answering, answers too slowly, with an error or
    with something that is not an Ollama reply raises JudgeUnavailable.
    """
    entries = check_entries(entries, "entries")
    _check_responses(responses, len(entries))
    timeout = _check_timeout(timeout)
    host = host or DEFAULT_HOST
    options = {"seed": seed, "temperature": temperature, "num_ctx": num_ctx}
    return _each_with_server(list(zip(entries, responses)), model, host, timeout, f"judging with {model}", progress,
                             lambda client, pair: _score_one(client, model, judge_prompt(*pair), options,
                                                             timeout))


def _each_with_server(items: list, model: str, host: str, timeout: float, desc: str, progress: bool,
                      ask_one) -> list:
    """`ask_one(client, item)` for each item, after checking the server has `model`; network errors
    become one-line `JudgeUnavailable`s."""
    with ollama.Client(host=host, timeout=timeout) as client:
        _check_model(client, model, host, timeout)
        with _server_errors(host, model, timeout):
            return [ask_one(client, item) for item in tqdm(items, desc=desc, disable=not progress)]


def judge_summary(scores: Sequence[int | None]) -> dict:
    """{"scored": how many got a score, "total": how many there are, "mean": the mean of the
    scores given (None when there is none)}. Unscored responses are left out of the mean."""
    scored = [s for s in scores if s is not None]
    return {"scored": len(scored), "total": len(scores), "mean": sum(scored) / len(scored) if scored else None}


def ask_local_llm(
    prompts: Sequence[str],
    model: str = DEFAULT_JUDGE,
    host: str | None = None,
    *,
    timeout: float = 60.0,
    seed: int = 123,
    temperature: float = 0.0,
    num_ctx: int = 2048,
    progress: bool = True,
) -> list[str]:
    """The replies of `model`, served by Ollama at `host`, to each prompt (one user message each).

    The same server check, options and one-line errors (`JudgeUnavailable`) as `judge`, for other
    uses of a local model: the DPO bonus asks it to rewrite responses into preference pairs.
    """
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be a list of strings (one message per request)")
    timeout = _check_timeout(timeout)
    host = host or DEFAULT_HOST
    options = {"seed": seed, "temperature": temperature, "num_ctx": num_ctx}
    return _each_with_server(list(prompts), model, host, timeout, f"asking {model}", progress,
                             lambda client, prompt: _ask(client, model, prompt, options, timeout))
