"""run_cost: one measured step, nothing changed in the model, an estimate that scales with steps."""

import pytest
import torch

from ch04_gpt import GPTConfig, GPTModel
from ch05_pretrain import lm_loss, run_cost


def test_one_step_is_measured_and_nothing_changes(capsys):
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=50257, context_length=16, emb_dim=16, n_heads=2, n_layers=1)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = (torch.randint(0, 50257, (2, 16)), torch.randint(0, 50257, (2, 16)))
    cost = run_cost(model, batch, lm_loss, steps=600)
    assert cost.step_seconds > 0 and cost.minutes == pytest.approx(cost.step_seconds * 600 / 60)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None for p in model.parameters()) and not model.training
    # GPT-2 124M passes every token through far more weights: its estimate is larger
    assert cost.alternative == "gpt2" and cost.alternative_minutes > cost.minutes
    out = capsys.readouterr().out
    assert out.startswith("Estimated cost: about") and "GPT-2 124M ('gpt2') would take about" in out


def test_steps_must_be_a_positive_integer():
    with pytest.raises(ValueError, match=r"steps=0; use an integer >= 1"):
        run_cost(torch.nn.Linear(1, 1), None, None, steps=0)
