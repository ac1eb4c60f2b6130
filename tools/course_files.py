"""The files a course needs, in one table shared by `tools.doctor` and `tools.mirror`.

Every data file the chapters read (name, where it comes from, its pinned sha256) and the names
tiktoken gives GPT-2's two BPE files in its cache. The URLs and hashes themselves live in the
chapter modules (`ch02_data.sources`, `ch06_classify.data`); this module only lists them together.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ch02_data.sources import SOURCES
from ch06_classify.data import SMS_FALLBACK_URL, SMS_NAME, SMS_SHA256, SMS_URL, SMS_ZIP_NAME


@dataclass(frozen=True)
class DataFile:
    """One data file as the chapters find it in DATA_DIR or DATA_MIRROR."""

    name: str  # the file name in data/ and in a mirror
    urls: tuple[str, ...]  # where it is downloaded from, in order
    sha256: str  # of the file itself (for the SMS data: of the file inside the zip)
    packed_name: str | None = None  # a mirror may hold this zip instead of the file


DATA_FILES: tuple[DataFile, ...] = tuple(
    DataFile(name, (url,), sha256) for name, (url, sha256) in SOURCES.items()
) + (DataFile(SMS_NAME, (SMS_URL, SMS_FALLBACK_URL), SMS_SHA256, SMS_ZIP_NAME),)


def tiktoken_cache_names() -> dict[str, str]:
    """{data file name: the name tiktoken gives it in its cache}: the sha1 of the URL it reads."""
    return {name: hashlib.sha1(SOURCES[name][0].encode()).hexdigest() for name in ("vocab.bpe", "encoder.json")}


def tiktoken_cache_dir() -> Path | None:
    """The folder tiktoken caches its files in, as tiktoken decides it; None when caching is off."""
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return Path(os.environ[var]) if os.environ[var] else None
    return Path(tempfile.gettempdir()) / "data-gym-cache"
