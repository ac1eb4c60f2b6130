"""Downloading third-party files safely: mirror first, checksum always, atomic writes.

Data and weights are never committed to this repository. Each file is fetched from its public
URL and checked against a pinned sha256. Behind a firewall, or offline, point the environment
variable DATA_MIRROR at a folder that holds copies of the files (same file names): they are
copied from there, and still verified.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import http.client
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm  # plain text bar: works in terminals and notebooks alike

try:
    import fcntl  # POSIX file locks, which the OS releases when a process dies, even when killed
except ImportError:  # Windows
    fcntl = None

MIRROR_ENV_VAR = "DATA_MIRROR"
_CHUNK = 1 << 20  # 1 MiB
_TEMP_TAG = ".part"  # temporary copies are named <dest.name>.part + 8 random characters
# Without file locks (Windows) a temporary copy is taken for abandoned once it has not changed
# for this long: a live download writes to it at least every `timeout` seconds.
_STALE_AFTER_S = 3600


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
    try:
        os.replace(tmp, dest)  # atomic on the same file system
    except OSError as e:  # e.g. dest is a folder, or not writable: the caller removes tmp
        raise DownloadError(f"Could not move the verified file onto {dest}: {e}") from e


@contextlib.contextmanager
def _temp_file(dest: Path) -> Iterator[Path]:
    """A new empty file beside `dest` (same file system, so the final rename is atomic).

    It is removed on leaving the block, whatever happened, unless it was renamed onto `dest`.
    On POSIX it stays locked meanwhile, which tells a later download that it is in use.
    """
    try:
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + _TEMP_TAG)
    except OSError as e:  # a read-only folder, say
        raise DownloadError(f"Could not create a file in {dest.parent} to download into: {e}") from e
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)
    else:
        os.close(fd)  # Windows: an open handle would block the final rename
        fd = None
    tmp = Path(name)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)  # nothing left to do after a successful rename
        if fd is not None:
            os.close(fd)  # releases the lock


def _is_abandoned(tmp: Path) -> bool:
    """True if the temporary file `tmp` belongs to no running download (a killed one left it)."""
    if fcntl is None:
        return time.time() - tmp.stat().st_mtime > _STALE_AFTER_S
    with open(tmp, "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a live download holds the lock
            return False
    return True


def _remove_abandoned_temp_files(dest: Path) -> None:
    """Delete the temporary copies of `dest` that killed downloads left (our naming only)."""
    random_part = "[a-z0-9_]" * 8  # as tempfile.mkstemp names them
    for tmp in dest.parent.glob(glob.escape(dest.name + _TEMP_TAG) + random_part):
        try:
            if _is_abandoned(tmp):
                tmp.unlink()
        except OSError:  # removed meanwhile, or in use (Windows): leave it
            pass


def _is_transient(error: BaseException) -> bool:
    """True for failures that another try may not meet: timeouts, dropped connections, 5xx, 429.

    A failed name lookup (offline, a typo in the host), a refused connection, a certificate
    error or a 4xx answer will fail the same way again, so they are not retried.
    """
    if isinstance(error, urllib.error.HTTPError):
        return error.code >= 500 or error.code == 429
    if isinstance(error, urllib.error.URLError):
        error = error.reason  # what went wrong below HTTP: DNS, TLS, connect, timeout
    # RemoteDisconnected (no answer at all) is a ConnectionResetError; IncompleteRead: body cut short
    return isinstance(error, (TimeoutError, ConnectionResetError, ConnectionAbortedError, http.client.IncompleteRead))


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
    3. Else, stream `url` with a tqdm bar, retrying transient failures (timeouts, dropped
       connections, HTTP 5xx and 429) up to `retries` times; others fail at once.
    Every copy is written to a temporary file beside `dest`, verified, then renamed into place,
    so a corrupt or truncated file is never left at `dest`; temporary copies that a killed
    download left beside `dest` are deleted first. Failures raise `DownloadError`.
    """
    dest = Path(dest)
    sha256 = sha256.lower()
    if dest.is_file() and sha256_of(dest) == sha256:
        return dest
    if dest.is_dir():
        raise DownloadError(f"dest={str(dest)!r} is a folder; give the path of the file to write")
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_temp_files(dest)

    mirror = os.environ.get(MIRROR_ENV_VAR)
    # Look for <mirror>/<folder>/<name> first (several models' "model.safetensors" side by side),
    # then for <mirror>/<name>.
    candidates = [Path(mirror) / dest.parent.name / dest.name, Path(mirror) / dest.name] if mirror else []
    src = next((c for c in candidates if c.is_file()), None)
    if src is not None:
        with _temp_file(dest) as tmp:  # no partial copy stays behind, whatever happens
            try:
                shutil.copyfile(src, tmp)
            except OSError as e:  # unreadable mirror file, disk full
                raise DownloadError(f"Could not copy {src} to {dest.parent}: {e}") from e
            _verify_and_move(tmp, dest, sha256, source=f"mirror {src}")
        return dest

    last_error: Exception | None = None
    for attempt in range(retries + 1):
        with _temp_file(dest) as tmp:  # removed on every failure, KeyboardInterrupt included
            try:
                _fetch_url(url, tmp, timeout)
            except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
                last_error = e  # HTTP errors, DNS, refused, reset, timeout, a body cut short
            else:
                _verify_and_move(tmp, dest, sha256, source=url)
                return dest
        if attempt == retries or not _is_transient(last_error):
            break
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
