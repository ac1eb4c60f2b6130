"""Where OpenAI's GPT-2 weights come from: a local `GPT2_DIR`, else the Hugging Face Hub, verified.

Two sources, tried in this order for a size name ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"):

1. `$GPT2_DIR/<name>/` holding `config.json` and `model.safetensors` as transformers'
   `save_pretrained` writes them. A teacher copies one folder to every machine of a classroom;
   the tests put stand-in weights there. The config must describe that size's shapes.
2. The Hugging Face Hub through `huggingface_hub.hf_hub_download` at a fixed revision of
   `openai-community/<name>`. Everything a Hugging Face user expects then holds: files already in
   the Hugging Face cache (~/.cache/huggingface/hub, or HF_HUB_CACHE) are reused without a network
   request, HF_ENDPOINT points at a mirror, HF_HUB_OFFLINE=1 uses the cache only.

Every downloaded file is checked by sha256 against a value that does not come from its bytes: the
sha256 pinned below where one is known, else the LFS sha256 the hub declared for that revision
(Hugging Face names each LFS file in its cache by that value). A file that fails is deleted from
the cache and refused.

Failures raise `GPT2Unavailable`, a `ch02_data.DownloadError` whose message is one sentence with the
size, the URL tried, the reason, and the two manual routes (GPT2_DIR, an HF_ENDPOINT mirror); its
`reason` attribute holds the short why for callers that print one line.
"""

from __future__ import annotations

import os
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ch02_data import DownloadError, sha256_of

GPT2_DIR_ENV = "GPT2_DIR"
DEFAULT_ENDPOINT = "https://huggingface.co"


@dataclass(frozen=True)
class HubFile:
    """One GPT-2 size on the Hugging Face Hub."""

    repo_id: str
    revision: str  # a commit hash pins the exact file; "main" follows the repository
    sha256: str | None  # model.safetensors' sha256 when known; None: the hub's declared LFS sha256


# gpt2 is pinned to commit 607a30d7 (model.safetensors: 548,105,171 bytes, sha256 248dfc39...).
# For the three larger sizes no commit and sha256 could be confirmed from an independent source
# while this was written (this machine cannot reach the hub), so they follow "main" and are checked
# against the LFS sha256 the hub declares for the file it serves; pin them here once confirmed.
GPT2_HUB: dict[str, HubFile] = {
    "gpt2": HubFile("openai-community/gpt2", "607a30d783dfa663caf39e06633721c8d4cfcd7e",
                    "248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707"),
    "gpt2-medium": HubFile("openai-community/gpt2-medium", "main", None),
    "gpt2-large": HubFile("openai-community/gpt2-large", "main", None),
    "gpt2-xl": HubFile("openai-community/gpt2-xl", "main", None),
}
GPT2_SIZES = tuple(GPT2_HUB)
WEIGHTS_FILE = "model.safetensors"
_SHA256 = re.compile(r"[0-9a-f]{64}")


class GPT2Unavailable(DownloadError):
    """GPT-2 size `name` could not be had from GPT2_DIR or the hub; `reason` says why in a few words."""

    def __init__(self, name: str, url: str, reason: str):
        self.name, self.url, self.reason = name, url, reason
        super().__init__(
            f"GPT-2 {name!r} is not available ({reason}; tried {url}): put config.json and "
            f"model.safetensors in $GPT2_DIR/{name}/ (the GPT2_DIR route), or set HF_ENDPOINT to a "
            "Hugging Face mirror you can reach"
        )


def _check_name(name: str) -> None:
    if name not in GPT2_HUB:
        raise ValueError(f"name={name!r} is not a GPT-2 size; use one of {', '.join(GPT2_SIZES)}")


def endpoint() -> str:
    """The hub address in use: $HF_ENDPOINT (read at every call, so a notebook may set it), else
    huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_url(name: str) -> str:
    """The URL of size `name`'s model.safetensors at its revision."""
    _check_name(name)
    f = GPT2_HUB[name]
    return f"{endpoint()}/{f.repo_id}/resolve/{f.revision}/{WEIGHTS_FILE}"


def gpt2_dir() -> Path | None:
    """$GPT2_DIR as a Path, or None when unset or empty."""
    value = os.environ.get(GPT2_DIR_ENV, "").strip()
    return Path(value).expanduser() if value else None


