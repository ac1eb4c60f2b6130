"""GPT-2's tokenizer (tiktoken) that also works offline.

`tiktoken.get_encoding("gpt2")` downloads `encoder.json` and `vocab.bpe` on first use, the most
common stumbling block for readers behind firewalls. `gpt2_encoding()` tries tiktoken's own
loader (which honours TIKTOKEN_CACHE_DIR) and, if that fails, builds the same encoding from the
two files fetched through this chapter's `fetch` (DATA_MIRROR, sha256 check, progress bar).
"""

from __future__ import annotations

import functools
import os

import tiktoken
import tiktoken.load

from .bpe import ENDOFTEXT, GPT2_PATTERN
from .sources import fetch

EOT_ID = 50256  # id of <|endoftext|> in GPT-2's vocabulary


@functools.lru_cache(maxsize=1)
def gpt2_encoding() -> tiktoken.Encoding:
    """tiktoken's GPT-2 encoding (same ids as `tiktoken.get_encoding("gpt2")`), offline-capable."""
    cache = os.environ.get("TIKTOKEN_CACHE_DIR")
    if cache and os.path.exists(cache) and not os.path.isdir(cache):  # tiktoken would fail later
        raise ValueError(f"TIKTOKEN_CACHE_DIR={cache!r} is a file; point it to a folder (tiktoken "
                         "keeps GPT-2's files there) or unset it")
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as error:  # no network and no tiktoken cache: use our own download path
        print(f"tiktoken could not load its GPT-2 files ({type(error).__name__}); using ch02_data.fetch")
    ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(fetch("vocab.bpe")), encoder_json_file=str(fetch("encoder.json"))
    )
    return tiktoken.Encoding(
        name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={ENDOFTEXT: EOT_ID}
    )
