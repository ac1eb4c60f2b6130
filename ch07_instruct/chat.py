"""Talk to your model: a small local web page, made with Gradio, for any chapter checkpoint.

    python -m ch07_instruct.chat                        # the best model in checkpoints/
    python -m ch07_instruct.chat --checkpoint my.pt --classifier spam.pt --port 7861

Three tabs share one model, loaded once: **Chat** asks the model in chapter 7's prompt format
(`format_prompt`, the function training used) and streams its reply token by token; **Complete**
continues plain text, as a chapter-5 model was trained to; **Classify** runs a chapter-6 spam
classifier. The page runs wherever `get_device()` points (CUDA, MPS or the CPU).

Three decisions shape the code:
- Streaming needs each token as soon as it is chosen, and chapter 5's `generate` returns only
  when it is done. `stream_tokens` is the same decoding loop (KV cache, sampling through
  `sample_next_token`) written as a Python generator; a test checks it gives `generate`'s tokens.
- Requests take turns: the queue runs one model request at a time, and every request makes its
  own KV cache, so a second visitor waits instead of writing into the first one's cache.
- Everything that comes from the browser is checked here, on the server: the page's sliders
  keep honest visitors in range, but anyone can send any value straight to the API. A bad value
  is answered with one sentence in the page. Files come only from the command line.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import sys
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from numbers import Real
from pathlib import Path

import torch

from ch02_data import EOT_ID, fast_dev_run, gpt2_encoding
from ch04_gpt import GPTConfig, GPTModel
from ch05_pretrain import get_device, load_checkpoint, sample_next_token
from ch05_pretrain.fallback import checkpoint_dir, current_recipe, shown

from .data import encode_example, format_prompt
from .finetune import instruction_checkpoint_path
from .respond import NEXT_TURN_MARKERS, extract_response

# (lowest, highest, default) of each control; the sliders and the server-side checks share them.
LIMITS = {
    "temperature": (0.0, 2.0, 0.0),  # 0 = greedy, as chapter 7 evaluates its answers
    "top_k": (0, 200, 50),  # 0 = off: every token can be drawn
    "top_p": (0.05, 1.0, 1.0),  # 1 = off
    "max_new_tokens": (1, 1024, 128),
}
MAX_PROMPT_CHARS = 20_000  # longer text is cut (from the start) before it is even tokenized
MARKERS = NEXT_TURN_MARKERS["alpaca"]  # a model that starts a new "### Instruction:" is done


class BadInput(ValueError):
    """An input the page answers with a message instead of a reply."""


# --- The model ----------------------------------------------------------------------------------


@dataclass
class Bundle:
    """What the page serves: one model, its tokenizer, and an optional chapter-6 classifier."""

    model: GPTModel  # eval mode, on `device`
    path: Path
    kind: str  # "instruction" (chapter 7) or "pretrained" (chapter 5, or any plain GPT checkpoint)
    fallback: bool  # built on chapter 5's TinyStories model because GPT-2's weights were missing
    device: torch.device
    tokenizer: object
    classifier: GPTModel | None = None
    classifier_extra: dict | None = None  # max_length, pooling ... as save_classifier stored them
    classifier_path: Path | None = None

    def add_classifier(self, path: str | Path) -> "Bundle":
        """Load a classifier saved by chapter 6's `save_classifier` (weights_only) for the Classify tab."""
        from ch06_classify import load_classifier  # chapter 6 only when its tab is used

        self.classifier, self.classifier_extra = load_classifier(path, self.device)
        self.classifier_path = Path(path)
        return self


def default_checkpoint() -> Path | None:
    """The best model in the checkpoint folder: chapter 7's instruction model (made from GPT-2
    355M, 124M or the TinyStories fallback, in that order), else chapter 5's fallback model."""
    fast = "-fast" if fast_dev_run() else ""
    bases = ("gpt2-medium", "gpt2", f"tinystories-fallback{fast}")
    candidates = [instruction_checkpoint_path(b) for b in bases]
    candidates.append(checkpoint_dir() / current_recipe().file_name)
    return next((p for p in candidates if p.is_file()), None)