def local_folder(name: str) -> Path | None:
    """`$GPT2_DIR/<name>` when it holds both config.json and model.safetensors, else None."""
    _check_name(name)
    root = gpt2_dir()
    if root is None:
        return None
    folder = root / name
    if (folder / "config.json").is_file() and (folder / WEIGHTS_FILE).is_file():
        return folder
    return None


def sizes_in_gpt2_dir() -> list[str]:
    """The GPT-2 sizes that $GPT2_DIR holds, smallest first."""
    return [name for name in GPT2_SIZES if local_folder(name) is not None]


@contextmanager
def _no_ipywidgets_warning():
    """Import huggingface_hub inside this. It imports `tqdm.auto`, which in a Jupyter kernel without
    ipywidgets warns "IProgress not found" and prints the path of the reader's site-packages; the
    plain text bar it falls back to works, so the warning only clutters the notebook."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        yield


def _reason(error: BaseException) -> str:
    """A few words for a failed hub download, chosen by the exception's type (never its text)."""
    with _no_ipywidgets_warning():
        from huggingface_hub import constants
        from huggingface_hub.errors import (
            EntryNotFoundError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

    if isinstance(error, LocalEntryNotFoundError):
        if constants.is_offline_mode():
            return "HF_HUB_OFFLINE is set and the file is not in the Hugging Face cache"
        cause = error.__cause__ or error.__context__
        why = f" ({type(cause).__name__})" if cause is not None else ""
        return f"the hub could not be reached{why} and the file is not in the Hugging Face cache"
    if isinstance(error, (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError)):
        return f"the hub has no such file ({type(error).__name__})"
    if isinstance(error, HfHubHTTPError):
        status = getattr(error.response, "status_code", None)
        return f"the hub answered HTTP {status}" if status else f"the hub refused ({type(error).__name__})"
    if isinstance(error, OSError) and error.strerror:  # a disk error
        return f"{type(error).__name__}: {error.strerror}"
    return f"the hub could not be reached ({type(error).__name__})"  # connection, timeout, proxy


def _declared_sha256(path: str) -> str | None:
    """The sha256 the hub declared for a cached LFS file: its blob's name in the Hugging Face cache
    (`.../blobs/<sha256>`, which the snapshot entry links to), or None without symlinks."""
    blob = Path(os.path.realpath(path))
    return blob.name if blob.parent.name == "blobs" and _SHA256.fullmatch(blob.name) else None


def _forget(path: str) -> None:
    """Delete a refused file from the Hugging Face cache (the snapshot link and its blob), so
    the next call downloads it again instead of reusing it."""
    blob = Path(os.path.realpath(path))
    for p in (Path(path), blob):
        try:
            p.unlink()
        except OSError:
            pass


def download_from_hub(name: str) -> Path:
    """Path of size `name`'s verified model.safetensors in the Hugging Face cache, downloaded
    if needed (tqdm bar); raises GPT2Unavailable."""
    _check_name(name)
    with _no_ipywidgets_warning():
        from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download
        from huggingface_hub.errors import LocalEntryNotFoundError

    f, url = GPT2_HUB[name], hub_url(name)
    get = dict(repo_id=f.repo_id, filename=WEIGHTS_FILE, revision=f.revision, endpoint=endpoint())
    try:
        path = hf_hub_download(**get, local_files_only=True)  # the cache first: no request at all
    except LocalEntryNotFoundError as e:
        if constants.is_offline_mode():
            raise GPT2Unavailable(name, url, _reason(e)) from e
        # One request without retries first: an unreachable hub then fails in a second instead
        # of after huggingface_hub's five retries with backoff (23 s for each size tried).
        try:
            get_hf_file_metadata(url, timeout=10)
            path = hf_hub_download(**get)
        except Exception as e2:  # every hub, network and disk error becomes one sentence
            raise GPT2Unavailable(name, url, _reason(e2)) from e2
    except Exception as e:  # a damaged cache, a disk error
        raise GPT2Unavailable(name, url, _reason(e)) from e
    expected = f.sha256 or _declared_sha256(path)
    if expected is None:
        raise GPT2Unavailable(name, url, "the hub declared no sha256 to check the file against "
                                         "(a cache without symlinks); use the GPT2_DIR route")
    got = sha256_of(path)
    if got != expected:
        _forget(path)
        raise GPT2Unavailable(name, url, f"sha256 mismatch: got {got[:12]}..., expected "
                                         f"{expected[:12]}...; the file was deleted from the cache")
    return Path(path)
