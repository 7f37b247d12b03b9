"""`pivotal-sae highlight`: one prompt, one latent, one self-contained HTML page.

The page is computed by a running `pivotal-sae serve` (`--server URL`, through
`POST /api/highlight`) or, without one, in this process. Either way the client, not the server,
writes the file, to the path the user gives here. The page has inline CSS, no script and no
external asset, and every piece of text in it is HTML-escaped.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pivotal_sae.errors import UserError
from pivotal_sae.explorer.config import HighlightConfig
from pivotal_sae.explorer.schemas import HighlightResponse, TokenActivation
from pivotal_sae.runs import atomic_write_text

MAX_ALPHA = 0.85


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

    return environment().get_template("standalone.html").render(h=h, pieces=pieces(h))


def highlight_via_server(config: HighlightConfig) -> HighlightResponse:
    import httpx

    assert config.server is not None
    url = config.server.rstrip("/") + "/api/highlight"
    headers = {"Authorization": f"Bearer {config.token}"} if config.token else {}
    body: dict[str, Any] = {"prompt": config.prompt, "feature_idx": config.feature_idx}
    if config.sae is not None:
        body["sae"] = config.sae
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
    try:
        result = HighlightResponse.model_validate(reply.json())
    except ValueError as exc:
        first = str(exc).splitlines()[0]
        raise UserError(
            f"{config.server} did not answer like a pivotal-sae explorer ({first})"
        ) from None
    return result


def highlight_in_process(config: HighlightConfig) -> HighlightResponse:
    from pivotal_sae.explorer.loading import build_explorer

    explorer, _ = build_explorer(config, explanations=config.explanations, max_prompt_chars=10**7)
    return explorer.highlight(config.prompt, config.feature_idx, config.sae)


def run_highlight(config: HighlightConfig) -> Path:
    if config.server is not None:
        result = highlight_via_server(config)
    else:
        result = highlight_in_process(config)
    if not result.tokens:  # checked before the file is written: no page is better than this
        raise UserError("the highlight came back with no tokens for this prompt")
    out = config.out.expanduser()
    atomic_write_text(out, render_standalone(result))
    top = max(result.tokens, key=lambda t: t.activation)
    print(
        f"latent {result.feature_idx} of {result.sae}: max {result.max_activation:.4g} "
        f"(at {top.token!r}); wrote {out}",
        file=sys.stderr,
    )
    return out
