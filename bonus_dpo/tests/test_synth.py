"""Preference pairs written by a local LLM (the server replaced by a stand-in)."""

import pytest

import bonus_dpo.synth as synth
from ch07_instruct import JudgeUnavailable

ENTRY = {"instruction": "Convert to a command.", "input": "You should check the report.",
         "output": "Check the report."}


def test_prompt_holds_the_task_the_answer_and_the_tone():
    polite, rude = synth.rewrite_prompt(ENTRY, "polite"), synth.rewrite_prompt(ENTRY, "impolite")
    for text in (polite, rude):
        assert "Convert to a command." in text and "You should check the report." in text
        assert "Answer:\nCheck the report." in text and "### Response" not in text
    assert "more polite" in polite and "less polite" in rude
    with pytest.raises(ValueError, match="tone='rude'"):
        synth.rewrite_prompt(ENTRY, "rude")


def test_pairs_are_the_polite_and_impolite_rewrites(monkeypatch):
    asked = []

    def fake_ask(prompts, model, host, progress=True, **options):
        asked.extend(prompts)
        return [' "Could you please check the report?" ', "Check the damn report."] * (len(prompts) // 2)

    monkeypatch.setattr(synth, "ask_local_llm", fake_ask)
    pairs = synth.make_preference_pairs([ENTRY, ENTRY], progress=False)
    assert len(asked) == 4 and "more polite" in asked[0] and "less polite" in asked[1]
    assert pairs[0] == {**ENTRY, "chosen": "Could you please check the report?", "rejected": "Check the damn report."}


def test_no_server_is_one_clear_error(monkeypatch):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(JudgeUnavailable, match="ollama serve"):
        synth.make_preference_pairs([ENTRY], host=f"http://127.0.0.1:{port}", progress=False)
