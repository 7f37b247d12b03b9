"""Who may call the explorer, how much they may send, and what browsers may do with replies.

One ASGI layer in front of the app:

- **Token.** With a token, every `/api/...` call needs `Authorization: Bearer TOKEN` (401
  otherwise). Pages, static files and the OpenAPI schema also take a cookie, which a browser
  gets by opening any page once with `?token=TOKEN` (then redirected to the same page without
  it). The cookie (a digest of the token) is HttpOnly and SameSite=Strict, so other sites
  cannot ride on it; pages hand the token to their own script in a `<meta>` tag, which only
  token holders ever receive.
  `/healthz` stays open, for liveness probes.
- **Size.** Request bodies over `max_body_bytes` get 413 before anything parses them (bodies
  without a Content-Length are counted as they arrive).
- **Headers.** A Content-Security-Policy that allows only this server's own scripts and styles
  (no inline script at all), nosniff, no framing, no referrer.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "pivotal_sae_token"
OPEN_PATHS = ("/healthz",)
#: Under /api but fetched by browsers (the schema and its viewer), so the cookie also works.
API_PAGES = ("/api/openapi.json", "/api/docs")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
#: FastAPI's Swagger UI page loads its script and styles from a CDN and starts them inline.
DOCS_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: "
    "https://fastapi.tiangolo.com; connect-src 'self'; frame-ancestors 'none'"
)
UNAUTHORIZED_PAGE = (
    "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Token needed</title>"
    "</head><body style='font-family:system-ui,sans-serif;max-width:40em;margin:4em auto'>"
    "<h1>This explorer needs its access token</h1><p>Open this address once with "
    "<code>?token=YOUR_TOKEN</code> added (the token given to <code>pivotal-sae serve "
    "--token</code>); your browser then keeps it in a cookie.</p></body></html>"
)


#: Seconds a client may pause while sending a request body (a stalled one gets 408 and the
#: connection back).
READ_TIMEOUT_S = 30.0


def same_site_path(path: str) -> str:
    """`path` as a redirect target that stays on this site: one leading slash (`//host` and
    `/\\host` are other sites to a browser), control characters and spaces percent-encoded."""
    return "/" + quote(path.lstrip("/\\"), safe="/%:@!$&'()*+,;=-._~")


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return {k.lower(): v for k, v in scope.get("headers", [])}


def _json_response(status: int, detail: str, extra: list[tuple[bytes, bytes]] | None = None):
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), *(extra or [])]
    return status, headers, body


class Guard:
    """Token check, body-size limit and security headers around an ASGI app."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        max_body_bytes: int,
        read_timeout_s: float = READ_TIMEOUT_S,
    ) -> None:
        self.app = app
        self.token = token
        self.max_body_bytes = max_body_bytes
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # No page uses websockets: with a token they get the same check as the API.
        if (
            scope["type"] == "websocket"
            and self.token is not None
            and not self._matches(self._presented(scope)[0])
        ):
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = self._with_headers(scope, send)
        denied = self._check_token(scope)
        if denied is not None:
            await self._respond(send, *denied)
            return
        receive_or_reply = await self._limit_body(scope, receive)
        if isinstance(receive_or_reply, tuple):
            await self._respond(send, *receive_or_reply)
            return
        await self.app(scope, receive_or_reply, send)

    # ------------------------------------------------------------------ token
    def _presented(self, scope: Scope) -> tuple[str | None, str | None]:
        headers = _headers(scope)
        bearer = None
        auth = headers.get(b"authorization", b"").decode("latin-1")
        if auth[:7].lower() == "bearer ":
            bearer = auth[7:].strip()
        cookie = None
        if b"cookie" in headers:
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(headers[b"cookie"].decode("latin-1"))
            except Exception:  # a malformed cookie header is simply no cookie
                jar = SimpleCookie()
            if COOKIE in jar:
                cookie = jar[COOKIE].value
        return bearer, cookie

    def _matches(self, value: str | None, expected: str | None = None) -> bool:
        expected = expected if expected is not None else self.token
        assert expected is not None
        return value is not None and hmac.compare_digest(value.encode(), expected.encode())

    @property
    def _cookie_value(self) -> str:
        # A digest, not the token: cookie-safe whatever characters the token has.
        return hashlib.sha256(f"pivotal-sae:{self.token}".encode()).hexdigest()

    def _check_token(self, scope: Scope) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        if self.token is None:
            return None
        path = scope.get("path", "")
        if path in OPEN_PATHS:
            return None
        bearer, cookie = self._presented(scope)
        if self._matches(bearer):
            return None
        is_api = path.startswith("/api/") and path not in API_PAGES
        if not is_api and self._matches(cookie, self._cookie_value):
            return None
        if not is_api and scope.get("method") == "GET":
            query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), True)
            given = [v for k, v in query if k == "token"]
            if given and self._matches(given[-1]):
                # Store the token and drop it from the address bar (and from history).
                rest = urlencode([(k, v) for k, v in query if k != "token"])
                location = same_site_path(path) + (f"?{rest}" if rest else "")
                cookie_header = f"{COOKIE}={self._cookie_value}; HttpOnly; SameSite=Strict; Path=/"
                return 303, [(b"location", location.encode()), (b"set-cookie",
                             cookie_header.encode())], b""  # fmt: skip
        if is_api:
            return _json_response(
                401,
                "missing or wrong bearer token: send the header 'Authorization: Bearer TOKEN' "
                "with the token given to pivotal-sae serve --token",
                [(b"www-authenticate", b'Bearer realm="pivotal-sae"')],
            )
        return 401, [(b"content-type", b"text/html; charset=utf-8")], UNAUTHORIZED_PAGE.encode()

    # ------------------------------------------------------------------ size
    async def _limit_body(
        self, scope: Scope, receive: Receive
    ) -> Receive | tuple[int, list[tuple[bytes, bytes]], bytes]:
        limit = self.max_body_bytes
        too_large = _json_response(
            413, f"request body too large: this server accepts at most {limit:,} bytes"
        )
        length = _headers(scope).get(b"content-length")
        if length is not None:
            try:
                if int(length) > limit:
                    return too_large
            except ValueError:
                return _json_response(400, "malformed Content-Length header")
        if scope.get("method") in ("GET", "HEAD", "OPTIONS") and length is None:
            return receive
        # Read the whole (bounded) body now, so nothing downstream ever holds more than that.
        chunks, size, more = [], 0, True
        while more:
            try:
                message = await asyncio.wait_for(receive(), self.read_timeout_s)
            except TimeoutError:
                return _json_response(408, "the request body stopped arriving; send it whole")
            if message["type"] != "http.request":
                return receive  # the client went away; let the app see the disconnect
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return too_large
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay

    # ------------------------------------------------------------------ replies
    @staticmethod
    async def _respond(send: Send, status: int, headers: list, body: bytes) -> None:
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    def _with_headers(scope: Scope, send: Send) -> Send:
        path = scope.get("path", "")
        policy = DOCS_CSP if path == "/api/docs" else CSP

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", policy.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                ]
                if path.startswith("/api/"):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        return send_with_headers
