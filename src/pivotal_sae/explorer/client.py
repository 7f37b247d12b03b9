"""`pivotal-sae highlight`: one prompt, one latent, one self-contained HTML page.

The page is computed by a running `pivotal-sae serve` (`--server URL`, through
`POST /api/highlight`) or, without one, in this process. Either way the client, not the server,
writes the file, to the path the user gives here. The page inlines the explorer's stylesheet
(`pivotal_sae.render`), has no script and no external asset, and every piece of text in it is
HTML-escaped.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pivotal_sae.errors import UserError
from pivotal_sae.explorer.config import HighlightConfig
from pivotal_sae.explorer.schemas import HighlightResponse, TokenActivation, TopLatentsResponse
from pivotal_sae.runs import atomic_write_text

MAX_ALPHA = 0.85
T = TypeVar("T", HighlightResponse, TopLatentsResponse)


@dataclass(frozen=True)
class Piece:
    """A run of the prompt as drawn: a shaded token, or the plain text between tokens."""

    text: str
    token: TokenActivation | None = None
    alpha: float = 0.0


def pieces(h: HighlightResponse) -> list[Piece]:
    """The prompt as typed, cut into tokens (shaded) and the gaps between them."""
    peak = h.max_activation if h.max_activation > 0 else 1.0
    out, cursor = [], 0
    for token in h.tokens:
        alpha = max(0.0, min(1.0, token.activation / peak)) * MAX_ALPHA
        if token.special:
            out.append(Piece(token.token, token, alpha))
            continue
        if token.start < 0:  # no offsets: the text carries its own spacing, kept unshaded
            text = token.text.lstrip()
            if len(text) < len(token.text):
                out.append(Piece(token.text[: len(token.text) - len(text)]))
            out.append(Piece(text, token, alpha))
            continue
        if token.start > cursor:
            out.append(Piece(h.prompt[cursor : token.start]))
        out.append(Piece(token.text, token, alpha))
        cursor = token.end
    if 0 < cursor < len(h.prompt):
        out.append(Piece(h.prompt[cursor:]))
    return out


def render_standalone(h: HighlightResponse) -> str:
    from pivotal_sae.explorer.pages import environment
    from pivotal_sae.render import stylesheet

    page = environment().get_template("standalone.html")
    return page.render(h=h, pieces=pieces(h), css=stylesheet())


def _post(config: HighlightConfig, endpoint: str, body: dict[str, Any]) -> Any:
    """The JSON answer of the server at --server, or a one-line `UserError`."""
    import httpx

    assert config.server is not None
    url = config.server.rstrip("/") + endpoint
    headers = {"Authorization": f"Bearer {config.token}"} if config.token else {}
    if config.sae is not None:
        body = {**body, "sae": config.sae}
    try:
        reply = httpx.post(url, json=body, headers=headers, timeout=config.timeout)
    except httpx.HTTPError as exc:
        raise UserError(
            f"cannot reach the explorer at {config.server} ({exc}); start one with "
            "`pivotal-sae serve`, or drop --server to compute in this process"
        ) from None
    if reply.status_code != 200:
        try:
            answer = reply.json()
        except ValueError:
            answer = None
        detail = answer.get("detail") if isinstance(answer, dict) else None
        if not isinstance(detail, str):
            detail = reply.text.strip().splitlines()[0][:300] if reply.text.strip() else ""
        hint = " (give --token or set $PIVOTAL_SAE_TOKEN)" if reply.status_code == 401 else ""
        raise UserError(f"the server answered {reply.status_code}: {detail}{hint}")
    return reply.json()


def _validated(model: type[T], answer: Any, config: HighlightConfig) -> T:
    try:
        return model.model_validate(answer)
    except ValueError as exc:
        first = str(exc).splitlines()[0]
        raise UserError(
            f"{config.server} did not answer like a pivotal-sae explorer ({first})"
        ) from None


def highlight_via_server(config: HighlightConfig) -> HighlightResponse:
    body = {"prompt": config.prompt, "feature_idx": config.feature_idx}
    return _validated(HighlightResponse, _post(config, "/api/highlight", body), config)


def _top_via_server(config: HighlightConfig) -> TopLatentsResponse:
    body = {"prompt": config.prompt, "k": 1}
    return _validated(TopLatentsResponse, _post(config, "/api/top-latents", body), config)


def highlight_in_process(
    config: HighlightConfig,
) -> tuple[HighlightResponse, Callable[[], TopLatentsResponse]]:
    """The highlight, and how to ask the same explorer for each token's top latent."""
    from pivotal_sae.explorer.loading import build_explorer

    explorer, _ = build_explorer(config, explanations=config.explanations, max_prompt_chars=10**7)
    result = explorer.highlight(config.prompt, config.feature_idx, config.sae)
    return result, lambda: explorer.top_latents(config.prompt, 1, config.sae)


def firing_latents(top: TopLatentsResponse, n: int = 3) -> list[str]:
    """ "817 on 'strong'": the latents that fire most on the prompt's own tokens, strongest
    first, one per latent."""
    best: dict[int, tuple[float, str]] = {}
    for token in top.tokens:
        if token.special or not token.top:
            continue
        value = token.top[0]
        if value.activation > best.get(value.latent, (0.0, ""))[0]:
            best[value.latent] = (value.activation, token.text.strip() or token.token)
    ranked = sorted(best.items(), key=lambda item: -item[1][0])[:n]
    return [f"{latent} on {text!r}" for latent, (_, text) in ranked]


def run_highlight(config: HighlightConfig) -> Path:
    if config.server is not None:
        result = highlight_via_server(config)
        top_latents: Callable[[], TopLatentsResponse] = lambda: _top_via_server(config)  # noqa: E731
    else:
        result, top_latents = highlight_in_process(config)
    assert config.out is not None  # the config gives it a default
    if not result.tokens:  # checked before the file is written: no page is better than this
        raise UserError("the highlight came back with no tokens for this prompt")
    out = config.out.expanduser()
    atomic_write_text(out, render_standalone(result))
    if result.max_activation <= 0:
        firing = firing_latents(top_latents())
        others = f"; latents that do: {', '.join(firing)}" if firing else ""
        print(
            f"latent {result.feature_idx} of {result.sae} does not fire on this prompt (the "
            f"page says so){others}; wrote {out}",
            file=sys.stderr,
        )
        return out
    top = max(result.tokens, key=lambda t: t.activation)
    print(
        f"latent {result.feature_idx} of {result.sae}: max {result.max_activation:.4g} "
        f"(at {top.token!r}); wrote {out}",
        file=sys.stderr,
    )
    return out
