"""Direct Preference Optimization (Rafailov et al. 2023): the loss and its pieces (metrics.py: its statistics).

DPO tunes a language model (the *policy* pi) on pairs (prompt x, chosen y_w, rejected y_l)
without a separate reward model and without sampling. It compares the policy with a frozen copy
of itself taken before tuning (the *reference* pi_ref):

    reward(x, y) = beta * (log pi(y | x) - log pi_ref(y | x))
    loss         = -log sigmoid( reward(x, y_w) - reward(x, y_l) )

averaged over the pairs. log pi(y | x) is the sum of the log-probabilities of the response's
tokens given everything before them (`sequence_logprobs`). The loss falls when the policy raises
the chosen response's probability relative to the reference more than the rejected one's; beta
sets how far from the reference that is worth going (small beta: the reward scale is small, so
the log-ratios must grow large before the loss saturates). At the start pi = pi_ref, both
rewards are 0 and the loss is -log sigmoid(0) = log 2 = 0.693.

The loss plugs into chapter 5's loop unchanged: `train(policy, optimizer, loader,
DPOLoss(reference), metrics=dpo_metrics(reference))`, with batches from `preference_collate`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ch02_data import EOT_ID
from ch02_data.checks import finite_number, positive_int
from ch05_pretrain import NoTargetsError, move_to_device, set_dropout, unwrap

from .data import REF_KEYS, _check_max_length, _pairs

BATCH_KEYS = ("chosen", "rejected", "chosen_mask", "rejected_mask")


# --- Log-probabilities of responses -----------------------------------------------------------


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor,
                      average: bool = False) -> torch.Tensor:
    """log pi(response | prompt) of each row: (B, T, V), (B, T), (B, T) -> (B,) float32.

    Args:
        logits: the model's output for the inputs `labels`; logits[:, t] scores the token at
            position t + 1.
        labels: (B, T) int64, the very token tensor that was fed to the model.
        mask: (B, T) bool, True at the positions of the tokens to score (the response).
        average: False sums over the scored tokens (the DPO paper); True divides by their
            number (what the book's code does), so long and short responses weigh alike.

    The log-probability of token t is log_softmax(logits[:, t-1])[labels[:, t]], i.e.
    logits[:, t-1, y] - logsumexp(logits[:, t-1]) with y = labels[:, t], computed in float32
    (bfloat16 keeps 8 significant bits: a logit near 20 is rounded by up to 0.06, and a
    sequence sums many such terms). Only the logits of scored positions are converted and
    normalised; finding them (`nonzero`) makes a GPU wait once for the count.
    mask[:, 0] is ignored: nothing comes before the first token, so it has no prediction.
    A row with no scored token gets 0 with average=False; with average=True it is refused.
    """
    if not isinstance(logits, torch.Tensor) or logits.ndim != 3:
        raise ValueError(f"logits has shape {tuple(getattr(logits, 'shape', ()))}; it must be "
                         "(B, T, V)")
    if labels.shape != logits.shape[:2]:
        raise ValueError(f"labels has shape {tuple(labels.shape)} but logits {tuple(logits.shape)};"
                         " labels must be (B, T), the tokens the logits were computed for")
    if mask.shape != labels.shape or mask.dtype != torch.bool:
        raise ValueError(f"mask is a {mask.dtype} tensor of shape {tuple(mask.shape)}; it must be "
                         f"bool with the shape of labels, {tuple(labels.shape)}")
    return _scored_logprobs(lambda rows, cols: logits[rows, cols], labels, mask, average)


def sequence_logprobs_from_hidden(hidden: torch.Tensor, head: nn.Module, labels: torch.Tensor,
                                  mask: torch.Tensor, average: bool = False) -> torch.Tensor:
    """`sequence_logprobs` from the final hidden states (B, T, C) (`GPTModel.hidden_states`) and
    the output head: the head is applied only to the positions that score a response token, so
    the (B, T, V) logits are never made. Same numbers up to float rounding (tested)."""
    if not isinstance(hidden, torch.Tensor) or hidden.ndim != 3 or labels.shape != hidden.shape[:2]:
        raise ValueError(f"hidden has shape {tuple(getattr(hidden, 'shape', ()))} and labels "
                         f"{tuple(getattr(labels, 'shape', ()))}; they must be (B, T, C) and (B, T)")
    if mask.shape != labels.shape or mask.dtype != torch.bool:
        raise ValueError(f"mask is a {mask.dtype} tensor of shape {tuple(mask.shape)}; it must be "
                         f"bool with the shape of labels, {tuple(labels.shape)}")
    return _scored_logprobs(lambda rows, cols: head(hidden[rows, cols]), labels, mask, average)


def _scored_logprobs(logits_at, labels: torch.Tensor, mask: torch.Tensor, average: bool) -> torch.Tensor:
    """The shared body: `logits_at(rows, cols)` gives the (N, V) logits at the N positions that
    predict a scored token."""
    counted = mask[:, 1:]  # (B, T-1): token t = 1..T-1 is scored; token 0 never is
    # Only the scored tokens' rows of logits are needed: select them first, so the float32 copy,
    # the logsumexp and their gradients cover the responses, not the (longer) prompts.
    rows, cols = counted.nonzero(as_tuple=True)  # token (row, cols + 1) is read at (row, cols)
    z = logits_at(rows, cols).float()  # (N, V): the logits that predict the N scored tokens
    targets = labels[rows, cols + 1]  # (N,)
    token_logps = z.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(z, dim=-1)
    # Add each token's log-prob to its row's total; rows without scored tokens stay 0.
    total = torch.zeros(labels.shape[0], dtype=torch.float32, device=labels.device)
    total = total.index_add(0, rows, token_logps)  # (B,)
    if not average:
        return total
    count = counted.sum(dim=-1)
    if bool((count == 0).any()):
        raise ValueError(f"rows {(count == 0).nonzero().flatten().tolist()} of mask have no scored "
                         "token after position 0, so their average log-prob is 0/0; drop them")
    return total / count


def pair_logprobs(model: nn.Module, batch: dict, average: bool = False,
                  fast: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) sequence log-probs, each (B,), from ONE forward pass of `model`.

    Chosen and rejected sequences share their length T (see `preference_collate`), so they are
    stacked along the batch dimension into (2B, T), which keeps the GPU busier than two passes.
    `fast=True` (a model with `hidden_states` and `out_head`, such as GPTModel) applies the
    output head to the response positions only (`sequence_logprobs_from_hidden`): the same
    numbers without the (2B, T, V) logits, several times faster for the fallback model.
    """
    inputs = torch.cat([batch["chosen"], batch["rejected"]])  # (2B, T)
    masks = torch.cat([batch["chosen_mask"], batch["rejected_mask"]])
    if fast:  # a plain GPTModel (not a DDP or compile wrapper, whose forward this skips)
        logps = sequence_logprobs_from_hidden(model.hidden_states(inputs), model.out_head, inputs, masks, average)
    else:
        logps = sequence_logprobs(model(inputs), inputs, masks, average)  # (2B,)
    B = batch["chosen"].shape[0]
    return logps[:B], logps[B:]


# --- The loss ---------------------------------------------------------------------------------


def _check_beta(beta) -> None:
    finite_number("beta", beta, 0, above=True, meaning="the paper and the book use 0.1")


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, chosen_rewards, rejected_rewards) from four (B,) tensors of sequence log-probs.

        chosen_rewards   = beta * (policy_chosen_logps   - ref_chosen_logps)      (B,)
        rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)    (B,)
        loss = mean over the batch of -log sigmoid(chosen_rewards - rejected_rewards)

    `F.logsigmoid` is used rather than log(sigmoid(.)), which underflows to log 0 = -inf for
    very negative margins. The rewards are returned detached: they are for logging only; the
    gradient flows through the loss.
    """
    _check_beta(beta)
    shape = policy_chosen_logps.shape
    for name, t in [("policy_rejected_logps", policy_rejected_logps),
                    ("ref_chosen_logps", ref_chosen_logps), ("ref_rejected_logps", ref_rejected_logps)]:
        if t.shape != shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)} but policy_chosen_logps "
                             f"{tuple(shape)}; give four tensors of one shape (B,)")
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    return loss, chosen_rewards.detach(), rejected_rewards.detach()


# --- The reference model ----------------------------------------------------------------------


def freeze(model: nn.Module) -> nn.Module:
    """Make `model` a reference: no parameter takes gradients, eval mode (no dropout), no .grad."""
    model.requires_grad_(False)
    for p in model.parameters():
        p.grad = None
    return model.eval()


def policy_and_reference(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(policy, reference): `model` itself, to be trained, with its dropout switched off
    (chapter 5's `set_dropout`: the book builds its DPO models with drop_rate 0.0), and a frozen
    deep copy of it.

    The copy (of the plain module inside any DDP or torch.compile wrapper) holds its own
    parameters, so optimizer steps on the policy never touch it. It costs one more model in
    memory; `precompute_reference_logps` avoids that.
    """
    set_dropout(unwrap(model), 0.0)
    return model, freeze(copy.deepcopy(unwrap(model)))


