"""Chapter 6: fine-tuning GPT-2 as a text classifier."""

from .data import (
    LABELS,
    SMS_SHA256,
    SMS_URL,
    SpamDataset,
    balance,
    collate_longest,
    load_sms_spam,
    make_loader,
    read_sms_file,
    read_sms_naively,
    sms_spam_path,
    split,
)

__all__ = [
    "LABELS",
    "SMS_SHA256",
    "SMS_URL",
    "SpamDataset",
    "balance",
    "collate_longest",
    "load_sms_spam",
    "make_loader",
    "read_sms_file",
    "read_sms_naively",
    "sms_spam_path",
    "split",
]
