"""The JSON API under /api. Handlers are plain `def`s: FastAPI runs them in worker threads,
so a model call never blocks the event loop, and the explorer's lock orders them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.security import HTTPBearer

from pivotal_sae.explorer.browse import PAIR_KINDS, Browser
from pivotal_sae.explorer.schemas import (
    AssociationsOut,
    ClustersOut,
    Dashboard,
    ExplorerInfo,
    HighlightRequest,
    HighlightResponse,
    Latent,
    PairsPage,
    SaeDescription,
    TopLatentsRequest,
    TopLatentsResponse,
)

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or wrong bearer token (only when the server has --token)."},
    413: {"description": "Request body over the server's --max-request-bytes."},
    422: {"description": "Invalid input: unknown SAE, latent out of range, prompt too long."},
}
# Declared so the OpenAPI schema documents the bearer token; the Guard layer enforces it.
bearer = HTTPBearer(auto_error=False, description="The token given to `pivotal-sae serve`.")
router = APIRouter(prefix="/api", responses=ERRORS, dependencies=[Depends(bearer)])


def browser(request: Request) -> Browser:
    return request.app.state.browser


Explore = Annotated[Browser, Depends(browser)]
#: The path parameters naming one latent: its SAE (name or path) and its index.
SaeName = Annotated[str, Path(max_length=200)]
LatentIndex = Annotated[int, Path(ge=0)]


@router.get("/info", response_model=ExplorerInfo, summary="The model, SAEs and run served")
def info(b: Explore) -> ExplorerInfo:
    return ExplorerInfo(
        model=b.explorer.model_name,
        saes=[s.describe() for s in b.explorer.saes.values()],
        run=b.run_info(),
        max_prompt_chars=b.explorer.max_prompt_chars,
        max_prompt_tokens=b.explorer.max_prompt_tokens,
    )


@router.get("/saes", response_model=list[SaeDescription], summary="SAEs requests may name")
def saes(b: Explore) -> list[SaeDescription]:
    return [s.describe() for s in b.explorer.saes.values()]


@router.post(
    "/highlight",
    response_model=HighlightResponse,
    summary="One latent's activation at every token of a prompt",
)
def highlight(body: HighlightRequest, b: Explore) -> HighlightResponse:
    return b.explorer.highlight(body.prompt, body.feature_idx, body.sae)


@router.post(
    "/top-latents",
    response_model=TopLatentsResponse,
    summary="Each token's most active latents",
)
def top_latents(body: TopLatentsRequest, b: Explore) -> TopLatentsResponse:
    return b.explorer.top_latents(body.prompt, body.k, body.sae)


@router.get(
    "/latents/{sae:path}/{index}",
    response_model=Latent,
    summary="A latent: explanation, link, and (for the --run SAE) firing and top examples",
)
def latent(
    b: Explore,
    sae: SaeName,
    index: LatentIndex,
) -> Latent:
    return b.latent(sae, index)


@router.get(
    "/pairs",
    response_model=PairsPage,
    summary="Pairs of the --run directory (404 without one)",
    responses={404: {"description": "The server has no --run directory."}},
)
def pairs(
    b: Explore,
    kind: Annotated[str, Query(pattern="^(" + "|".join(PAIR_KINDS) + ")$")] = "effect",
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> PairsPage:
    return b.pairs(kind, offset, limit)


@router.get(
    "/dashboard/{sae:path}/{index}",
    response_model=Dashboard,
    summary="A latent's dashboard: histogram, quantile examples, top tokens, effects, logits",
)
def dashboard(
    b: Explore,
    sae: SaeName,
    index: LatentIndex,
) -> Dashboard:
    return b.dashboard(sae, index)


@router.get(
    "/associations/{sae:path}/{index}",
    response_model=AssociationsOut,
    summary="The latents that fire with a latent: Jaccard, lift, PMI and lift's 95 % interval",
    responses={404: {"description": "No --run directory with co-occurrence counts."}},
)
def associations(
    b: Explore,
    sae: SaeName,
    index: LatentIndex,
    k: Annotated[int, Query(ge=1, le=500)] = 20,
) -> AssociationsOut:
    return b.associations(sae, index, k)


@router.get(
    "/clusters",
    response_model=ClustersOut,
    summary="Clusters of co-occurring latents (components of the Jaccard >= threshold graph)",
    responses={404: {"description": "No --run directory with co-occurrence counts."}},
)
def clusters(
    b: Explore,
    threshold: Annotated[float, Query(gt=0, le=1)] = 0.3,
    min_size: Annotated[int, Query(ge=1, le=1000)] = 2,
) -> ClustersOut:
    return b.clusters(threshold, min_size)
