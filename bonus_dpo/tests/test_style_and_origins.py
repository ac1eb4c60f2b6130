import pytest
import torch

from bonus_dpo import DPOLoss, distinct_pairs, pair_origins, politeness_scorer

POLITE = ["Certainly! I would be happy to help: {}.", "Of course, thank you for asking: {}.",
          "I'd be glad to help. It is {}, I hope this helps!"]
CURT = ["{}. Obviously.", "It's {}, figure it out yourself.", "{}. Look it up next time."]
FACTS = ["blue", "Paris", "four", "water", "Mars", "seven", "gold", "oxygen"]


def entries():
    out = []
    for i, fact in enumerate(FACTS):
        polite, curt = POLITE[i % 3].format(fact), CURT[i % 3].format(fact)
        original = polite if i % 2 else curt  # one side is always the original output
        out.append({"instruction": f"Q{i}", "input": "", "output": original, "chosen": polite, "rejected": curt})
    out.append({"instruction": "same", "input": "", "output": "x", "chosen": "x", "rejected": "x"})
    return out


def test_pair_origins_counts_which_side_is_the_original():
    assert pair_origins(entries()) == {"entries": 9, "chosen is the original output": 5,
                                       "rejected is the original output": 5, "neither is": 0,
                                       "identical pairs": 1}
    assert len(distinct_pairs(entries())) == 8


def test_the_politeness_scorer_separates_the_two_styles():
    scorer = politeness_scorer(entries())
    assert scorer.accuracy(entries()) == 1.0
    polite, curt = scorer(["Of course, I would be happy to help: green.", "green. Obviously, figure it out."])
    assert polite > 0.5 > curt


def test_politeness_scorer_needs_distinct_pairs():
    with pytest.raises(ValueError, match="no pair with two different responses"):
        politeness_scorer([entries()[-1]])


class _Toy(torch.nn.Module):
    """logits = a learned table per position: enough for the loss to have gradients."""

    def __init__(self):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(6, 5))

    def forward(self, ids):
        return self.table[: ids.shape[1]].expand(ids.shape[0], -1, -1)


def test_sft_weight_adds_the_chosen_nll_per_token():
    torch.manual_seed(0)
    policy = _Toy()
    ids = torch.tensor([[1, 2, 3, 4, 0, 0]])
    mask = torch.tensor([[0, 0, 0, 1, 1, 0]], dtype=torch.bool)
    batch = {"chosen": ids, "rejected": ids.flip(1), "chosen_mask": mask, "rejected_mask": mask.flip(1),
             "ref_chosen_logps": torch.tensor([-3.0]), "ref_rejected_logps": torch.tensor([-3.0])}
    plain = DPOLoss(None)(policy, batch)
    with_sft = DPOLoss(None, sft_weight=0.5)(policy, batch)
    logps = torch.log_softmax(policy.table, -1)
    nll = -(logps[2, 4] + logps[3, 0]) / 2  # the chosen tokens at positions 3 and 4, scored by logits 2 and 3
    assert torch.allclose(with_sft - plain, 0.5 * nll)
    with pytest.raises(ValueError, match="sft_weight=-1"):
        DPOLoss(None, sft_weight=-1)