def load_bundle(checkpoint: str | Path, device: torch.device | str | None = None) -> Bundle:
    """Load a GPT checkpoint once, for every request, on `device` (default: `get_device()`).

    The file is read with `weights_only=True` (chapter 5's `load_checkpoint`): nothing in it is
    executed. The model runs on its fast path (fused kernels; tested equal to the readable
    one). Raises ValueError for a file that is not a GPT language-model checkpoint.
    """
    device = get_device(None if device is None else str(device))  # checks the accelerator exists
    path = Path(checkpoint)
    ckpt = load_checkpoint(path, device)
    if "num_classes" in ckpt:
        raise ValueError(f"{str(path)!r} is a chapter-6 classifier; pass it with --classifier")
    if ckpt.get("config") is None:
        raise ValueError(f"{str(path)!r} holds no model config; save it with save_checkpoint")
    model = GPTModel(GPTConfig.from_dict(ckpt["config"]))
    model.load_state_dict(ckpt["model"])
    model = model.to(device).set_fast_path(True).eval()
    base = str(ckpt.get("base") or "")  # chapter 7 stores the base model's name
    recipe = (ckpt.get("info") or {}).get("recipe") or {}  # chapter 5's fallback stores its recipe
    fallback = base.startswith("tinystories") or str(recipe.get("file_name", "")).startswith("tinystories")
    return Bundle(model, path, "instruction" if base else "pretrained", fallback, device, gpt2_encoding())


def describe(bundle: Bundle) -> str:
    """The page header (Markdown): which model is loaded, and what to expect of it."""
    cfg = bundle.model.cfg
    n_params = sum(p.numel() for p in bundle.model.parameters()) / 1e6
    what = ("chapter 7's instruction-tuned model" if bundle.kind == "instruction"
            else "a pretrained model (not instruction-tuned)")
    lines = [f"# Talk to your model\n\n**Loaded:** {what}, `{shown(bundle.path)}`: {n_params:.1f}M "
             f"parameters, a window of {cfg.context_length} tokens, on `{bundle.device}`."]
    if bundle.fallback:
        lines.append("**This is the fallback model**: OpenAI's GPT-2 weights were not available, so "
                     "it is built on chapter 5's small TinyStories model. Expect short, simple and "
                     "often wrong answers.")
    if bundle.kind == "pretrained":
        lines.append("It was never taught to follow instructions: the Complete tab suits it best.")
    return "\n\n".join(lines)


# --- Generation, one token at a time --------------------------------------------------------------


@torch.no_grad()
def stream_tokens(model: GPTModel, ids: list[int], max_new_tokens: int, temperature: float = 0.0,
                  top_k: int | None = None, top_p: float | None = None, eos_id: int | None = None,
                  generator: torch.Generator | None = None) -> Iterator[int]:
    """Yield the token ids that follow `ids` one at a time, each as soon as it is chosen.

    The same decoding as `ch05_pretrain.generate` for a batch of one (tests check the tokens are
    equal): the prompt is read once into a fresh KV cache, then each step feeds only the newest
    token; `eos_id` is yielded and ends the stream. Past the window the cache is stale (absolute
    positions shift), so each step re-reads the last `context_length` tokens, as `generate` does.
    Only the last position goes through the output head: the others' logits are never used.
    """
    if not ids:
        raise ValueError("ids is empty; give at least one token id")
    n_ctx = model.cfg.context_length
    device = next(model.parameters()).device
    idx = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T)
    cache = model.new_kv_cache()  # this request's own cache: nothing is shared between requests
    was_training = model.training
    model.eval()
    try:
        for step in range(max_new_tokens):
            if idx.size(1) > n_ctx:  # the window slid: recompute it without the cache
                hidden = model.hidden_states(idx[:, -n_ctx:])
            elif step == 0:  # prefill: the whole prompt into the cache
                hidden = model.hidden_states(idx, cache, start_pos=0)
            else:  # decode: the newest token only
                hidden = model.hidden_states(idx[:, -1:], cache, start_pos=idx.size(1) - 1)
            logits = model.out_head(hidden[:, -1, :])  # (1, V)
            next_id = sample_next_token(logits, temperature, top_k, top_p, generator)  # (1, 1)
            yield int(next_id)
            if eos_id is not None and int(next_id) == eos_id:
                return
            idx = torch.cat([idx, next_id], dim=1)  # (1, T + 1)
    finally:
        model.train(was_training)


