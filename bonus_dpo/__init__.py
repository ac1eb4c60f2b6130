"""Bonus: preference tuning with Direct Preference Optimization (DPO, Rafailov et al. 2023)."""

from .data import (
    DATA_NAME,
    PreferenceDataset,
    check_preference_entries,
    distinct_pairs,
    encode_preference,
    load_preference_data,
    make_preference_loader,
    pair_origins,
    preference_collate,
    split_preference,
)
from .dpo import (
    DPOLoss,
    dpo_loss,
    freeze,
    pair_logprobs,
    policy_and_reference,
    precompute_reference_logps,
    sequence_logprobs,
    sequence_logprobs_from_hidden,
)
from .metrics import METRIC_NAMES, dpo_metrics, preference_stats
from .recipe import DPO_RECIPES, DPORecipe, dpo_recipe
from .style import politeness_scorer
from .synth import TONES, make_preference_pairs, rewrite_prompt

__all__ = [
    "DATA_NAME",
    "DPOLoss",
    "DPORecipe",
    "DPO_RECIPES",
    "METRIC_NAMES",
    "TONES",
    "PreferenceDataset",
    "check_preference_entries",
    "distinct_pairs",
    "dpo_loss",
    "dpo_metrics",
    "dpo_recipe",
    "encode_preference",
    "freeze",
    "load_preference_data",
    "make_preference_pairs",
    "make_preference_loader",
    "pair_logprobs",
    "pair_origins",
    "politeness_scorer",
    "policy_and_reference",
    "precompute_reference_logps",
    "preference_collate",
    "preference_stats",
    "rewrite_prompt",
    "sequence_logprobs",
    "sequence_logprobs_from_hidden",
    "split_preference",
]
