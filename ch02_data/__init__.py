"""Chapter 2: working with text data — downloads, tokenizers, and the sliding-window loader."""

from .download import DownloadError, download, sha256_of
from .fastmode import fast_dev_run, pick
from .sources import SOURCES, data_dir, fetch

__all__ = [
    "DownloadError",
    "SOURCES",
    "data_dir",
    "download",
    "fast_dev_run",
    "fetch",
    "pick",
    "sha256_of",
]
