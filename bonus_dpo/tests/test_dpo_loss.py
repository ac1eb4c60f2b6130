"""dpo_loss against hand-computed values; sequence_logprobs against a loop over positions."""

import math

import pytest
import torch

from bonus_dpo import dpo_loss, sequence_logprobs


def log1p_exp(x: float) -> float:
    """-log sigmoid(m) = log(1 + exp(-m)), written out for the hand computations."""
    return math.log(1.0 + math.exp(x))


# --- dpo_loss ---


def test_dpo_loss_matches_a_hand_computation():
    beta = 0.5
    pc, pr = torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -1.5])
    rc, rr = torch.tensor([-1.5, -2.5]), torch.tensor([-1.8, -2.0])
    # row 0: chosen reward 0.5*(-1.0+1.5)=0.25, rejected 0.5*(-2.0+1.8)=-0.1, margin 0.35
    # row 1: chosen reward 0.5*(-3.0+2.5)=-0.25, rejected 0.5*(-1.5+2.0)=0.25, margin -0.5
    expected = (log1p_exp(-0.35) + log1p_exp(0.5)) / 2
    loss, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta=beta)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert chosen.tolist() == pytest.approx([0.25, -0.25])
    assert rejected.tolist() == pytest.approx([-0.1, 0.25])


def test_dpo_loss_is_log_2_when_the_policy_is_the_reference():
    logps_c, logps_r = torch.tensor([-5.0, -12.3, -0.1]), torch.tensor([-7.0, -1.0, -30.0])
    loss, chosen, rejected = dpo_loss(logps_c, logps_r, logps_c.clone(), logps_r.clone())
    assert loss.item() == pytest.approx(math.log(2))
    assert chosen.abs().max() == 0 and rejected.abs().max() == 0


def test_rewards_are_detached_and_the_gradient_is_the_textbook_one():
    beta = 0.2
    pc = torch.tensor([-1.0, -2.0], requires_grad=True)
    pr = torch.tensor([-1.5, -0.5], requires_grad=True)
    rc, rr = torch.tensor([-1.2, -2.0]), torch.tensor([-1.0, -1.0])
    loss, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta=beta)
    assert loss.requires_grad and not chosen.requires_grad and not rejected.requires_grad
    loss.backward()
    margins = (chosen - rejected).tolist()
    # d loss / d pc_i = -beta * sigmoid(-margin_i) / B ; d loss / d pr_i is its negative
    want = [-beta / (1 + math.exp(m)) / 2 for m in margins]
    assert pc.grad.tolist() == pytest.approx(want)
    assert pr.grad.tolist() == pytest.approx([-w for w in want])


@pytest.mark.parametrize("beta", [0, -0.1, float("nan"), float("inf"), True])
def test_bad_beta_is_refused(beta):
    x = torch.zeros(2)
    with pytest.raises(ValueError, match=f"beta={beta!r}"):
        dpo_loss(x, x, x, x, beta=beta)


def test_mismatched_shapes_are_refused():
    x = torch.zeros(2)
    with pytest.raises(ValueError, match=r"ref_rejected_logps has shape \(3,\)"):
        dpo_loss(x, x, x, torch.zeros(3))


# --- sequence_logprobs ---


def hand_logprobs(logits, labels, mask):
    """Sum over t >= 1 with mask[b, t] of log softmax(logits[b, t-1])[labels[b, t]], in floats."""
    out = []
    for b in range(logits.shape[0]):
        total = 0.0
        for t in range(1, logits.shape[1]):
            if mask[b, t]:
                row = logits[b, t - 1].tolist()
                log_z = math.log(sum(math.exp(v) for v in row))
                total += row[labels[b, t]] - log_z
        out.append(total)
    return out


def random_case(seed=0, B=3, T=6, V=11):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g) * 3
    labels = torch.randint(0, V, (B, T), generator=g)
    mask = torch.rand(B, T, generator=g) > 0.4
    mask[:, 1] = True  # every row scores at least one token
    return logits, labels, mask


def test_sequence_logprobs_matches_a_loop_over_positions():
    logits, labels, mask = random_case()
    got = sequence_logprobs(logits, labels, mask)
    assert got.shape == (3,) and got.dtype == torch.float32
    assert got.tolist() == pytest.approx(hand_logprobs(logits, labels, mask), rel=1e-5)