def _check_batch(batch) -> None:
    if not isinstance(batch, dict) or any(key not in batch for key in BATCH_KEYS):
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"batch has {keys}; DPO needs a dict with the keys {BATCH_KEYS} "
                         "(from preference_collate)")


def _response_counts(mask: torch.Tensor) -> torch.Tensor:
    """Scored tokens per row, as `sequence_logprobs` counts them (position 0 never counts)."""
    return mask[:, 1:].sum(dim=-1)


class DPOLoss:
    """`loss_fn(model, batch) -> scalar` for chapter 5's `train`: the DPO loss of a batch.

    Args:
        reference_model: the frozen reference pi_ref. It is frozen here (requires_grad False,
            eval mode) and run under torch.no_grad(), so it never receives gradients. It must
            live on the batches' device. May be None when every batch carries precomputed
            reference log-probs ("ref_chosen_logps", "ref_rejected_logps", from
            `precompute_reference_logps`); batches that carry them use them in any case.
        beta: the DPO temperature (0.1 in the paper and the book).
        average: score a response by its mean token log-prob instead of the sum (the book's
            code averages; the paper sums). Use the same setting in `dpo_metrics`.
        fast: compute the log-probs with `pair_logprobs(..., fast=True)`, the output head on the
            response positions only (a plain GPTModel; the same numbers, several times faster
            when the vocabulary dominates the model's cost).
        sft_weight: add this many times the chosen responses' negative log-likelihood per token
            (the mean over the batch) to the loss: DPO plus a supervised term, as in RPO (Pang et
            al. 2024). DPO alone can lower the probability of the chosen answers too, as long as
            the rejected ones fall faster; the extra term holds the chosen ones up. 0 (the
            default) is plain DPO.

    A batch in which every pair was dropped (0 rows) raises `NoTargetsError` before any
    forward pass; `train` skips it and `evaluate` leaves it out.
    """

    def __init__(self, reference_model: nn.Module | None = None, beta: float = 0.1,
                 average: bool = False, fast: bool = False, sft_weight: float = 0.0):
        _check_beta(beta)
        finite_number("sft_weight", sft_weight, 0, meaning="0 is plain DPO; RPO uses 1")
        self.sft_weight = float(sft_weight)
        self.reference = None if reference_model is None else freeze(reference_model)
        self.beta = beta
        self.average = average
        self.fast = fast  # pair_logprobs' fast path (the head on response positions only)
        self._checked: set[int] = set()  # ids of policies found not to share the reference's weights

    def reference_logps(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(chosen, rejected) log-probs under the reference: precomputed ones from the batch if
        it carries them, else one forward pass of the reference without gradients."""
        if all(key + "s" in batch for key in REF_KEYS):
            chosen, rejected = batch["ref_chosen_logps"], batch["ref_rejected_logps"]  # sums
            if self.average:
                chosen = chosen / _response_counts(batch["chosen_mask"])
                rejected = rejected / _response_counts(batch["rejected_mask"])
            return chosen, rejected
        if self.reference is None:
            raise ValueError("the batch carries no 'ref_chosen_logps' and this DPOLoss has no "
                             "reference_model; give one, or run precompute_reference_logps on "
                             "the dataset first")
        self._check_distinct(model)
        device = next(self.reference.parameters()).device
        if device != batch["chosen"].device:
            raise ValueError(f"the reference model is on {device} but the batch on "
                             f"{batch['chosen'].device}; move it with reference.to(device)")
        if self.reference.training:  # someone switched it back; dropout must stay off
            self.reference.eval()
        with torch.no_grad():
            return pair_logprobs(self.reference, batch, self.average, self.fast)

    def _check_distinct(self, model: nn.Module) -> None:
        """Refuse a policy that is the reference or shares parameters with it (checked once)."""
        if id(model) in self._checked:
            return
        ref_params = {id(p) for p in self.reference.parameters()}
        if model is self.reference or any(id(p) in ref_params for p in model.parameters()):
            raise ValueError("the model being trained shares its parameters with the reference "
                             "model; make the reference a copy: policy, reference = "
                             "policy_and_reference(model)")
        self._checked.add(id(model))

    def terms(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`dpo_loss`'s (loss, chosen_rewards, rejected_rewards) for one batch; the loss includes
        the supervised term when `sft_weight` is above 0."""
        _check_batch(batch)
        if batch["chosen"].shape[0] == 0:
            raise NoTargetsError(f"every pair of this batch was dropped ({batch.get('dropped')} "
                                 "had no response token within max_length), so there is no "
                                 "loss; raise max_length or shorten the prompts")
        policy_chosen, policy_rejected = pair_logprobs(model, batch, self.average, self.fast)
        ref_chosen, ref_rejected = self.reference_logps(model, batch)
        loss, chosen_rewards, rejected_rewards = dpo_loss(policy_chosen, policy_rejected, ref_chosen,
                                                          ref_rejected, self.beta)
        if self.sft_weight > 0:
            per_token = policy_chosen if self.average else policy_chosen / _response_counts(batch["chosen_mask"])
            loss = loss - self.sft_weight * per_token.mean()  # + weight * NLL per token of the chosen
        return loss, chosen_rewards, rejected_rewards

    def __call__(self, model: nn.Module, batch: dict) -> torch.Tensor:
        return self.terms(model, batch)[0]


# --- Reference log-probs computed once --------------------------------------------------------


@torch.no_grad()
def precompute_reference_logps(reference_model: nn.Module, dataset: Sequence[dict],
                               batch_size: int = 8, max_length: int | None = None) -> None:
    """Score every item of `dataset` under the reference once, and store the results in it.

    Each item (a dict of `PreferenceDataset`) gains "ref_chosen_logp" and "ref_rejected_logp"
    (floats: summed token log-probs; `DPOLoss(average=True)` divides by the counts itself) and
    "ref_max_length". `preference_collate` then carries them into the batch, so `DPOLoss(None)`
    trains with one model in memory and no reference forward pass per step.

    Use the same `max_length` as the loaders that will read the dataset: truncation decides
    which tokens are scored, so collate refuses items scored with another max_length. A token's
    log-prob depends only on the tokens before it (causal attention), so neither the batch it
    is scored in nor the padding changes it. Pairs collate would drop get nan (never read).
    """
    positive_int("batch_size", batch_size)
    _check_max_length(max_length)
    reference = freeze(reference_model)
    device = next(reference.parameters()).device
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        batch, keep = _pairs(items, EOT_ID, max_length)
        chosen = torch.full((len(items),), math.nan)
        rejected = torch.full((len(items),), math.nan)
        if bool(keep.any()):
            logps = pair_logprobs(reference, move_to_device(batch, device), average=False)
            chosen[keep], rejected[keep] = logps[0].cpu(), logps[1].cpu()
        for item, c, r in zip(items, chosen.tolist(), rejected.tolist()):
            item.update(ref_chosen_logp=c, ref_rejected_logp=r, ref_max_length=max_length)
