"""Chapter 7: instruction fine-tuning, generating responses and evaluating them."""

from .data import (
    ALPACA_PREAMBLE,
    STYLES,
    InstructionDataset,
    check_entries,
    collate,
    encode_example,
    format_example,
    format_prompt,
    load_instruction_data,
    make_loader,
    split_entries,
)
from .finetune import RECIPES, Recipe, fine_tune
from .judge import JudgeUnavailable, check_server, judge, judge_prompt, judge_summary, parse_score
from .respond import (
    extract_response,
    generate_from_prompt,
    generate_response,
    generate_responses,
    load_responses,
    respond_and_count,
    save_responses,
)
from .report import score_responses
from .scores import exact_match, normalize_answer, rouge_l, rouge_l_scores, short_answer_indices

__all__ = [
    "ALPACA_PREAMBLE",
    "InstructionDataset",
    "RECIPES",
    "Recipe",
    "JudgeUnavailable",
    "STYLES",
    "check_entries",
    "check_server",
    "collate",
    "encode_example",
    "exact_match",
    "extract_response",
    "format_example",
    "fine_tune",
    "format_prompt",
    "generate_from_prompt",
    "generate_response",
    "generate_responses",
    "judge",
    "judge_prompt",
    "judge_summary",
    "load_instruction_data",
    "load_responses",
    "make_loader",
    "normalize_answer",
    "parse_score",
    "rouge_l",
    "rouge_l_scores",
    "respond_and_count",
    "save_responses",
    "score_responses",
    "short_answer_indices",
    "split_entries",
]