def test_average_divides_by_the_number_of_scored_tokens():
    logits, labels, mask = random_case(seed=1)
    counts = mask[:, 1:].sum(dim=1).tolist()
    sums = hand_logprobs(logits, labels, mask)
    got = sequence_logprobs(logits, labels, mask, average=True)
    assert got.tolist() == pytest.approx([s / c for s, c in zip(sums, counts)], rel=1e-5)


def test_mask_at_position_0_is_ignored():
    logits, labels, mask = random_case(seed=2)
    with_0, without_0 = mask.clone(), mask.clone()
    with_0[:, 0], without_0[:, 0] = True, False
    assert torch.equal(sequence_logprobs(logits, labels, with_0), sequence_logprobs(logits, labels, without_0))
    only_0 = torch.zeros_like(mask)
    only_0[:, 0] = True
    assert sequence_logprobs(logits, labels, only_0).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"rows \[0, 1, 2\] of mask have no scored token"):
        sequence_logprobs(logits, labels, only_0, average=True)


def test_gradient_reaches_only_the_positions_before_scored_tokens():
    logits, labels, mask = random_case(seed=3)
    logits.requires_grad_(True)
    sequence_logprobs(logits, labels, mask).sum().backward()
    touched = logits.grad.abs().sum(dim=-1) > 0  # (B, T)
    assert torch.equal(touched[:, :-1], mask[:, 1:])  # logits at t-1 serve token t
    assert not touched[:, -1].any()  # the last position predicts nothing scored


def test_bfloat16_logits_are_scored_in_float32():
    logits, labels, mask = random_case(seed=4)
    low = logits.bfloat16()
    got = sequence_logprobs(low, labels, mask)
    assert got.dtype == torch.float32
    assert got.tolist() == pytest.approx(hand_logprobs(low.float(), labels, mask), rel=1e-5)


def test_padding_with_minus_inf_logits_does_not_make_nan():
    logits, labels, mask = random_case(seed=5)
    logits[:, -2:] = -math.inf  # e.g. a model that masks logits at padding positions
    mask[:, -1] = False
    mask[:, -2] = False
    assert torch.isfinite(sequence_logprobs(logits, labels, mask)).all()


@pytest.mark.parametrize("shapes, match", [
    (((2, 5), (2, 5), (2, 5)), r"logits has shape \(2, 5\)"),
    (((2, 5, 7), (2, 4), (2, 4)), r"labels has shape \(2, 4\)"),
    (((2, 5, 7), (2, 5), (2, 4)), r"mask is a torch.bool tensor of shape \(2, 4\)"),
])
def test_bad_shapes_are_refused(shapes, match):
    (ls, bs, ms) = shapes
    with pytest.raises(ValueError, match=match):
        sequence_logprobs(torch.zeros(ls), torch.zeros(bs, dtype=torch.long), torch.ones(ms, dtype=torch.bool))


def test_integer_mask_is_refused():
    logits, labels, mask = random_case()
    with pytest.raises(ValueError, match="mask is a torch.int64 tensor"):
        sequence_logprobs(logits, labels, mask.long())


def test_fast_path_equals_the_readable_path():
    """pair_logprobs(fast=True) (the head on response positions only) against the full logits,
    sum and average, and the gradients of the DPO loss through both paths."""
    from ch04_gpt import GPTConfig, GPTModel
    from bonus_dpo import DPOLoss, pair_logprobs, policy_and_reference

    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=300, context_length=32, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0))
    ids = torch.randint(0, 300, (3, 12))
    mask = torch.zeros(3, 12, dtype=torch.bool)
    mask[0, 5:9], mask[1, 2:12], mask[2, 7:10] = True, True, True
    batch = {"chosen": ids, "rejected": ids.flip(1), "chosen_mask": mask, "rejected_mask": mask.flip(1)}
    for average in (False, True):
        slow, fast = pair_logprobs(model, batch, average), pair_logprobs(model, batch, average, fast=True)
        for a, b in zip(slow, fast):
            assert torch.allclose(a, b, atol=1e-5), (a, b)
    policy, reference = policy_and_reference(model)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.01 * torch.randn_like(p))
    grads = []
    for fast in (False, True):
        policy.zero_grad()
        DPOLoss(reference, fast=fast)(policy, batch).backward()
        grads.append([p.grad.clone() for p in policy.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))
