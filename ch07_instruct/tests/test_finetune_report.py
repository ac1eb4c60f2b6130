"""fine_tune (chapter 5's, with this chapter's batches), respond_and_count, and score_responses."""

import math
import socket

import pytest
import torch

from ch02_data import gpt2_encoding
from ch04_gpt import GPTConfig, GPTModel
from ch05_pretrain import fast_adamw, lm_loss, train
from ch06_classify import add_lora
from ch07_instruct import (
    InstructionDataset,
    Recipe,
    fine_tune,
    make_loader,
    respond_and_count,
    score_responses,
)

TOK = gpt2_encoding()
ENTRIES = [{"instruction": "Name a color.", "input": "", "output": "Blue."},
           {"instruction": "What is 1 + 2?", "input": "", "output": "3"}] * 4


def tiny_model():
    torch.manual_seed(0)
    return GPTModel(GPTConfig(vocab_size=50257, context_length=64, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0))


def loader():
    return make_loader(InstructionDataset(ENTRIES, TOK, max_length=64), batch_size=4, shuffle=True)


def test_fine_tune_lowers_the_loss_and_restores_the_readable_path():
    model = tiny_model()
    history = fine_tune(model, loader(), loader(), recipe=Recipe(lr=3e-3, epochs=4, lr_schedule="cosine"),
                        eval_every=2, progress=False)
    assert history.val_loss[-1] < history.val_loss[0]
    assert not any(getattr(m, "use_sdpa", False) or getattr(m, "fast", False) for m in model.modules())


def test_fine_tune_records_what_train_with_lm_loss_records():
    # fine_tune's loss is chunked_lm_loss: the same losses as lm_loss, step for step.
    recipe = Recipe(lr=3e-3, epochs=2, lr_schedule="cosine")
    history = fine_tune(tiny_model(), loader(), loader(), recipe=recipe, epochs=2, eval_every=2, progress=False)
    model = tiny_model().set_fast_path(True)
    reference = train(model, fast_adamw(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay),
                      loader(), lm_loss, val_loader=loader(), epochs=2, eval_every=2,
                      lr_schedule=recipe.lr_schedule, seed=123, progress=False)
    assert history.step == reference.step and len(history.step) >= 2
    for a, b in ((history.train_loss, reference.train_loss), (history.val_loss, reference.val_loss)):
        assert max(abs(x - y) for x, y in zip(a, b)) < 1e-4


def test_fine_tune_with_lora_changes_only_the_adapters():
    torch.manual_seed(1)
    model = add_lora(tiny_model(), rank=2, alpha=4)
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    fine_tune(model, loader(), recipe=Recipe(lr=1e-2, epochs=1), progress=False)
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert any(n.endswith(".B") and p.abs().sum() > 0 for n, p in model.named_parameters())


def test_fine_tune_refuses_a_fully_frozen_model():
    with pytest.raises(ValueError, match="no trainable parameters"):
        fine_tune(tiny_model().requires_grad_(False), loader(), recipe=Recipe(lr=1e-2, epochs=1), progress=False)


def test_respond_and_count_counts_new_tokens():
    texts, counts = respond_and_count(tiny_model(), ["Hello", "Name a color."], TOK, max_new_tokens=5, progress=False)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert all(0 <= n <= 5 for n in counts)


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_score_responses_without_a_judge():
    entries = ENTRIES[:2]
    row = score_responses(entries, ["Blue.", "4"], lengths=[2, 9], max_new_tokens=9, judge_model=None)
    assert row["ROUGE-L"] == pytest.approx(0.5) and row["exact match (short)"] == pytest.approx(0.5)
    assert row["short answers"] == 2 and row["judge scored"] == "no server" and math.isnan(row["judge (0-100)"])
    assert row["new tokens (mean)"] == 5.5 and row["hit the token limit"] == 0.5


def test_score_responses_with_a_server_that_is_down_still_gives_numbers():
    row = score_responses(ENTRIES[:1], ["Blue."], host=f"http://127.0.0.1:{closed_port()}")
    assert row["ROUGE-L"] == 1.0 and row["judge scored"] == "no server"


def test_score_responses_bad_lengths():
    with pytest.raises(ValueError, match="lengths has 1 items but entries has 2"):
        score_responses(ENTRIES[:2], ["a", "b"], lengths=[1], judge_model=None)
