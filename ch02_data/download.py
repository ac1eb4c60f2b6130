"""Downloading third-party files safely: mirror first, checksum always, atomic writes.

Data and weights are never committed to this repository. Each file is fetched from its public
URL and checked against a pinned sha256. Behind a firewall, or offline, point the environment
variable DATA_MIRROR at a folder that holds copies of the files (same file names): they are
copied from there, and still verified.

Some files are published packed (a zip, a gzip) whose bytes differ from copy to copy, while the
file inside does not: `download(..., unpack=...)` then pins the sha256 of the unpacked file.
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
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from tqdm import tqdm  # plain text bar: works in terminals and notebooks alike

from .checks import int_at_least

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
# A download that gets fewer than this many bytes per second over a whole `timeout` window has
# stalled, even if each read returns something: `timeout` bounds one read, this bounds progress.
_MIN_BYTES_PER_S = 1024

# unpack(packed, out): read the packed file `packed`, write the file it holds to `out`.
Unpack = Callable[[Path, Path], None]


class DownloadError(RuntimeError):
    """A file could not be obtained with the expected sha256."""


class _WrongFile(DownloadError):
    """A file came, but not the one expected (another hash, not a readable archive).

    Trying the same URL again would give the same file, but another URL may serve the right one.
    """


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks so large files do not fill memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_sha256(sha256: object) -> str:
    """`sha256` as 64 lower-case hex digits; spaces around it (from a copy and paste) are dropped.
    Anything else is refused, as it could never match and every copy would be rejected."""
    digest = sha256.strip().lower() if isinstance(sha256, str) else None
    if digest is None or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"sha256={sha256!r}; give the file's SHA-256 as 64 hexadecimal digits")
    return digest


def _mirror_help(names: Sequence[str]) -> str:
    copy = " or of ".join(f"'{name}'" for name in names)
    return (
        f"To work offline, put a copy of {copy} in a folder and set {MIRROR_ENV_VAR} to it, "
        f"e.g. `export {MIRROR_ENV_VAR}=/path/to/mirror` (the README's 'Downloads' section)."
    )


def _verify_and_move(
    tmp: Path, dest: Path, sha256: str, source: str, names: Sequence[str]
) -> None:
    """Move `tmp` onto `dest` only if its hash matches; otherwise delete it and raise."""
    actual = sha256_of(tmp)
    if actual != sha256:
        tmp.unlink(missing_ok=True)
        raise _WrongFile(
            f"sha256 mismatch for {dest.name} from {source}\n"
            f"  expected: {sha256}\n  actual:   {actual}\n"
            "The file was discarded; nothing was written. "
            "A proxy or captive portal may have replaced it. " + _mirror_help(names)
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


def _fetch_url(url: str, tmp: Path, timeout: float, desc: str) -> None:
    """Stream `url` into `tmp` with a progress bar labelled `desc`.

    Each read waits at most `timeout` seconds, and every window of `timeout` seconds must bring
    at least `_MIN_BYTES_PER_S` bytes per second: a server that drips a byte at a time would
    otherwise hold the download forever. Both raise TimeoutError, which is retried.
    """
    req = urllib.request.Request(url, headers={"User-Agent": "gpt-from-scratch-companion"})
    with urllib.request.urlopen(req, timeout=timeout) as resp, open(tmp, "wb") as out:
        total = int(resp.headers.get("Content-Length") or 0) or None
        window_start, window_bytes = time.monotonic(), 0
        with tqdm(total=total, unit="B", unit_scale=True, desc=desc) as bar:
            # read1 returns what has arrived (read(n) would wait for all n bytes)
            for chunk in iter(lambda: resp.read1(_CHUNK), b""):
                out.write(chunk)
                bar.update(len(chunk))
                window_bytes += len(chunk)
                elapsed = time.monotonic() - window_start
                if elapsed >= timeout:
                    if window_bytes < _MIN_BYTES_PER_S * elapsed:
                        raise TimeoutError(f"stalled: {window_bytes} bytes in {elapsed:.0f} s, under "
                                           f"{_MIN_BYTES_PER_S} bytes/s")
                    window_start, window_bytes = time.monotonic(), 0


def _url_file_name(url: str) -> str:
    """The file name at the end of a URL's path, percent-decoded ('a%2Bb.zip' -> 'a+b.zip')."""
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])


def _find_in_mirror(mirror: str | None, dest: Path, name: str) -> Path | None:
    """<mirror>/<dest's folder name>/<name>, else <mirror>/<name>, else None."""
    if not mirror:
        return None
    # The folder first: one mirror can hold several models' "model.safetensors" side by side.
    candidates = (Path(mirror) / dest.parent.name / name, Path(mirror) / name)
    return next((c for c in candidates if c.is_file()), None)


def _install(copy: Path, dest: Path, sha256: str, source: str, unpack: Unpack | None,
             names: Sequence[str]) -> None:
    """Unpack `copy` if asked to, then verify the result and rename it onto `dest`."""
    if unpack is None:
        _verify_and_move(copy, dest, sha256, source, names)
        return
    with _temp_file(dest) as out:  # a second temporary file, removed on every failure too
        try:
            unpack(copy, out)
        except (DownloadError, OSError) as e:  # e.g. an HTML error page instead of the archive
            raise _WrongFile(
                f"Could not unpack the file from {source} into {dest.name}: {e}\n"
                + _mirror_help(names)
            ) from None
        _verify_and_move(out, dest, sha256, source, names)