def decode(tokenizer, ids: list[int], final: bool = True) -> str:
    """Text of token ids. A token can end in the middle of a UTF-8 character (an emoji takes
    several); while streaming (`final=False`) such an unfinished character is left out."""
    return tokenizer.decode_bytes(ids).decode("utf-8", errors="replace" if final else "ignore")


# --- Checking what the browser sent -----------------------------------------------------------


def clean_text(text, what: str = "prompt") -> tuple[str, list[str]]:
    """(text fit for the tokenizer, notes for the page). Refuses non-text and empty text.

    Control characters other than newline and tab are removed, and so are lone surrogates,
    which is what invalid UTF-8 becomes in JSON ("\\udcff"); the tokenizer cannot encode them.
    Text longer than MAX_PROMPT_CHARS keeps its end.
    """
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise BadInput(f"The {what} must be text, not {type(text).__name__}.")
    notes = []
    if len(text) > MAX_PROMPT_CHARS:
        notes.append(f"The {what} has {len(text):,} characters: only its last {MAX_PROMPT_CHARS:,} are used.")
        text = text[-MAX_PROMPT_CHARS:]
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    kept = "".join(c for c in text if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cs"))
    if len(kept) != len(text):
        notes.append(f"Removed {len(text) - len(kept)} control or invalid (non-UTF-8) characters from the {what}.")
    if not kept.strip():
        raise BadInput(f"The {what} is empty: type something first.")
    return kept, notes


def _number(name: str, value, integer: bool = False) -> float | int:
    """`value` if it is a number within LIMITS[name] (a whole one if `integer`), else BadInput."""
    lo, hi, _ = LIMITS[name]
    kind = "a whole number" if integer else "a number"
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not lo <= value <= hi or (integer and value != int(value)):
        raise BadInput(f"{name}={value!r:.40} is not allowed: use {kind} from {lo:g} to {hi:g}.")
    return int(value) if integer else float(value)


def check_settings(temperature, top_k, top_p, max_new_tokens) -> dict:
    """The sampling settings as `stream_tokens` takes them (0 / 1 mean "off"), or BadInput."""
    top_k = _number("top_k", top_k, integer=True)
    top_p = _number("top_p", top_p)
    return {"temperature": _number("temperature", temperature),
            "top_k": top_k or None, "top_p": None if top_p == 1.0 else top_p,
            "max_new_tokens": _number("max_new_tokens", max_new_tokens, integer=True)}


def chat_prompt(tokenizer, history: list, message: str, n_ctx: int, max_new_tokens: int) -> tuple[list[int], list[str]]:
    """(prompt ids, notes): the earlier turns laid out as training examples (`encode_example`:
    prompt, answer, end token), then the new message in the training format (`format_prompt`).

    Only the latest turns that leave the answer room in the window (`n_ctx` tokens) are kept. A
    message longer than the window on its own keeps its last `n_ctx` tokens.
    """
    ids = tokenizer.encode(format_prompt({"instruction": message, "input": ""}), disallowed_special=())
    if len(ids) > n_ctx:
        return ids[-n_ctx:], [f"The prompt is {len(ids)} tokens, longer than the model's window of "
                              f"{n_ctx}: the model sees only its last {n_ctx} tokens."]
    room, kept = n_ctx - len(ids) - max_new_tokens, []
    for question, answer in reversed(history):  # newest first; stop at the first that does not fit
        turn = encode_example({"instruction": question, "input": "", "output": answer}, tokenizer)[0]
        if len(turn) > room:
            break
        kept.insert(0, turn)
        room -= len(turn)
    notes = []
    if len(kept) < len(history):
        notes.append(f"The conversation no longer fits the window of {n_ctx} tokens: the model does "
                     f"not see the first {len(history) - len(kept)} of its turns.")
    return [t for turn in kept for t in turn] + ids, notes


def _note(notes: list[str]) -> str:
    return "\n\n".join(notes)


# --- What each tab does -------------------------------------------------------------------------


def _shown_history(history: list) -> list[dict]:
    """(question, answer) pairs as the Chatbot's messages."""
    return [m for q, a in history for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]


def chat_reply(bundle: Bundle, message, temperature, top_k, top_p, max_new_tokens, history):
    """Answer one chat message, yielding (messages, history, note, textbox) as tokens arrive."""
    import gradio as gr

    history = list(history or [])
    try:
        text, notes = clean_text(message)
        settings = check_settings(temperature, top_k, top_p, max_new_tokens)
    except BadInput as e:
        yield _shown_history(history), history, f"**{e}**", gr.skip()  # keep what was typed
        return
    text = text.strip()
    n_ctx, tok = bundle.model.cfg.context_length, bundle.tokenizer
    ids, more = chat_prompt(tok, history, text, n_ctx, settings["max_new_tokens"])
    notes += more
    messages = _shown_history(history) + [{"role": "user", "content": text}]
    yield messages, history, _note(notes), ""  # the question at once; the answer follows
    new: list[int] = []
    stop = f"stopped at the limit of {settings['max_new_tokens']} new tokens"
    try:
        for token in stream_tokens(bundle.model, ids, eos_id=EOT_ID, **settings):
            if token == EOT_ID:
                stop = "stopped by the end token"
                break
            new.append(token)
            reply = decode(tok, new, final=False)
            if any(m in reply for m in MARKERS):  # it began a new turn of the format: answer done
                stop = "stopped where it began a new '### ' section"
                break
            yield messages + [{"role": "assistant", "content": reply}], history, _note(notes), ""
    except ValueError as e:  # e.g. a model whose logits turned NaN: say so, keep the page alive
        notes.append(f"**Generation failed:** {e}")
    answer = extract_response(decode(tok, new))
    history.append((text, answer))
    notes.append(f"{len(new)} tokens, {stop}.")
    shown_answer = answer or "(an empty answer)"
    yield messages + [{"role": "assistant", "content": shown_answer}], history, _note(notes), ""


def complete_text(bundle: Bundle, text, temperature, top_k, top_p, max_new_tokens):
    """Continue plain text (a chapter-5 model's job), yielding (text so far, note)."""
    try:
        text, notes = clean_text(text, "text")
        settings = check_settings(temperature, top_k, top_p, max_new_tokens)
    except BadInput as e:
        yield "", f"**{e}**"
        return
    n_ctx, tok = bundle.model.cfg.context_length, bundle.tokenizer
    ids = tok.encode(text, disallowed_special=())
    if len(ids) > n_ctx:
        notes.append(f"The text is {len(ids)} tokens, longer than the model's window of {n_ctx}: "
                     f"the model sees only its last {n_ctx} tokens.")
        ids = ids[-n_ctx:]
    new: list[int] = []
    try:
        for token in stream_tokens(bundle.model, ids, eos_id=EOT_ID, **settings):
            if token == EOT_ID:
                notes.append("The model wrote its end token.")
                break
            new.append(token)
            yield text + decode(tok, new, final=False), _note(notes)
    except ValueError as e:
        notes.append(f"**Generation failed:** {e}")
    yield text + decode(tok, new), _note(notes)


def classify_message(bundle: Bundle, text):
    """(label with class probabilities, note) for one message, by the chapter-6 classifier."""
    from ch06_classify import LABELS, classify

    try:
        text, notes = clean_text(text, "message")
    except BadInput as e:
        return None, f"**{e}**"
    extra = bundle.classifier_extra or {}
    try:
        label, p = classify(text, bundle.classifier, bundle.tokenizer, max_length=extra.get("max_length"),
                            pooling=extra.get("pooling", "last"))
    except ValueError as e:  # e.g. a classifier with other classes than ham and spam
        return None, f"**Classification failed:** {e}"
    p_spam = p if label == "spam" else 1.0 - p
    notes.append(f"**{label}**, spam probability {p_spam:.3f}")
    return {LABELS[1]: p_spam, LABELS[0]: 1.0 - p_spam}, _note(notes)


# --- The page -------------------------------------------------------------------------------------

NO_CLASSIFIER = (
    "No classifier is loaded. Make one in chapter 6: after fine-tuning, "
    "`save_classifier('checkpoints/spam-classifier.pt', clf, max_length=train_ds.max_length)` "
    "(the notebook's section *Saving and loading the classifier*), then start this page with "
    "`python -m ch07_instruct.chat --classifier checkpoints/spam-classifier.pt`."
)


def build_app(bundle: Bundle):
    """The page as a `gr.Blocks`, not yet started: `serve(build_app(bundle))` starts it.

    Every model request shares one queue slot (`concurrency_id="model"`), so requests from
    several tabs or visitors run one after the other. `preprocess=False` hands the raw values to
    our own checks, whose messages are clearer than Gradio's and cover every tab alike.
    """
    import gradio as gr

    def slider(name, label, step, info):
        lo, hi, default = LIMITS[name]
        return gr.Slider(lo, hi, value=default, step=step, label=label, info=info)

    def chat(message, temperature, top_k, top_p, max_new_tokens, history):
        yield from chat_reply(bundle, message, temperature, top_k, top_p, max_new_tokens, history)

    def complete(text, temperature, top_k, top_p, max_new_tokens):
        yield from complete_text(bundle, text, temperature, top_k, top_p, max_new_tokens)

    model_event = dict(concurrency_id="model", preprocess=False, show_progress="hidden")
    with gr.Blocks(title="Talk to your model", analytics_enabled=False) as demo:
        gr.Markdown(describe(bundle), elem_id="header")
        with gr.Tab("Chat", elem_id="tab-chat"):
            chatbot = gr.Chatbot(label="Conversation", height=360, buttons=["copy_all"], elem_id="chatbot")
            history = gr.State([])
            with gr.Row():
                prompt = gr.Textbox(label="Your message (Enter sends it)", scale=5, autofocus=True,
                                    placeholder="Give the model an instruction, e.g. Name three colors.",
                                    elem_id="prompt")
                send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
            chat_note = gr.Markdown(label="note", elem_id="chat-note")
            new_chat = gr.Button("New conversation", size="sm", elem_id="new-conversation")
        with gr.Tab("Complete", elem_id="tab-complete"):
            text = gr.Textbox(label="Text to continue (Enter continues it)", value="Once upon a time",
                              elem_id="complete-text")
            go = gr.Button("Continue", variant="primary", elem_id="complete-go")
            completion = gr.Textbox(label="Text and continuation", lines=8, interactive=False,
                                    elem_id="completion")
            complete_note = gr.Markdown(label="note", elem_id="complete-note")
        with gr.Tab("Classify", elem_id="tab-classify"):
            if bundle.classifier is None:
                gr.Markdown(NO_CLASSIFIER, elem_id="classify-note")
            else:
                gr.Markdown(f"Spam or not, by `{shown(bundle.classifier_path)}` (chapter 6).")
                message = gr.Textbox(label="Message (Enter classifies it)", elem_id="classify-text")
                check = gr.Button("Classify", variant="primary", elem_id="classify-go")
                label = gr.Label(label="Prediction", num_top_classes=2, elem_id="classify-label")
                classify_note = gr.Markdown(label="note", elem_id="classify-note")
                gr.on([message.submit, check.click], lambda t: classify_message(bundle, t), [message],
                      [label, classify_note], api_name="classify", **model_event)
        with gr.Accordion("Sampling (Chat and Complete)", open=True):
            with gr.Row():
                temperature = slider("temperature", "temperature", 0.05, "0 = greedy (always the likeliest token)")
                top_k = slider("top_k", "top-k", 1, "0 = off")
                top_p = slider("top_p", "top-p", 0.05, "1 = off")
                max_new = slider("max_new_tokens", "max new tokens", 1, "the longest answer")
        controls = [temperature, top_k, top_p, max_new]

        chatting = gr.on([prompt.submit, send.click], chat, [prompt, *controls, history],
                         [chatbot, history, chat_note, prompt], api_name="chat", **model_event)
        # The button and the chat box's own trash icon both forget the conversation.
        new_chat.click(lambda: ([], [], ""), None, [chatbot, history, chat_note], cancels=[chatting],
                       queue=False, api_name="new_conversation")
        chatbot.clear(lambda: ([], ""), None, [history, chat_note], cancels=[chatting], queue=False,
                      api_visibility="private")
        gr.on([text.submit, go.click], complete, [text, *controls], [completion, complete_note],
              api_name="complete", **model_event)
    return demo.queue(default_concurrency_limit=1)


def serve(demo, host: str = "127.0.0.1", port: int | None = None) -> str:
    """Start the page in a background thread and return its URL; `demo.close()` stops it.
    port None takes the first free one from 7860."""
    # run_history=False: Gradio would otherwise keep every prompt in the browser's run history.
    _, url, _ = demo.launch(server_name=host, server_port=port, prevent_thread_lock=True,
                            quiet=True, show_error=False, run_history=False)
    _first_request(url)
    return url


def _first_request(url: str) -> None:
    """Send one one-token request through the page's own queue before any visitor does.

    The first request a server handles sets things up once (Gradio imports matplotlib on its
    first call; PyTorch prepares its worker threads); measured, that added 0.3-0.4 s to the
    first visitor's wait for the first token. Only a speed-up: a failure here changes nothing.
    """
    import httpx  # Gradio's own HTTP client

    try:  # trust_env=False: straight to this computer, never through a proxy from the environment
        with httpx.Client(trust_env=False, timeout=30) as client:
            r = client.post(url + "gradio_api/call/complete", json={"data": ["Hello", 0.0, 0, 1.0, 1]})
            client.get(url + f"gradio_api/call/complete/{r.json()['event_id']}")
    except (httpx.HTTPError, KeyError, ValueError):
        pass


# --- Command line -------------------------------------------------------------------------------


def _port(text: str) -> int:
    """argparse type for --port: a whole number from 1 to 65535."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port; use a whole number from 1 to 65535")
    return port


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ch07_instruct.chat",
                                     description="A local web page to talk to a chapter checkpoint.")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a GPT checkpoint (default: chapter 7's model in checkpoints/, else chapter 5's fallback)")
    parser.add_argument("--classifier", type=Path, default=None,
                        help="a chapter-6 classifier saved by save_classifier, for the Classify tab")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this computer only)")
    parser.add_argument("--port", type=_port, default=None, help="port (default: the first free one from 7860)")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    args = parser.parse_args(argv)

    checkpoint = args.checkpoint or default_checkpoint()
    if checkpoint is None:
        parser.error(f"no model found in {shown(checkpoint_dir())}: run chapter 7's notebook (or "
                     "`python -m ch05_pretrain.fallback`), or pass --checkpoint PATH")
    for flag, path in (("--checkpoint", args.checkpoint), ("--classifier", args.classifier)):
        if path is not None and not path.is_file():
            parser.error(f"{flag} {str(path)!r}: no such file")
    if not args.host.strip():
        parser.error("--host '': give an address, e.g. 127.0.0.1")
    try:
        device = get_device(args.device)
    except RuntimeError as e:  # an unknown name, or an accelerator this machine lacks
        unknown = "Expected one of" in str(e)  # torch's words for a name it does not know
        parser.error(f"--device {args.device!r}: " + ("not a device; use cuda, mps or cpu" if unknown else _first_line(e)))
    try:
        bundle = load_bundle(checkpoint, device)
    except (ValueError, TypeError, RuntimeError, OSError) as e:  # not a checkpoint, not a GPT, ...
        parser.error(f"--checkpoint {shown(checkpoint)!r}: {_first_line(e)}")
    try:
        if args.classifier is not None:
            bundle.add_classifier(args.classifier)
    except (ValueError, TypeError, RuntimeError, OSError) as e:
        parser.error(f"--classifier {str(args.classifier)!r}: {_first_line(e)}")
    if not _is_loopback(args.host):
        print(f"Warning: --host {args.host} makes the page reachable from other computers, "
              "without a password.", file=sys.stderr)
    demo = build_app(bundle)
    try:
        url = serve(demo, args.host, args.port)
    except OSError as e:
        parser.exit(1, f"cannot listen on --host {args.host} --port {args.port or 'auto'}: {_first_line(e)}\n")
    print(f"Chat page: {url}  (Ctrl+C stops it)")
    try:
        demo.block_thread()
    finally:
        demo.close()


if __name__ == "__main__":
    main()
