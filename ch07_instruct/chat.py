"""Talk to your model: a small local web page, made with Gradio, for any chapter checkpoint.

    python -m ch07_instruct.chat                        # the best model in checkpoints/
    python -m ch07_instruct.chat --checkpoint my.pt --classifier spam.pt --port 7861

Three tabs share one model, loaded once: **Chat** asks the model in chapter 7's prompt format
(`format_prompt`, the function training used) and streams its reply token by token; **Complete**
continues plain text, as a chapter-5 model was trained to; **Classify** runs a chapter-6 spam
classifier. The page runs wherever `get_device()` points (CUDA, MPS or the CPU).

Three decisions shape the code:
- Streaming needs each token as soon as it is chosen, and chapter 5's `generate` returns only
  when it is done. `stream_tokens` (in `chat_model`, with the checkpoint loading) is the same
  decoding loop written as a Python generator; a test checks it gives `generate`'s tokens.
- Requests take turns: the queue runs one model request at a time, and every request makes its
  own KV cache, so a second visitor waits instead of writing into the first one's cache.
- Everything that comes from the browser is checked on the server (`chat_input`): the page's
  sliders keep honest visitors in range, but anyone can send any value straight to the API. A
  bad value is answered with one sentence in the page. Files come only from the command line.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
from pathlib import Path

from ch02_data import EOT_ID
from ch05_pretrain import GPT2_SIZES, get_device
from ch05_pretrain.fallback import checkpoint_dir, shown

from .chat_input import LIMITS, BadInput, chat_prompt, check_settings, clean_text
from .chat_model import Bundle, bundle_from_base, decode, default_checkpoint, describe, load_bundle, stream_tokens
from .respond import NEXT_TURN_MARKERS, extract_response

MARKERS = NEXT_TURN_MARKERS["alpaca"]  # a model that starts a new "### Instruction:" is done


def _note(notes: list[str]) -> str:
    return "\n\n".join(notes)


# --- What each tab does -------------------------------------------------------------------------


def _shown_history(history: list) -> list[dict]:
    """(question, answer) pairs as the Chatbot's messages."""
    return [m for q, a in history for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]


def chat_reply(bundle: Bundle, message, temperature, top_k, top_p, max_new_tokens, history,
               conversation: dict | None = None):
    """Answer one chat message, yielding (messages, history, note, textbox) as tokens arrive.

    `conversation` is the session's {"number": n}, which "New conversation" counts up: once it
    changed, the answer stops and yields nothing more, so it never lands in the new conversation.
    """
    import gradio as gr

    started = None if conversation is None else conversation["number"]

    def forgotten() -> bool:
        return conversation is not None and conversation["number"] != started

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
            if forgotten():
                return
            yield messages + [{"role": "assistant", "content": reply}], history, _note(notes), ""
    except ValueError as e:  # e.g. a model whose logits turned NaN: say so, keep the page alive
        notes.append(f"**Generation failed:** {e}")
    if forgotten():
        return
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

    def chat(message, temperature, top_k, top_p, max_new_tokens, history, conversation):
        yield from chat_reply(bundle, message, temperature, top_k, top_p, max_new_tokens, history,
                              conversation)

    def forget(conversation):
        conversation["number"] += 1  # a running answer sees this and stops (chat_reply)
        return [], [], ""

    def complete(text, temperature, top_k, top_p, max_new_tokens):
        yield from complete_text(bundle, text, temperature, top_k, top_p, max_new_tokens)

    model_event = dict(concurrency_id="model", preprocess=False, show_progress="hidden")
    with gr.Blocks(title="Talk to your model", analytics_enabled=False) as demo:
        gr.Markdown(describe(bundle), elem_id="header")
        with gr.Tab("Chat", elem_id="tab-chat"):
            chatbot = gr.Chatbot(label="Conversation", height=360, buttons=["copy_all"], elem_id="chatbot")
            history = gr.State([])
            conversation = gr.State({"number": 0})  # counted up by "New conversation"
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

        chatting = gr.on([prompt.submit, send.click], chat, [prompt, *controls, history, conversation],
                         [chatbot, history, chat_note, prompt], api_name="chat", **model_event)
        # The button and the chat box's own trash icon both forget the conversation. `cancels`
        # stops a running answer started from the page; `forget` also stops one asked by the API.
        new_chat.click(forget, [conversation], [chatbot, history, chat_note], cancels=[chatting],
                       queue=False, api_name="new_conversation")
        chatbot.clear(lambda c: forget(c)[1:], [conversation], [history, chat_note], cancels=[chatting],
                      queue=False, api_visibility="private")
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


