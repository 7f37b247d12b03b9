"""Issue 13 on the explorer: the highlight client's bad answers and options, http(s)-only
links, a redirect that stays on the site, tokens that can match, websockets behind the token,
a read timeout, Neuronpedia ids that stay in the cache, a loopback host's own Host header."""

from __future__ import annotations

import asyncio
import math

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocketDisconnect

from pivotal_sae.errors import UserError
from pivotal_sae.explorer.config import HighlightConfig, ServeConfig
from pivotal_sae.explorer.security import Guard

TOKEN = "correct-horse-battery"


def _app() -> Starlette:
    async def page(request):
        return PlainTextResponse("ok")

    async def socket(websocket):
        await websocket.accept()
        await websocket.send_text("open")
        await websocket.close()

    return Starlette(routes=[Route("/{path:path}", page), WebSocketRoute("/ws", socket)])


def _highlight(tmp_path, **changes) -> HighlightConfig:
    options = {"prompt": "The nation is strong.", "feature_idx": 1, "out": tmp_path / "hl.html",
               "server": "http://127.0.0.1:9"}  # fmt: skip
    return HighlightConfig(**{**options, **changes})


def _answer(tokens: list[dict] | None = None, url: str | None = None) -> dict:
    token = {"position": 0, "token_id": 5, "token": "The", "text": "The", "start": 0, "end": 3,
             "special": False, "activation": 1.0}  # fmt: skip
    return {"model": "m", "sae": "s", "hook_name": "h", "d_sae": 8, "feature_idx": 1,
            "prompt": "The", "tokens": [token] if tokens is None else tokens,
            "max_activation": 1.0, "neuronpedia_url": url}  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"timeout": -1.0}, "--timeout must be a positive number"),
        ({"timeout": math.nan}, "--timeout must be a positive number"),
        ({"token": "tökén-with-umlauts"}, "--token must be printable ASCII"),
        ({"prompt": "caf\udce9"}, "--prompt is not valid UTF-8"),
    ],
)
def test_highlight_options_that_cannot_work_are_refused(tmp_path, changes, needle):
    """Defect 11: --timeout -1/nan, a non-ASCII --token, a prompt that is not UTF-8."""
    with pytest.raises(UserError, match=needle):
        _highlight(tmp_path, **changes)


@pytest.mark.parametrize(
    ("status", "body", "needle"),
    [
        (500, [1, 2], "answered 500"),
        (502, "just a string", "answered 502"),
        (200, _answer(tokens=[]), "no tokens"),
        (200, {"tokens": "nonsense"}, "did not answer like a pivotal-sae explorer"),
    ],
)
def test_highlight_client_survives_odd_server_answers(tmp_path, monkeypatch, status, body, needle):
    """Defect 11: error bodies that are a list or a string; a 200 answer without tokens
    (refused before the page is written)."""
    from pivotal_sae.explorer.client import run_highlight

    monkeypatch.setattr(httpx, "post", lambda *a, **k: httpx.Response(status, json=body))
    config = _highlight(tmp_path)
    with pytest.raises(UserError, match=needle):
        run_highlight(config)
    assert not config.out.exists()


def test_only_http_links_are_written(tmp_path, monkeypatch):
    """Defect 12: a `javascript:` Neuronpedia URL from a server, a `url` in pairs.json."""
    from pivotal_sae.explorer.client import run_highlight
    from pivotal_sae.explorer.pages import environment, http_url

    for bad in ("javascript:alert(1)", " JavaScript:alert(1)", "data:text/html,x", "//x", 5):
        assert http_url(bad) == ""
    assert http_url("https://www.neuronpedia.org/a/b/1") == "https://www.neuronpedia.org/a/b/1"
    answer = _answer(url="javascript:alert(document.cookie)")
    monkeypatch.setattr(httpx, "post", lambda *a, **k: httpx.Response(200, json=answer))
    page = run_highlight(_highlight(tmp_path)).read_text()
    assert "javascript:" not in page and "Neuronpedia" not in page
    macros = environment().get_template("_macros.html").module
    assert "javascript:" not in str(macros.latent_title(3, "javascript:alert(1)", "sae"))
    assert 'href="https://x.org/1"' in str(macros.latent_title(3, "https://x.org/1", "sae"))


@pytest.mark.parametrize("path", ["//evil.example/", "/\\evil.example/", "/%5Cevil.example/",
                                  "/a%0d%0aSet-Cookie:%20x=1"])  # fmt: skip
