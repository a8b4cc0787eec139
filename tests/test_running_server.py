"""`tribes` commands find the Prefect server `make serve` announced in their Prefect home (a real
local HTTP server answering /health stands in for it), and ignore a stale announcement;
`make serve`'s own API calls ask again while the server answers busy."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from flows import serve
from flows.cli import use_running_server


@pytest.fixture
def api() -> Iterator[str]:
    """An HTTP server whose /api/health answers 200, as a Prefect server's does; a POST to
    /api/busy is answered 503 twice, then 200."""
    posts: list[str] = []

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200 if self.path == "/api/health" else 404)
            self.end_headers()
            self.wfile.write(b"true")

        def do_POST(self) -> None:  # noqa: N802
            posts.append(self.path)
            busy = self.path == "/api/busy" and posts.count(self.path) <= 2
            self.send_response(503 if busy else 200 if self.path == "/api/busy" else 404)
            self.end_headers()
            self.wfile.write(b'{"ok": true}')

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api"
    finally:
        server.shutdown()
        server.server_close()


def test_an_announced_live_server_is_used_and_a_stale_one_is_not(
    tmp_path: Path, api: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert serve.running_server(tmp_path) is None  # nothing announced
    serve.announce(tmp_path, api)
    assert serve.running_server(tmp_path) == api
    use_running_server(tmp_path)
    assert os.environ["PREFECT_API_URL"] == api

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:1/api")  # the user's own wins
    use_running_server(tmp_path)
    assert os.environ["PREFECT_API_URL"] == "http://127.0.0.1:1/api"

    monkeypatch.delenv("PREFECT_API_URL")
    serve.announce(tmp_path, "http://127.0.0.1:9/api")  # `make serve` was killed: nobody answers
    assert serve.running_server(tmp_path) is None
    use_running_server(tmp_path)
    assert "PREFECT_API_URL" not in os.environ  # Prefect starts its temporary server as before
    serve.announce(tmp_path, "file:///etc/passwd")
    assert serve.running_server(tmp_path) is None


def test_make_serves_api_calls_ask_again_while_the_server_is_busy(api, monkeypatch):
    import urllib.error

    monkeypatch.setattr(serve, "BUSY_WAITS", (0, 0, 0, 0))
    assert serve.api(api, "POST", "/busy", {}) == {"ok": True}  # after two 503s
    with pytest.raises(urllib.error.HTTPError, match="404"):  # other errors are raised
        serve.api(api, "POST", "/missing", {})