def _cannot_listen(host: str) -> str | None:
    """Why this computer cannot listen on `host`, or None if it can. Checked before the model
    loads: Gradio would otherwise try one port after another on an address that never works."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if all(part.isdigit() for part in host.split(".")) or ":" in host:
            return "not an IP address"  # 256.1.1.1: no name lookup for what is meant as a number
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind) as probe:
            probe.bind((address[0], 0))  # port 0: any free one; only the address is tested
    except (OSError, UnicodeError) as e:
        return getattr(e, "strerror", None) or _first_line(e)
    return None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ch07_instruct.chat",
                                     description="A local web page to talk to a chapter checkpoint.")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a GPT checkpoint (default: chapter 7's model in checkpoints/, else chapter 5's fallback)")
    parser.add_argument("--base", default=None, metavar="NAME",
                        help="serve a pretrained base model instead of a checkpoint: gpt2, gpt2-medium, "
                             "gpt2-large, gpt2-xl (from GPT2_DIR, the Hugging Face cache or the hub) or "
                             "fallback; GPT-2 that cannot be had is replaced by chapter 5's fallback")
    parser.add_argument("--classifier", type=Path, default=None,
                        help="a chapter-6 classifier saved by save_classifier, for the Classify tab")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this computer only)")
    parser.add_argument("--port", type=_port, default=None, help="port (default: the first free one from 7860)")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    args = parser.parse_args(argv)

    if args.base is not None and args.checkpoint is not None:
        parser.error("--base and --checkpoint: give one of them")
    if args.base is not None and args.base not in (*GPT2_SIZES, "fallback"):
        parser.error(f"--base {args.base!r}: use one of {', '.join(GPT2_SIZES)} or fallback")
    checkpoint = args.checkpoint or (None if args.base else default_checkpoint())
    if checkpoint is None and args.base is None:
        parser.error(f"no model found in {shown(checkpoint_dir())}: run chapter 7's notebook (or "
                     "`python -m ch05_pretrain.fallback`), pass --checkpoint PATH, or serve "
                     "GPT-2 itself with --base gpt2")
    for flag, path in (("--checkpoint", args.checkpoint), ("--classifier", args.classifier)):
        if path is not None and not path.is_file():
            parser.error(f"{flag} {str(path)!r}: no such file")
    if not args.host.strip():
        parser.error("--host '': give an address, e.g. 127.0.0.1")
    reason = _cannot_listen(args.host)
    if reason is not None:
        parser.error(f"--host {args.host!r}: cannot listen there ({reason}); use an address of this "
                     "computer, e.g. 127.0.0.1 (this computer only) or 0.0.0.0 (every network)")
    try:
        device = get_device(args.device)
    except RuntimeError as e:  # an unknown name, or an accelerator this machine lacks
        unknown = "Expected one of" in str(e)  # torch's words for a name it does not know
        parser.error(f"--device {args.device!r}: " + ("not a device; use cuda, mps or cpu" if unknown else _first_line(e)))
    if args.base is not None:
        try:
            bundle = bundle_from_base(args.base, device)
        except (ValueError, OSError) as e:  # a damaged or wrong-sized file in GPT2_DIR
            parser.error(f"--base {args.base!r}: {_first_line(e)}")
    else:
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
