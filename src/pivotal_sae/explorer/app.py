"""The FastAPI application and `pivotal-sae serve`.

`create_app` assembles the JSON API (`api.py`), the pages (`pages.py`), the static files and
`/healthz`, wrapped in the `Guard` layer (token, body size, security headers). `serve` checks
the command line, loads the run, model and SAEs once, and runs uvicorn.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from pivotal_sae import render
from pivotal_sae.errors import UserError
from pivotal_sae.explorer import api, pages
from pivotal_sae.explorer.browse import Browser, NotFound
from pivotal_sae.explorer.config import ServeConfig, is_loopback
from pivotal_sae.explorer.security import Guard

STATIC = Path(__file__).parent / "static"


def _validation_message(errors: list[dict[str, Any]]) -> str:
    """Pydantic's error list as one readable line: 'body.feature_idx: Input should be ...'."""
    parts = []
    for error in errors:
        where = ".".join(str(part) for part in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


def _error(request: Request, status: int, message: str, extra: dict | None = None) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": message, **(extra or {})}, status_code=status)
    return pages.error_page(request, status, message)


def create_app(
    browser: Browser,
    *,
    token: str | None = None,
    max_request_bytes: int = 65536,
    allowed_hosts: list[str] | None = None,
) -> Guard:
    """The explorer as an ASGI app (pass it to uvicorn or to FastAPI's TestClient)."""
    app = FastAPI(
        title="Pivotal SAE explorer",
        summary="Highlight prompts by SAE latent; browse absorption pairs and latents.",
        version="1",
        openapi_url="/api/openapi.json",
        docs_url=None,  # pages.py serves /api/docs itself: Swagger UI needs a CDN
        redoc_url=None,
    )
    app.state.browser = browser
    app.state.token = token
    app.include_router(api.router)
    app.include_router(pages.router)

    @app.get("/static/style.css", include_in_schema=False)
    def stylesheet() -> Response:
        """The stylesheet shared with report.html lives in `pivotal_sae.render`."""
        return Response(render.stylesheet(), media_type="text/css; charset=utf-8")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError) -> Response:
        return _error(request, 422, str(exc))

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> Response:
        return _error(request, 404, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = jsonable_encoder(exc.errors(), exclude={"input", "ctx", "url"})
        return _error(request, 422, _validation_message(errors), {"errors": errors})

    if allowed_hosts is not None:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        # A page elsewhere could resolve its own name to 127.0.0.1 (DNS rebinding) and read
        # a token-less local server; answering only to local names shuts that door.
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    return Guard(app, token=token, max_body_bytes=max_request_bytes)


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserError(f"port {port} on {host} is in use; pick another --port") from None
            raise UserError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
        except socket.gaierror as exc:
            raise UserError(f"--host {host} is not an address of this machine ({exc})") from None


def build_browser(config: ServeConfig) -> Browser:
    from pivotal_sae.explorer.loading import build_explorer
    from pivotal_sae.explorer.run_data import load_run

    run = load_run(config.run) if config.run is not None else None
    explorer, run_sae = build_explorer(
        config,
        run=run,
        explanations=config.explanations,
        max_prompt_chars=config.max_prompt_chars,
        max_prompt_tokens=config.max_prompt_tokens,
    )
    return Browser(explorer, run, run_sae, sample_contexts=config.dashboard_contexts)


def loopback_hosts(host: str) -> list[str]:
    """Host headers a loopback server answers: the usual local names and its own address
    (`--host 127.0.0.2` is reached as 127.0.0.2)."""
    own = host.strip("[]")
    return sorted({"127.0.0.1", "localhost", "[::1]", "::1", own, f"[{own}]"})


def prepare_server(config: ServeConfig) -> Any:
    """Everything `serve` does before listening: checks, loading, the app; a uvicorn Server."""
    import uvicorn

    _check_port_free(config.host, config.port)
    browser = build_browser(config)
    allowed = loopback_hosts(config.host) if is_loopback(config.host) else None
    app = create_app(
        browser,
        token=config.token,
        max_request_bytes=config.max_request_bytes,
        allowed_hosts=allowed,
    )
    shown_host = f"[{config.host}]" if ":" in config.host else config.host
    saes = ", ".join(browser.explorer.saes)
    print(
        f"pivotal-sae: serving {browser.explorer.model_name} with SAEs {saes} at "
        f"http://{shown_host}:{config.port}/ (API docs at /api/docs; Ctrl-C stops)",
        file=sys.stderr,
    )
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level="warning",
            access_log=False,
            timeout_keep_alive=5,  # idle connections go back; stalled bodies: Guard's 408
            http=header_timeout_protocol(HEADER_TIMEOUT_S),  # stalled headers: closed
        )
    )


#: Seconds a client has, from connecting or from the first byte of a request, to send the
#: request's headers whole.
HEADER_TIMEOUT_S = 10.0


def header_timeout_protocol(seconds: float) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol, closing a connection whose request headers do not arrive whole
    within `seconds`. uvicorn times out idle keep-alive connections (and Guard stalled bodies,
    with 408), but neither a client silent after connecting nor one stalling mid-headers."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):
        header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._watch_headers()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._watch_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_watching()
            super().connection_lost(exc)

        def _awaiting_headers(self) -> bool:
            # h11 leaves IDLE as soon as a request's headers are complete.
            return self.conn.their_state is h11.IDLE

        def _watch_headers(self) -> None:
            if not self._awaiting_headers():
                self._stop_watching()  # headers are in: the body is Guard's to time
            elif self.header_timer is None:
                self.header_timer = self.loop.call_later(seconds, self._headers_late)

        def _stop_watching(self) -> None:
            if self.header_timer is not None:
                self.header_timer.cancel()
                self.header_timer = None

        def _headers_late(self) -> None:
            self.header_timer = None
            if self._awaiting_headers() and not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutProtocol


def serve(config: ServeConfig) -> None:
    prepare_server(config).run()
