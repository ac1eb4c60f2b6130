"""Downloads: mirror first, checksum always, nothing partial left behind, clear errors offline."""

import functools
import hashlib
import http.server
import shutil
import threading
import urllib.request

import pytest

from ch02_data import SOURCES, DownloadError, download, fetch, sha256_of

CONTENT = b"The Verdict, a tiny stand-in.\n"
SHA = hashlib.sha256(CONTENT).hexdigest()
UNREACHABLE = "http://127.0.0.1:9/x.txt"  # the discard port: connection refused, no network used


def leftovers(folder):
    """Temporary files a download may have left beside its destination."""
    return sorted(p.name for p in folder.glob("*.part*"))


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / "x.txt").write_bytes(CONTENT)
    monkeypatch.setenv("DATA_MIRROR", str(folder))
    return folder


@pytest.fixture
def no_mirror(monkeypatch):
    monkeypatch.delenv("DATA_MIRROR", raising=False)


@pytest.fixture
def server(tmp_path):
    """A local HTTP server over a folder holding x.txt; yields its base URL."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "x.txt").write_bytes(CONTENT)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=root))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_sha256_of(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(CONTENT)
    assert sha256_of(p) == SHA


def test_mirror_hit_copies_and_verifies(mirror, tmp_path):
    dest = tmp_path / "data" / "x.txt"
    assert download(UNREACHABLE, dest, SHA, retries=0) == dest  # the URL is never tried
    assert dest.read_bytes() == CONTENT
    assert leftovers(dest.parent) == []


def test_mirror_subfolder_is_preferred(mirror, tmp_path):
    # One mirror can hold several files of the same name, e.g. <mirror>/gpt2/model.safetensors.
    other = b"another model"
    (mirror / "m1").mkdir()
    (mirror / "m1" / "x.txt").write_bytes(other)
    dest = tmp_path / "data" / "m1" / "x.txt"
    download(UNREACHABLE, dest, hashlib.sha256(other).hexdigest(), retries=0)
    assert dest.read_bytes() == other
    dest2 = tmp_path / "data" / "m2" / "x.txt"  # no m2/ in the mirror: the top-level file is used
    download(UNREACHABLE, dest2, SHA, retries=0)
    assert dest2.read_bytes() == CONTENT


def test_hash_mismatch_is_rejected(mirror, tmp_path):
    (mirror / "x.txt").write_bytes(b"a captive portal's login page")
    dest = tmp_path / "data" / "x.txt"
    with pytest.raises(DownloadError, match="sha256 mismatch") as err:
        download(UNREACHABLE, dest, SHA, retries=0)
    assert SHA in str(err.value)
    assert not dest.exists()
    assert leftovers(dest.parent) == []


def test_corrupt_existing_file_is_replaced(mirror, tmp_path):
    dest = tmp_path / "x.txt"
    dest.write_bytes(b"truncated")
    download(UNREACHABLE, dest, SHA.upper(), retries=0)  # the hash's case does not matter
    assert dest.read_bytes() == CONTENT


def test_offline_without_mirror_explains_what_to_do(no_mirror, tmp_path):
    dest = tmp_path / "x.txt"
    with pytest.raises(DownloadError) as err:
        download(UNREACHABLE, dest, SHA, retries=0, timeout=5)
    message = str(err.value)
    assert UNREACHABLE in message and SHA in message and "DATA_MIRROR" in message
    assert not dest.exists()
    assert leftovers(tmp_path) == []


def test_mirror_without_the_file_says_so(mirror, tmp_path):
    with pytest.raises(DownloadError, match="holds no 'y.txt'"):
        download(UNREACHABLE, tmp_path / "y.txt", SHA, retries=0, timeout=5)


def test_second_call_does_no_work(mirror, tmp_path, monkeypatch):
    dest = tmp_path / "x.txt"
    download(UNREACHABLE, dest, SHA)

    def fail(*args, **kwargs):
        raise AssertionError("the file was fetched a second time")

    monkeypatch.setattr(shutil, "copyfile", fail)
    monkeypatch.setattr(urllib.request, "urlopen", fail)
    assert download(UNREACHABLE, dest, SHA) == dest


def test_http_download(no_mirror, server, tmp_path):
    dest = tmp_path / "data" / "x.txt"
    download(f"{server}/x.txt", dest, SHA, retries=0)
    assert dest.read_bytes() == CONTENT
    assert leftovers(dest.parent) == []


def test_http_wrong_content_and_404(no_mirror, server, tmp_path):
    dest = tmp_path / "x.txt"
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        download(f"{server}/x.txt", dest, "0" * 64, retries=0)
    with pytest.raises(DownloadError, match="404"):
        download(f"{server}/missing.txt", dest, SHA, retries=3)  # a 404 is not retried: no sleeping
    assert not dest.exists()
    assert leftovers(tmp_path) == []


def test_fetch_uses_data_dir_and_mirror(mirror, tmp_path, monkeypatch):
    monkeypatch.setitem(SOURCES, "x.txt", (UNREACHABLE, SHA))
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "store"))
    assert fetch("x.txt") == tmp_path / "store" / "x.txt"
    assert fetch("x.txt").read_bytes() == CONTENT
    with pytest.raises(KeyError, match="the-verdict.txt"):
        fetch("no-such-file.txt")


def test_sources_pin_sha256():
    for name, (url, sha) in SOURCES.items():
        assert url.startswith("https://"), name
        assert len(sha) == 64 and int(sha, 16) >= 0, name
