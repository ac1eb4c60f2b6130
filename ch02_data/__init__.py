"""Chapter 2: working with text data — downloads, tokenizers, and the sliding-window loader."""

from .bpe import BPETokenizer
from .dataset import GPTDataset, SeededSampler, create_dataloader, seeded_loader
from .encoding import EOT_ID, gpt2_encoding
from .download import DownloadError, Unpack, download, sha256_of
from .fastmode import fast_dev_run, pick
from .sources import SOURCES, data_dir, fetch
from .tokenizer import SimpleTokenizer, UnknownWordError, build_vocab, tokenize

__all__ = [
    "BPETokenizer",
    "DownloadError",
    "EOT_ID",
    "GPTDataset",
    "SOURCES",
    "SeededSampler",
    "SimpleTokenizer",
    "UnknownWordError",
    "Unpack",
    "build_vocab",
    "create_dataloader",
    "data_dir",
    "download",
    "fast_dev_run",
    "fetch",
    "gpt2_encoding",
    "pick",
    "seeded_loader",
    "sha256_of",
    "tokenize",
]
