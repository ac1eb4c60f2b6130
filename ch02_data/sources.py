"""The public data files this repository uses: where they live and their pinned sha256.

`fetch(name)` returns a local path to the verified file, downloading it (or copying it from
DATA_MIRROR) on first use into the repository's git-ignored `data/` folder. Set DATA_DIR to keep
the files elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from .download import download

_RAW = "https://raw.githubusercontent.com"

# name -> (public URL, sha256). Facts from ../shared/data/MANIFEST.md (licenses listed there).
SOURCES: dict[str, tuple[str, str]] = {
    "the-verdict.txt": (
        f"{_RAW}/rasbt/LLMs-from-scratch/main/ch02/01_main-chapter-code/the-verdict.txt",
        "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f",
    ),
    "tinyshakespeare.txt": (
        f"{_RAW}/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    ),
    "tinystories-train-sample-2MiB.txt": (
        f"{_RAW}/gusjengis/toy-RNN/e4c7ff8bba4ff7989e69a3a816ebe4b14813b41e/data/tinystories_sample.txt",
        "5352b299dcb1a32898b2d779b145b5a05f3e1265953fd21c264c9f9f9c9ae33d",
    ),
    "instruction-data.json": (
        f"{_RAW}/rasbt/LLMs-from-scratch/main/ch07/01_main-chapter-code/instruction-data.json",
        "7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944",
    ),
    "instruction-data-with-preference.json": (
        f"{_RAW}/rasbt/LLMs-from-scratch/main/ch07/04_preference-tuning-with-dpo/"
        "instruction-data-with-preference.json",
        "305315abf14f65fa42c01a0877572f832606571c2a7d49f152ac1d758b16756e",
    ),
    # GPT-2's byte-pair encoding files, as OpenAI published them (tiktoken checks the same hashes).
    "encoder.json": (
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    ),
    "vocab.bpe": (
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    ),
}

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """Where downloaded files are kept: $DATA_DIR, else `<repository>/data` (git-ignored)."""
    return Path(os.environ.get("DATA_DIR") or REPO_ROOT / "data")


def fetch(name: str) -> Path:
    """Local path of the verified data file `name` (a key of SOURCES), downloading it if needed."""
    if name not in SOURCES:
        raise KeyError(f"unknown data file {name!r}; known: {', '.join(sorted(SOURCES))}")
    url, sha256 = SOURCES[name]
    return download(url, data_dir() / name, sha256)
