"""Downloading third-party files safely: mirror first, checksum always, atomic writes.

Data and weights are never committed to this repository. Each file is fetched from its public
URL and checked against a pinned sha256. Behind a firewall, or offline, point the environment
variable DATA_MIRROR at a folder that holds copies of the files (same file names): they are
copied from there, and still verified.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm  # plain text bar: works in terminals and notebooks alike

MIRROR_ENV_VAR = "DATA_MIRROR"
_CHUNK = 1 << 20  # 1 MiB


class DownloadError(RuntimeError):
    """A file could not be obtained with the expected sha256."""


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks so large files do not fill memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _mirror_help(name: str) -> str:
    return (
        f"To work offline, put a copy of '{name}' in a folder and set {MIRROR_ENV_VAR} to it, "
        f"e.g. `export {MIRROR_ENV_VAR}=/path/to/mirror` (the README's 'Downloads' section)."
    )


def _verify_and_move(tmp: Path, dest: Path, sha256: str, source: str) -> None:
    """Move `tmp` onto `dest` only if its hash matches; otherwise delete it and raise."""
    actual = sha256_of(tmp)
    if actual != sha256:
        tmp.unlink(missing_ok=True)
        raise DownloadError(
            f"sha256 mismatch for {dest.name} from {source}\n"
            f"  expected: {sha256}\n  actual:   {actual}\n"
            "The file was discarded; nothing was written. "
            "A proxy or captive portal may have replaced it. " + _mirror_help(dest.name)
        )
    os.replace(tmp, dest)  # atomic on the same file system


def _temp_path(dest: Path) -> Path:
    """A new empty file beside `dest` (same file system, so the final rename is atomic)."""
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".part")
    os.close(fd)  # only the name is needed; an open handle would block unlink/rename on Windows
    return Path(name)


def _fetch_url(url: str, tmp: Path, timeout: float) -> None:
    """Stream `url` into `tmp` with a progress bar."""
    req = urllib.request.Request(url, headers={"User-Agent": "gpt-from-scratch-companion"})
    with urllib.request.urlopen(req, timeout=timeout) as resp, open(tmp, "wb") as out:
        total = int(resp.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=tmp.name.split(".part")[0]) as bar:
            for chunk in iter(lambda: resp.read(_CHUNK), b""):
                out.write(chunk)
                bar.update(len(chunk))


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str,
    *,
    retries: int = 3,
    timeout: float = 30.0,
) -> Path:
    """Make sure `dest` holds the file at `url` with the given sha256, and return its path.

    1. If `dest` exists and its hash matches, return at once (no work on a second call).
    2. Else, if DATA_MIRROR names a folder holding `<dest's folder name>/<dest.name>` or
       `<dest.name>`, copy it from there.
    3. Else, stream `url` with a tqdm bar, retrying transient failures `retries` times.
    Every copy is written to a temporary file beside `dest`, verified, then renamed into place,
    so a corrupt or truncated file is never left at `dest`. Failures raise `DownloadError`.
    """
    dest = Path(dest)
    sha256 = sha256.lower()
    if dest.is_file() and sha256_of(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)

    mirror = os.environ.get(MIRROR_ENV_VAR)
    # Look for <mirror>/<folder>/<name> first (several models' "model.safetensors" side by side),
    # then for <mirror>/<name>.
    candidates = [Path(mirror) / dest.parent.name / dest.name, Path(mirror) / dest.name] if mirror else []
    src = next((c for c in candidates if c.is_file()), None)
    if src is not None:
        tmp = _temp_path(dest)
        try:
            shutil.copyfile(src, tmp)
        except OSError as e:  # unreadable mirror file, disk full: no partial copy stays behind
            tmp.unlink(missing_ok=True)
            raise DownloadError(f"Could not copy {src} to {dest.parent}: {e}") from e
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _verify_and_move(tmp, dest, sha256, source=f"mirror {src}")
        return dest

    last_error: Exception | None = None
    for attempt in range(retries + 1):
        tmp = _temp_path(dest)
        try:
            _fetch_url(url, tmp, timeout)
        except urllib.error.HTTPError as e:
            tmp.unlink(missing_ok=True)
            last_error = e
            if e.code < 500 and e.code != 429:  # 404 and friends will not heal by retrying
                break
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            # DNS, refused, reset, timeout, or a body cut short (IncompleteRead)
            tmp.unlink(missing_ok=True)
            last_error = e
        except BaseException:  # KeyboardInterrupt included: never leave a partial file
            tmp.unlink(missing_ok=True)
            raise
        else:
            _verify_and_move(tmp, dest, sha256, source=url)
            return dest
        if attempt < retries:
            time.sleep(min(2**attempt, 8))

    if isinstance(last_error, urllib.error.HTTPError):
        reason = f"HTTP {last_error.code} {last_error.reason}"
    else:
        reason = getattr(last_error, "reason", None) or last_error
    checked = f"  {MIRROR_ENV_VAR}={mirror} holds no '{dest.name}'.\n" if mirror else ""
    raise DownloadError(
        f"Could not download {url}\n  reason: {reason}\n  expected sha256: {sha256}\n"
        + checked
        + _mirror_help(dest.name)
    ) from None
