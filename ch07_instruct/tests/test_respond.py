"""Generating, extracting and saving responses; the offline path through load_gpt2(dir)."""

import json

import pytest
import torch

from ch02_data import EOT_ID, gpt2_encoding
from ch04_gpt import GPTConfig, GPTModel
from ch05_pretrain import lm_loss, load_gpt2, train
from ch07_instruct import respond
from ch07_instruct.data import InstructionDataset, format_prompt, make_loader
from ch07_instruct.respond import (
    extract_response,
    generate_from_prompt,
    generate_response,
    generate_responses,
    load_responses,
    save_responses,
)

TOK = gpt2_encoding()
ENTRY = {"instruction": "Name a color.", "input": "", "output": "Blue."}


def tiny_model(seed=0, context_length=64):
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=50257, context_length=context_length, emb_dim=16, n_heads=2,
                    n_layers=1, drop_rate=0.0)
    return GPTModel(cfg).eval()


class Scripted(torch.nn.Module):
    """A 'model' whose greedy choice at every step is the next token of a script."""

    def __init__(self, script, context_length=512):
        super().__init__()
        self.script = script
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.cfg = GPTConfig(vocab_size=50257, context_length=context_length, emb_dim=8, n_heads=1, n_layers=1)
        self.prompt_len = None

    def new_kv_cache(self, max_len):
        return None

    def forward(self, idx, kv_cache=None, start_pos=0):
        if self.prompt_len is None:
            self.prompt_len = idx.shape[1]
        n_new = start_pos + idx.shape[1] - self.prompt_len  # tokens generated so far
        logits = torch.zeros(idx.shape[0], idx.shape[1], 50257)
        logits[:, -1, self.script[min(n_new, len(self.script) - 1)]] = 1.0
        return logits


def test_extract_response_cuts_a_new_turn_and_strips():
    assert extract_response("  Blue.\n") == "Blue."
    assert extract_response("Blue.\n\n### Instruction:\nName another") == "Blue."
    assert extract_response("Blue.<|user|>\nmore", "phi3") == "Blue."
    assert extract_response("") == ""
    with pytest.raises(ValueError, match="style='x'"):
        extract_response("a", "x")


def test_generation_stops_at_the_end_token_and_drops_it():
    script = TOK.encode(" Blue.") + [EOT_ID] + TOK.encode(" never shown")
    model = Scripted(script)
    text, n = generate_from_prompt(model, format_prompt(ENTRY), TOK, max_new_tokens=50)
    assert text == " Blue." and n == len(TOK.encode(" Blue."))
    model.prompt_len = None
    assert generate_response(model, ENTRY, TOK) == "Blue."


def test_generation_without_end_token_runs_to_the_limit():
    model = Scripted(TOK.encode(" la") * 100)
    _, n = generate_from_prompt(model, "Sing:", TOK, max_new_tokens=17)
    assert n == 17


def test_generation_sees_exactly_the_training_prompt(monkeypatch):
    seen = []
    real = respond.generate

    def spy(model, idx, *args, **kwargs):
        seen.append(idx[0].tolist())
        return real(model, idx, *args, **kwargs)

    monkeypatch.setattr(respond, "generate", spy)
    for style in ("alpaca", "phi3"):
        generate_response(tiny_model(), ENTRY, TOK, max_new_tokens=2, style=style)
        item = InstructionDataset([ENTRY], TOK, style=style)[0]
        assert seen[-1] == item["input_ids"][: item["prompt_len"]]


def test_same_question_gives_the_same_answer_every_time():
    model = tiny_model(3)
    other = {"instruction": "What is 1 + 2?", "input": "", "output": "3"}
    answers = [generate_response(model, e, TOK, max_new_tokens=8) for e in [ENTRY, other, ENTRY, other, ENTRY]]
    assert answers[0] == answers[2] == answers[4] and answers[1] == answers[3]


def test_entries_without_output_and_bad_entries():
    assert isinstance(generate_response(tiny_model(), {"instruction": "Hi"}, TOK, max_new_tokens=3), str)
    with pytest.raises(ValueError, match="entry"):
        generate_response(tiny_model(), {"input": "x"}, TOK)
    assert len(generate_responses(tiny_model(), [ENTRY, ENTRY], TOK, max_new_tokens=2, progress=False)) == 2


def test_long_prompt_is_cropped_not_a_crash():
    long = {"instruction": "Please answer. " * 200, "input": "", "output": ""}
    assert isinstance(generate_response(tiny_model(context_length=32), long, TOK, max_new_tokens=4), str)


def test_save_and_load_responses(tmp_path):
    path = save_responses(tmp_path / "out" / "test-responses.json", [ENTRY], ["Red."])
    records = json.loads(path.read_text(encoding="utf-8"))
    assert records == [{**ENTRY, "model_response": "Red."}]
    assert load_responses(path) == ([ENTRY], ["Red."])
    assert [p.name for p in path.parent.iterdir()] == ["test-responses.json"]  # no temp files left


def test_save_responses_refuses_before_writing(tmp_path):
    with pytest.raises(ValueError, match="responses has 2 items but entries has 1"):
        save_responses(tmp_path / "r.json", [ENTRY], ["a", "b"])
    with pytest.raises(IsADirectoryError, match="path="):
        save_responses(tmp_path, [ENTRY], ["a"])
    assert list(tmp_path.iterdir()) == []


def test_offline_path_through_a_transformers_checkpoint(tmp_path):
    """The notebook's GPT-2 path, on a random GPT-2 written by transformers: load, fine-tune with
    chapter 5's train on collated batches, generate."""
    transformers = pytest.importorskip("transformers")
    hf_cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=128, vocab_size=50257)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(hf_cfg).save_pretrained(tmp_path, safe_serialization=True)
    model = load_gpt2(tmp_path)
    ds = InstructionDataset([ENTRY] * 8, TOK, max_length=model.cfg.context_length)
    loader = make_loader(ds, batch_size=4, shuffle=True, mask_prompt=True)
    history = train(model, torch.optim.AdamW(model.parameters(), lr=1e-3), loader, lm_loss, epochs=3, eval_every=2,
                    progress=False)
    assert history.train_loss[-1] < history.train_loss[0]
    assert isinstance(generate_response(model, ENTRY, TOK, max_new_tokens=5), str)


def test_load_responses_names_a_truncated_file(tmp_path):
    path = save_responses(tmp_path / "r.json", [ENTRY], ["Red."])
    text = path.read_text(encoding="utf-8")
    path.write_text(text[: len(text) // 2], encoding="utf-8")  # a copy cut short
    with pytest.raises(ValueError, match=r"'.*r\.json' is not valid JSON .*truncated"):
        load_responses(path)
