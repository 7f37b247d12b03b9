"""The HTML pages: Highlight (/), Pairs (/pairs), Latent (/latent/SAE/INDEX) and the API
reference (/api/docs).

Templates are Jinja2 with autoescaping on for every template, so prompts, tokens and
explanations always reach the browser as text; the pair cards, token shading and the stylesheet
are `pivotal_sae.render`'s, shared with `report.html`. Pages carry no inline script (the CSP forbids
it); the Highlight page's behaviour lives in static/app.js and reads the API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from pivotal_sae.errors import UserError
from pivotal_sae.explorer.browse import PAIR_KINDS, Browser, NotFound
from pivotal_sae.render import http_url as http_url
from pivotal_sae.render import make_environment

CANDIDATES = "candidates"
"""The Pairs page's tab of the partial method's pairs."""

TEMPLATES = Path(__file__).parent / "templates"
PAIRS_PER_PAGE = 20
EXAMPLES_PER_PAIR_LATENT = 3

router = APIRouter(include_in_schema=False)


def highlight_url(prompt: str, sae: str, feature: int) -> str:
    return "/?" + urlencode({"prompt": prompt, "sae": sae, "feature": feature})


def environment() -> Any:
    """The explorer's page templates over the shared ones (`pivotal_sae.render`)."""
    env = make_environment(TEMPLATES)
    env.globals.update(
        highlight_url=highlight_url,
        pairs_per_page=PAIRS_PER_PAGE,
        short=lambda name: Path(name).name or name,
    )
    return env


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    browser: Browser = request.app.state.browser
    page = (
        environment()
        .get_template(template)
        .render(
            explorer=browser.explorer,
            run=browser.run_info(),
            api_token=request.app.state.token,
            path=request.url.path,
            **context,
        )
    )
    return HTMLResponse(page, status_code=status)


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return render(request, "error.html", status=status, status_code=status, message=message)


@router.get("/", response_class=HTMLResponse)
def highlight_page(
    request: Request,
    prompt: Annotated[str, Query(max_length=20000)] = "",
    sae: str | None = None,
    feature: Annotated[int | None, Query(ge=0)] = None,
    mode: Annotated[str, Query(pattern="^(latent|top)$")] = "latent",
) -> HTMLResponse:
    explorer = request.app.state.browser.explorer
    chosen = explorer.sae(sae if sae in explorer.saes else None)
    return render(
        request,
        "highlight.html",
        prompt=prompt,
        sae=chosen.name,
        feature=feature,
        mode=mode,
    )


@router.get("/pairs", response_class=HTMLResponse)
def pairs_page(
    request: Request,
    kind: Annotated[
        str | None, Query(pattern="^(" + "|".join((CANDIDATES, *PAIR_KINDS)) + ")$")
    ] = None,
    page: Annotated[int, Query(ge=1)] = 1,
) -> HTMLResponse:
    browser: Browser = request.app.state.browser
    if kind is None:  # the graded method's candidates first, where the run has them
        kind = CANDIDATES if browser.run is not None and browser.run.candidates else "effect"
    if browser.run is None:
        return render(request, "pairs.html", listing=None, kind=kind, page=1, pages=1)
    if kind == CANDIDATES:
        return candidates_page(request, browser, page)
    listing = browser.pairs(kind, (page - 1) * PAIRS_PER_PAGE, PAIRS_PER_PAGE)
    pages = max(1, -(-listing.total // PAIRS_PER_PAGE))
    if page > pages:
        raise NotFound(f"there is no page {page}; the {kind} pairs fill {pages}")
    details = {}
    for pair in listing.pairs:
        for side in (pair.a, pair.b):
            details[side.id] = browser.latent(listing.sae, side.id, EXAMPLES_PER_PAIR_LATENT)
    return render(
        request, "pairs.html", listing=listing, kind=kind, page=page, pages=pages, details=details
    )


def candidates_page(request: Request, browser: Browser, page: int) -> HTMLResponse:
    """The partial method's pairs (partial_pairs.json) as cards, a page at a time."""
    run = browser.run
    assert run is not None and browser.run_sae is not None
    pages = max(1, -(-len(run.candidates) // PAIRS_PER_PAGE))
    if page > pages:
        raise NotFound(f"there is no page {page}; the candidates fill {pages}")
    first = (page - 1) * PAIRS_PER_PAGE
    shown = run.candidates[first : first + PAIRS_PER_PAGE]
    details = {}
    for c in shown:
        for index in (c.parent, c.absorber):
            details[index] = browser.latent(browser.run_sae, index, EXAMPLES_PER_PAIR_LATENT)
    return render(
        request, "pairs.html", listing=None, kind=CANDIDATES, page=page, pages=pages,
        candidates=shown, first_rank=first + 1, details=details,
        urls={i: d.neuronpedia_url for i, d in details.items()},
        explanations={i: d.explanation for i, d in details.items()},
        ablations={i: None for i in details}, sae=browser.run_sae,
    )  # fmt: skip


@router.get("/latent", response_class=HTMLResponse)
def latent_lookup(request: Request, sae: str | None = None, index: int | None = None) -> Response:
    """The navigation's 'go to latent' form lands here."""
    explorer = request.app.state.browser.explorer
    chosen = explorer.sae(sae if sae in explorer.saes else None)
    if index is None:
        return render(request, "latent.html", latent=None, sae=chosen.name)
    return RedirectResponse(f"/latent/{chosen.name}/{index}", status_code=303)


@router.get("/latent/{sae:path}/{index}", response_class=HTMLResponse)
def latent_page(request: Request, sae: str, index: int) -> HTMLResponse:
    browser: Browser = request.app.state.browser
    try:
        latent = browser.latent(sae, index)
    except UserError as exc:
        raise NotFound(str(exc)) from None
    return render(
        request,
        "latent.html",
        latent=latent,
        sae=latent.sae,
        dashboard=browser.dashboard(latent.sae, index),
    )


@router.get("/clusters", response_class=HTMLResponse)
def clusters_page(
    request: Request,
    threshold: Annotated[float, Query(gt=0, le=1)] = 0.3,
    min_size: Annotated[int, Query(ge=1, le=1000)] = 2,
) -> HTMLResponse:
    """Clusters of co-occurring latents of the --run directory."""
    browser: Browser = request.app.state.browser
    try:
        found, why = browser.clusters(threshold, min_size), None
    except NotFound as exc:
        found, why = None, str(exc)
    return render(
        request, "clusters.html", found=found, why=why, threshold=threshold, min_size=min_size
    )


@router.get("/api/docs", response_class=HTMLResponse)
def api_docs_page(request: Request) -> HTMLResponse:
    """The API reference, from the schema, with no script from elsewhere (works offline)."""
    from pivotal_sae.explorer.api_docs import api_reference

    return render(request, "api.html", api=api_reference(request.app.openapi()))
