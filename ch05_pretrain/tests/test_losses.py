"""Losses: lm_loss against a hand computation, -100 masking, evaluate, perplexity."""

import math

import pytest
import torch
import torch.nn as nn

from ch05_pretrain.losses import IGNORE_INDEX, evaluate, lm_loss, perplexity


class FixedLogits(nn.Module):
    """Returns the same logits (B, T, V) whatever the input; has a dropout to show eval mode."""

    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(logits)
        self.drop = nn.Dropout(0.5)

    def forward(self, idx):
        return self.drop(self.logits)


def test_lm_loss_is_mean_negative_log_prob_of_targets():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5)  # (B, T, V)
    targets = torch.tensor([[1, 0, 4], [2, 2, 3]])
    model = FixedLogits(logits).eval()
    logp = logits.log_softmax(-1)
    expected = -logp.gather(-1, targets.unsqueeze(-1)).mean()
    torch.testing.assert_close(lm_loss(model, (targets, targets)), expected)


def test_lm_loss_skips_ignore_index_positions():
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 5)
    model = FixedLogits(logits).eval()
    targets = torch.tensor([[1, IGNORE_INDEX, 3, IGNORE_INDEX]])
    logp = logits.log_softmax(-1)[0]
    expected = -(logp[0, 1] + logp[2, 3]) / 2  # only the two counted positions
    torch.testing.assert_close(lm_loss(model, (targets.clamp(min=0), targets)), expected)


def test_evaluate_mean_no_grad_and_restores_mode():
    torch.manual_seed(0)
    model = FixedLogits(torch.randn(1, 2, 5)).train()
    batches = [(torch.zeros(1, 2, dtype=torch.long), torch.tensor([[k, k]])) for k in range(5)]
    model.eval()
    per_batch = [lm_loss(model, b).item() for b in batches]
    model.train()
    seen_modes = []

    def loss_fn(m, batch):
        seen_modes.append((m.training, torch.is_grad_enabled()))
        return lm_loss(m, batch)

    assert math.isclose(evaluate(model, batches, loss_fn), sum(per_batch) / 5, rel_tol=1e-6)
    assert math.isclose(evaluate(model, batches, max_batches=2), sum(per_batch[:2]) / 2, rel_tol=1e-6)
    assert seen_modes == [(False, False)] * 5  # eval mode (dropout off), no autograd graph
    assert model.training  # restored
    assert math.isnan(evaluate(model, []))


def test_perplexity():
    assert perplexity(0.0) == 1.0
    assert math.isclose(perplexity(math.log(50257)), 50257)
    assert perplexity(1e6) == float("inf")


@pytest.mark.parametrize("batch, words", [
    (torch.zeros(2, 4, dtype=torch.long), r"a bare tensor of shape \(2, 4\)"),
    ((torch.zeros(2, 4, dtype=torch.long),), "a tuple of 1 items"),
    ({"input_ids": torch.zeros(2, 4, dtype=torch.long)}, "a dict"),
])
def test_a_batch_that_is_not_inputs_and_targets_is_named(batch, words):
    from ch04_gpt import GPTConfig, GPTModel
    from ch05_pretrain import chunked_lm_loss
    model = GPTModel(GPTConfig(vocab_size=10, context_length=4, emb_dim=8, n_heads=2, n_layers=1))
    for loss in (lm_loss, chunked_lm_loss):
        with pytest.raises(ValueError, match=rf"batch is {words}; .* takes \(inputs, targets\)"):
            loss(model, batch)