def _try_url(url: str, dest: Path, sha256: str, retries: int, timeout: float,
             unpack: Unpack | None, names: Sequence[str]) -> Exception | None:
    """Fetch `url` and install it at `dest`; None on success, else the error of the last try.

    Only transient failures are tried again, up to `retries` times, after 1, 2, 4, 8... s.
    """
    for attempt in range(retries + 1):
        with _temp_file(dest) as tmp:  # removed on every failure, KeyboardInterrupt included
            try:
                _fetch_url(url, tmp, timeout, desc=names[-1])  # the packed file's name, if any
            except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
                error = e  # HTTP errors, DNS, refused, reset, timeout, a body cut short
            else:
                try:
                    _install(tmp, dest, sha256, url, unpack, names)
                    return None
                except _WrongFile as e:  # not transient: the same URL serves the same file
                    error = e
        if attempt == retries or not _is_transient(error):
            return error
        time.sleep(min(2**attempt, 8))
    return error  # not reached: the last try returns (download checks retries >= 0)


def _reason(error: Exception) -> str:
    """One line saying why a URL gave no verified file."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, _WrongFile):
        return str(error).splitlines()[0]
    return str(getattr(error, "reason", None) or error)


def download(
    url: str | Sequence[str],
    dest: str | os.PathLike,
    sha256: str,
    *,
    retries: int = 3,
    timeout: float = 30.0,
    unpack: Unpack | None = None,
    packed_name: str | None = None,
) -> Path:
    """Make sure `dest` holds the file at `url` with the given sha256, and return its path.

    1. If `dest` exists and its hash matches, return at once (no work on a second call).
    2. Else, if DATA_MIRROR names a folder holding `<dest's folder name>/<dest.name>` or
       `<dest.name>`, copy it from there; with `unpack`, else unpack its `packed_name` copy.
    3. Else, stream `url` with a tqdm bar, retrying transient failures (timeouts, dropped
       connections, HTTP 5xx and 429) up to `retries` times; others fail at once. `url` may also
       be a list of URLs serving the same file: each is tried in turn until one gives it.
    Every copy is written to a temporary file beside `dest`, verified, then renamed into place,
    so a corrupt or truncated file is never left at `dest`; temporary copies that a killed
    download left beside `dest` are deleted first. Failures raise `DownloadError`.

    unpack:      for a file published packed, e.g. inside a zip: `unpack(packed, out)` reads the
                 fetched file and writes the file it holds to `out`; `sha256` is then that of the
                 unpacked file, and the packed one is not kept. It raises DownloadError (or
                 OSError) when `packed` is not what it expects.
    packed_name: with `unpack`, the packed file's name in DATA_MIRROR, looked for (and unpacked)
                 when the mirror holds no `dest.name`; default: the file name ending the first URL.
    """
    urls = [url] if isinstance(url, str) else list(url)
    if not urls or not all(isinstance(u, str) for u in urls):
        raise ValueError(f"url={url!r}; give a URL, or a list of URLs serving the same file")
    int_at_least("retries", retries, 0, "0: one try per URL")
    if unpack is not None and not callable(unpack):
        raise ValueError(f"unpack={unpack!r}; give a function unpack(packed, out), or None")
    if packed_name is not None and unpack is None:
        raise ValueError(f"packed_name={packed_name!r} without unpack; give both, or neither")
    dest = Path(dest)
    sha256 = _check_sha256(sha256)
    if dest.is_file() and sha256_of(dest) == sha256:
        return dest
    if dest.is_dir():
        raise DownloadError(f"dest={str(dest)!r} is a folder; give the path of the file to write")
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_temp_files(dest)

    # The names a mirror may hold, in the order looked for: the file itself, then its packed form.
    packed_name = packed_name or (_url_file_name(urls[0]) if unpack is not None else "")
    names = (dest.name,) if packed_name in ("", dest.name) else (dest.name, packed_name)
    mirror = os.environ.get(MIRROR_ENV_VAR)
    src = _find_in_mirror(mirror, dest, dest.name)
    if src is not None:
        with _temp_file(dest) as tmp:  # no partial copy stays behind, whatever happens
            try:
                shutil.copyfile(src, tmp)
            except OSError as e:  # unreadable mirror file, disk full
                raise DownloadError(f"Could not copy {src} to {dest.parent}: {e}") from e
            _verify_and_move(tmp, dest, sha256, f"mirror {src}", names)
        return dest
    packed = _find_in_mirror(mirror, dest, names[1]) if len(names) == 2 else None
    if packed is not None:
        _install(packed, dest, sha256, f"mirror {packed}", unpack, names)  # read in place
        return dest

    failures = []  # (url, error) for each URL that gave no verified file
    for u in urls:
        error = _try_url(u, dest, sha256, retries, timeout, unpack, names)
        if error is None:
            return dest
        failures.append((u, error))
    if len(failures) == 1 and isinstance(failures[0][1], _WrongFile):
        raise failures[0][1]  # its own message says what came and what was expected
    tried = "".join(f"Could not download {u}\n  reason: {_reason(e)}\n" for u, e in failures)
    missing = " nor ".join(f"'{name}'" for name in names)
    checked = f"  {MIRROR_ENV_VAR}={mirror} holds no {missing}.\n" if mirror else ""
    raise DownloadError(
        tried + f"  expected sha256: {sha256}\n" + checked + _mirror_help(names)
    ) from None