def test_token_login_redirect_stays_on_this_site(path):
    """Defect 13: `//host` and `/\\host` are other sites; CR/LF never reach a header."""
    client = TestClient(Guard(_app(), token=TOKEN, max_body_bytes=1024))
    reply = client.get(f"{path}?token={TOKEN}", follow_redirects=False)
    assert reply.status_code == 303
    location = reply.headers["location"]
    assert location.startswith("/") and not location.startswith(("//", "/\\"))
    assert "\r" not in location and "\n" not in location and "\\" not in location
    # (an HTTP client folds `//host` into the authority; the raw paths, as a server sees them)
    from pivotal_sae.explorer.security import same_site_path

    for raw in ("//evil.example/", "/\\evil.example/", "///\\evil", "/a\r\nX: y"):
        target = same_site_path(raw)
        assert target.startswith("/") and not target.startswith(("//", "/\\"))
        assert "\r" not in target and "\n" not in target


@pytest.mark.parametrize("token", ["tökén-12345", " " * 12, "has spaces in it", "tab\tinside!"])
def test_tokens_that_can_never_match_are_refused_at_start_up(token):
    """Defect 14: a non-ASCII token, a token of spaces (even on 0.0.0.0)."""
    with pytest.raises(UserError, match="--token must be printable ASCII"):
        ServeConfig(host="0.0.0.0", token=token)


def test_websockets_need_the_token_too():
    """Defect 14: connections other than HTTP do not skip the token check."""
    client = TestClient(Guard(_app(), token=TOKEN, max_body_bytes=1024))
    with pytest.raises(WebSocketDisconnect), client.websocket_connect("/ws") as ws:
        ws.receive_text()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with client.websocket_connect("/ws", headers=headers) as ws:
        assert ws.receive_text() == "open"


def test_a_stalled_request_body_times_out():
    """Defect 18: a client that stops sending gets 408 instead of holding the connection."""
    guard = Guard(_app(), token=None, max_body_bytes=1024, read_timeout_s=0.05)
    messages = [{"type": "http.request", "body": b"{", "more_body": True}]

    async def receive():
        if messages:
            return messages.pop()
        await asyncio.sleep(3600)

    scope = {"type": "http", "method": "POST", "path": "/api/highlight", "headers": []}
    answer = asyncio.run(guard._limit_body(scope, receive))
    assert isinstance(answer, tuple) and answer[0] == 408


def test_a_loopback_host_answers_its_own_host_header():
    """Defect 18: `--host 127.0.0.2` accepts requests addressed to 127.0.0.2."""
    from pivotal_sae.explorer.app import loopback_hosts

    assert "127.0.0.2" in loopback_hosts("127.0.0.2")
    assert {"127.0.0.1", "localhost", "::1", "[::1]"} <= set(loopback_hosts("127.0.0.1"))


@pytest.mark.parametrize("bad", ["../..", "model/..", "../etc", "a/b/c", "a\\..\\b/x", "a/.hidden"])
def test_neuronpedia_ids_cannot_leave_the_cache_folder(tmp_path, bad):
    """Defect 15: ids become cache folders: plain names only."""
    from pivotal_sae.absorption.explanations import download_explanations, split_neuronpedia_id

    with pytest.raises(UserError, match="Neuronpedia id"):
        split_neuronpedia_id(bad)
    with pytest.raises(UserError):
        download_explanations(bad, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def _serve_in_thread(app, **config):
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error",
                                           timeout_keep_alive=5, **config))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    return server, thread, port


def _closed_within(port: int, sent: bytes, seconds: float) -> bool:
    """Connect, send `sent`, and say whether the server closed the connection in time."""
    import socket

    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(sent)
        client.settimeout(seconds)
        try:
            while data := client.recv(4096):
                if b"HTTP/1.1 200" in data:
                    return False
            return True
        except TimeoutError:
            return False


def test_a_client_stalling_in_its_headers_is_disconnected():
    """Defect 18 follow-up: a client silent after connecting, or stopping mid-headers, is
    disconnected after the header timeout (uvicorn alone keeps both open); a whole request is
    answered as before."""
    from pivotal_sae.explorer.app import header_timeout_protocol

    partial = b"GET /page HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
    server, thread, port = _serve_in_thread(_app(), http=header_timeout_protocol(0.3))
    try:
        assert _closed_within(port, partial, 3)
        assert _closed_within(port, b"", 3)
        whole = b"GET /page HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        assert not _closed_within(port, whole, 3)  # answered 200 before anything else
    finally:
        server.should_exit = True
        thread.join(10)
    plain, plain_thread, plain_port = _serve_in_thread(_app(), http="h11")
    try:
        assert not _closed_within(plain_port, partial, 1.0)  # the defect: held open
    finally:
        plain.should_exit = True
        plain_thread.join(10)
