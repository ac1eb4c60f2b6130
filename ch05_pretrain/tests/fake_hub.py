"""A Hugging Face Hub stand-in on 127.0.0.1 for the tests: it answers `resolve` URLs as the hub
does (HEAD with X-Repo-Commit, X-Linked-Etag = the LFS sha256 and X-Linked-Size; GET with the
bytes), from files registered by the test. Nothing leaves this machine."""

from __future__ import annotations

import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "c0ffee" + "0" * 34  # what the hub says "main" resolves to


class FakeHub:
    """`serve(repo_id, revision, filename, path, declared_sha256)` registers a file; `url` is the
    HF_ENDPOINT to use; `requests` counts the GETs of file bytes."""

    def __init__(self):
        self.files: dict[tuple[str, str, str], tuple[Path, str]] = {}
        self.gets = 0
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _lookup(self):
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return None
                repo, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
                return hub.files.get((repo, revision, filename)), revision

            def _headers(self, found, revision):
                path, sha = found
                size = path.stat().st_size
                commit = revision if len(revision) == 40 else COMMIT
                self.send_response(200)
                self.send_header("X-Repo-Commit", commit)
                self.send_header("ETag", f'"{sha}"')
                self.send_header("X-Linked-Etag", f'"{sha}"')
                self.send_header("X-Linked-Size", str(size))
                self.send_header("Content-Length", str(size))
                self.end_headers()

            def do_HEAD(self):
                found = self._lookup()
                if found is None or found[0] is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self._headers(*found)

            def do_GET(self):
                found = self._lookup()
                if found is None or found[0] is None:
                    return self.do_HEAD()
                hub.gets += 1
                self._headers(*found)
                with open(found[0][0], "rb") as f:
                    try:
                        shutil.copyfileobj(f, self.wfile, 2**22)
                    except (BrokenPipeError, ConnectionResetError):
                        pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                       daemon=True)

    def serve(self, repo_id: str, revision: str, filename: str, path: Path, sha256: str) -> None:
        self.files[(repo_id, revision, filename)] = (Path(path), sha256)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
