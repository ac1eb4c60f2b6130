"""Downloads: mirror first, checksum always, nothing partial left behind, clear errors offline."""

import functools
import gzip
import hashlib
import http.server
import shutil
import threading
import time
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


# ---------------------------------------------------------------- packed files: unpack=, several URLs


def gunzip(packed, out):
    """An unpack step: the file inside a gzip."""
    with gzip.open(packed, "rb") as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)


def never(packed, out):
    raise AssertionError("unpack was called")


def served(folder, name, content):
    """A file:// URL serving `content`: a download with no network."""
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(content)
    return (folder / name).as_uri()


def test_unpack_pins_the_unpacked_file_whatever_the_packed_bytes(no_mirror, tmp_path):
    fast, small = gzip.compress(CONTENT, 1, mtime=1), gzip.compress(CONTENT, 9, mtime=2)
    assert fast != small  # two copies of one archive, byte for byte different
    for i, packed in enumerate([fast, small]):
        dest = tmp_path / f"data{i}" / "x.txt"
        url = served(tmp_path / "www", f"x{i}.txt.gz", packed)
        assert download(url, dest, SHA, unpack=gunzip) == dest
        assert dest.read_bytes() == CONTENT
        assert [p.name for p in dest.parent.iterdir()] == ["x.txt"]  # the archive is not kept


def test_mirror_gives_the_file_or_else_its_packed_copy(mirror, tmp_path):
    # The file itself is preferred, and copied as it is.
    dest = tmp_path / "a" / "x.txt"
    download(UNREACHABLE, dest, SHA, unpack=never, packed_name="x.txt.gz")
    assert dest.read_bytes() == CONTENT
    # Without it, the packed copy is unpacked, named explicitly or as the URL's file ends.
    (mirror / "x.txt").unlink()
    (mirror / "x+1.gz").write_bytes(gzip.compress(CONTENT))
    for i, kwargs in enumerate([dict(packed_name="x+1.gz"), {}]):
        dest = tmp_path / f"b{i}" / "x.txt"
        download("http://127.0.0.1:9/dl/x%2B1.gz", dest, SHA, retries=0, unpack=gunzip, **kwargs)
        assert dest.read_bytes() == CONTENT and leftovers(dest.parent) == []
        assert (mirror / "x+1.gz").is_file()  # read in place, never moved


def test_unreadable_or_wrong_packed_file_is_refused(no_mirror, tmp_path, monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda s: pytest.fail("a wrong file was tried again"))
    dest = tmp_path / "data" / "x.txt"
    html = served(tmp_path / "www", "x.txt.gz", b"<html>Service unavailable</html>")
    with pytest.raises(DownloadError, match=r"^Could not unpack the file from .*x.txt.gz into x.txt: ") as err:
        download(html, dest, SHA, unpack=gunzip)
    assert "'x.txt' or of 'x.txt.gz'" in str(err.value)  # what to put in DATA_MIRROR
    wrong = served(tmp_path / "www", "y.gz", gzip.compress(b"another file"))
    with pytest.raises(DownloadError, match="sha256 mismatch for x.txt from file:"):
        download(wrong, dest, SHA, unpack=gunzip)
    assert not dest.exists() and leftovers(dest.parent) == []


def test_mirror_packed_copy_that_is_wrong_is_refused(mirror, tmp_path):
    (mirror / "x.txt").unlink()
    (mirror / "x.txt.gz").write_bytes(b"not a gzip")
    dest = tmp_path / "data" / "x.txt"
    with pytest.raises(DownloadError, match=r"Could not unpack the file from mirror .*x.txt.gz"):
        download(UNREACHABLE + ".gz", dest, SHA, retries=0, unpack=gunzip)
    assert not dest.exists() and leftovers(dest.parent) == []


def test_each_url_is_tried_in_turn(no_mirror, tmp_path, monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda s: pytest.fail("a failure that cannot heal was retried"))
    www = tmp_path / "www"
    missing = (www / "missing.gz").as_uri()
    html = served(www, "page.gz", b"<html>login</html>")
    good = served(www, "x.txt.gz", gzip.compress(CONTENT))
    dest = tmp_path / "data" / "x.txt"
    assert download([missing, html, good], dest, SHA, unpack=gunzip).read_bytes() == CONTENT
    dest.unlink()
    with pytest.raises(DownloadError) as err:
        download((missing, html), dest, SHA, unpack=gunzip)
    message = str(err.value)
    assert f"Could not download {missing}\n  reason: " in message
    assert f"Could not download {html}\n  reason: Could not unpack" in message
    assert SHA in message and "DATA_MIRROR" in message
    assert not dest.exists() and leftovers(dest.parent) == []


def test_packed_name_like_the_file_is_named_once(mirror, tmp_path):
    # The URL ends in "x.txt" too: the mirror's x.txt is the file itself, listed once in messages.
    (mirror / "x.txt").unlink()
    with pytest.raises(DownloadError, match=r"holds no 'x.txt'\.\nTo work offline, put a copy of 'x.txt' in"):
        download(UNREACHABLE, tmp_path / "x.txt", SHA, retries=0, unpack=never)


def test_several_urls_without_unpack(no_mirror, server, tmp_path):
    dest = tmp_path / "x.txt"
    assert download([f"{server}/missing.txt", f"{server}/x.txt"], dest, SHA, retries=0) == dest
    assert dest.read_bytes() == CONTENT


def test_interrupted_unpack_leaves_nothing_behind(no_mirror, tmp_path):
    def interrupted(packed, out):
        out.write_bytes(b"half")
        raise KeyboardInterrupt

    dest = tmp_path / "data" / "x.txt"
    with pytest.raises(KeyboardInterrupt):
        download(served(tmp_path / "www", "x.txt.gz", b"packed"), dest, SHA, unpack=interrupted)
    assert list(dest.parent.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(url=[]), r"^url=\[\]; give a URL, or a list of URLs"),
        (dict(url=[UNREACHABLE, None]), r"^url=\['http.*', None\]; give a URL"),
        (dict(unpack="gzip"), r"^unpack='gzip'; give a function unpack\(packed, out\), or None$"),
        (dict(packed_name="x.txt.gz"), r"^packed_name='x.txt.gz' without unpack; give both"),
        (dict(retries=-1), r"^retries=-1; use an integer >= 0"),
        (dict(retries=1.5), r"^retries=1.5; use an integer >= 0"),
    ],
)
def test_bad_arguments_are_refused_in_one_sentence(mirror, tmp_path, kwargs, message):
    args = dict(url=UNREACHABLE, dest=tmp_path / "x.txt", sha256=SHA) | kwargs
    with pytest.raises(ValueError, match=message):
        download(**args)
    assert not (tmp_path / "x.txt").exists()


def test_a_server_that_drips_its_answer_is_given_up_on(no_mirror, tmp_path):
    # One byte every 0.2 s: each read returns within the timeout, so only a progress rule stops it.
    stop = threading.Event()

    class Drip(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "10000")
            self.end_headers()
            for _ in range(10000):
                if stop.is_set():
                    return
                try:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.2)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    t0 = time.monotonic()
    try:
        with pytest.raises(DownloadError, match="stalled"):
            download(f"http://127.0.0.1:{httpd.server_address[1]}/x.txt", tmp_path / "x.txt", SHA,
                     retries=0, timeout=1.0)
    finally:
        stop.set()
        httpd.shutdown()
        httpd.server_close()
    assert time.monotonic() - t0 < 10
    assert leftovers(tmp_path) == []
