"""Pairs of ablator latents that rarely fire together yet affect the reader SAE alike.

`find_effect_pairs` compares the rows of `effects_eE` (e ablator latents × E reader latents)
of every latent ablated at least once, by cosine similarity, and keeps the unordered pairs whose
co-occurrence count is <= `cooccurrence_threshold` and whose cosine is >= `cosine_sim_threshold`,
highest cosine first (ties: lower ids first). `find_decoder_pairs` does the same for decoder rows,
keeping the most similar pairs that (almost) never co-occur.

Both walk the (rows × rows) cosine matrix in tiles of `block` × `block` on the device: one matrix
product per tile, the upper triangle only, the co-occurrence test and threshold as tensor masks.
A running top-`max_pairs` set bounds memory; `n_matching` still counts every qualifying pair.

Precision. With signs (the default), the dot products of {-1, 0, 1} rows are integers computed
exactly: fp32 accumulation is exact below 2²⁴ and ±1 survive TF32 rounding, so TF32 tensor cores
are allowed for them. The cosine `dot / sqrt(nnz_a · nnz_b)` is then formed in float64 with a
correctly rounded square root, so it equals a float64 reference bit for bit. Raw values
(`skip_torch_sign`) and decoder rows are L2-normalised and multiplied in fp32 (TF32 off):
cosines within ~1e-6 of float64. A zero row has cosine 0 with everything, as `F.normalize` gives.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch

from pivotal_sae.absorption.cooccurrence import (
    CooccurrenceCounts,
    FullCooccurrence,
    expected_cooccurrence,
)
from pivotal_sae.errors import UserError

if TYPE_CHECKING:
    from pivotal_sae.absorption.ablation import AblationEffects

DEFAULT_BLOCK = 4096


class LatentPair(NamedTuple):
    """One reported pair (a NamedTuple: cheap to build by the hundred thousand). Effect pairs:
    `latent_a` is the `just_these` latent when one was asked for, otherwise the lower id."""

    latent_a: int
    latent_b: int
    cosine: float
    cooccurrence: int
    """Token positions where both fired."""
    expected_cooccurrence: float
    """f_a · f_b / N: the mean count if the two fired independently (N tokens counted)."""
    p_at_most_observed: float
    """Poisson P(count <= observed | mean = expected): small means 'rarer together than chance'."""
    firing_a: int
    firing_b: int
    ablations_a: int | None = None
    """Contexts in which latent a was ablated (effect pairs only)."""
    ablations_b: int | None = None

    def as_dict(self) -> dict[str, float | int | None]:
        return self._asdict()


@dataclass
class PairSearch:
    """Result of a search: the pairs (capped at `max_pairs`) and how many qualified in all."""

    pairs: list[LatentPair]
    n_matching: int
    n_rows: int
    """Latents compared (ablated at least once, for effect pairs)."""
    settings: Mapping[str, object]


def poisson_cdf(observed: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """P(X <= observed) for X ~ Poisson(mean), elementwise: the regularized upper incomplete
    gamma Q(observed + 1, mean)."""
    observed = observed.to(torch.float64)
    mean = mean.to(torch.float64)
    return torch.where(mean > 0, torch.special.gammaincc(observed + 1, mean), 1.0)


def as_cooccurrence_source(
    cooccurrences: CooccurrenceCounts | torch.Tensor, tokens_counted: int | None
) -> CooccurrenceCounts:
    if isinstance(cooccurrences, torch.Tensor):
        if tokens_counted is None:
            raise ValueError("a bare cooccurrences_ee tensor needs tokens_counted")
        return FullCooccurrence(cooccurrences, tokens_counted)
    return cooccurrences


def _sqrt(x: torch.Tensor) -> torch.Tensor:
    """Correctly rounded float64 square root, so `dot / sqrt(n_a·n_b)` is the same float as
    a libm reference. Torch's vectorized CPU sqrt can be 1 ulp off (seen: sqrt(78)); numpy's
    and CUDA's are IEEE-exact."""
    if x.device.type != "cpu":
        return x.sqrt()
    import numpy as np

    return torch.from_numpy(np.sqrt(x.numpy()))


@contextlib.contextmanager
def tf32_matmuls(allowed: bool) -> Iterator[None]:
    """CUDA float32 matrix products in TF32 (faster, ~1e-3 relative rounding) or not, inside."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def _merge_top(
    best: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    new: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    max_pairs: int | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the best `max_pairs` of (cosine, a, b) by cosine desc, then a, then b."""
    cos, a, b = (torch.cat([x, y]) for x, y in zip(best, new, strict=True))
    # Ids are < 2³¹, so (a, b) packs into one int64 key: two sorts instead of three.
    order = torch.sort(a * 2**32 + b).indices
    order = order[torch.sort(cos[order], descending=True, stable=True).indices]
    order = order[:max_pairs] if max_pairs is not None else order
    return cos[order], a[order], b[order]


def scan_pairs(
    row_ids: torch.Tensor,
    col_ids: torch.Tensor,
    cosine_tile: Callable[[slice, slice], torch.Tensor],
    keep_tile: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    max_pairs: int | None,
    block: int,
    upper_only: bool,
) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], int]:
    """Walk the (rows × cols) cosine matrix in tiles and keep the best qualifying pairs.

    `cosine_tile(rows, cols)` gives a float64 tile; `keep_tile(cos, a, b)` masks the pairs that
    qualify (a, b: latent ids broadcast to the tile). With `upper_only` rows and cols are the
    same list and only tiles on or above the diagonal are visited.
    """
    device = row_ids.device
    empty = torch.zeros(0, dtype=torch.int64, device=device)
    best = (torch.zeros(0, dtype=torch.float64, device=device), empty, empty)
    n_matching = torch.zeros((), dtype=torch.int64, device=device)
    floor = -math.inf
    for r0 in range(0, row_ids.numel(), block):
        rows = slice(r0, r0 + block)
        for c0 in range(r0 if upper_only else 0, col_ids.numel(), block):
            cols = slice(c0, c0 + block)
            cos_rc = cosine_tile(rows, cols)
            a_rc = row_ids[rows][:, None].expand_as(cos_rc)
            b_rc = col_ids[cols][None, :].expand_as(cos_rc)
            keep_rc = keep_tile(cos_rc, a_rc, b_rc)
            n_matching += keep_rc.sum()
            keep_rc &= cos_rc >= floor
            ri, ci = keep_rc.nonzero(as_tuple=True)
            if ri.numel() == 0:
                continue
            new = (cos_rc[ri, ci], a_rc[ri, ci], b_rc[ri, ci])
            best = _merge_top(best, new, max_pairs)
            if max_pairs is not None and best[0].numel() == max_pairs:
                floor = float(best[0][-1])
    return best, int(n_matching)


def _pairs_from(
    best: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    source: CooccurrenceCounts,
    ablations_e: torch.Tensor | None,
) -> list[LatentPair]:
    cos, a, b = best
    firing = source.firing_counts_e.to(a.device)
    observed = source.lookup(a, b)
    expected = expected_cooccurrence(source.firing_counts_e, source.tokens_counted, a, b)
    columns = {
        "cosine": cos.tolist(),
        "latent_a": a.tolist(),
        "latent_b": b.tolist(),
        "cooccurrence": observed.tolist(),
        "expected_cooccurrence": expected.tolist(),
        "p_at_most_observed": poisson_cdf(observed, expected).tolist(),
        "firing_a": firing[a].tolist(),
        "firing_b": firing[b].tolist(),
    }
    if ablations_e is not None:
        columns["ablations_a"] = ablations_e[a].tolist()
        columns["ablations_b"] = ablations_e[b].tolist()
    order = [columns.get(name, [None] * a.numel()) for name in LatentPair._fields]
    return [LatentPair._make(values) for values in zip(*order, strict=True)]


def find_effect_pairs(
    effects_eE: torch.Tensor | AblationEffects,
    how_often_activated_e: torch.Tensor,
    cooccurrences: CooccurrenceCounts | torch.Tensor,
    *,
    tokens_counted: int | None = None,
    cooccurrence_threshold: int = 0,
    cosine_sim_threshold: float = 0.0,
    just_these: Sequence[int] | None = None,
    skip_torch_sign: bool = False,
    max_pairs: int | None = 100_000,
    min_ablations: int = 1,
    block: int = DEFAULT_BLOCK,
    device: torch.device | str | None = None,
) -> PairSearch:
    """Ablator latents with alike effects that co-occur at most `cooccurrence_threshold` times.

    `cooccurrences` is a counter from `cooccurrence.py` or a full `cooccurrences_ee` tensor
    (then pass `tokens_counted`). `just_these` restricts to pairs with at least one of those
    latents. Only latents ablated at least `min_ablations` times take part (1: all that were
    ablated, as the original). `effects_eE` is a dense (e, E) tensor or the sparse-row
    `AblationEffects` the jobs keep (only its measured rows are read). Runs on `device`
    (default: that of `effects_eE`).
    """
    e = effects_eE.shape[0]
    if how_often_activated_e.shape != (e,):
        raise UserError(
            f"how_often_activated_e has shape {tuple(how_often_activated_e.shape)}, "
            f"expected ({e},) to match effects_eE"
        )
    source = as_cooccurrence_source(cooccurrences, tokens_counted)
    if source.d_sae != e:
        raise UserError(
            f"the effects are for {e} ablator latents but the co-occurrence counts for "
            f"{source.d_sae}; they come from different SAEs"
        )
    if just_these is not None and any(not 0 <= i < e for i in just_these):
        raise UserError(f"--just-these latents must lie in [0, {e})")
    where = effects_eE.device
    device = torch.device(device) if device is not None else torch.device(where)
    ablations_e = how_often_activated_e.to(device, torch.int64)
    measured_m = (ablations_e >= max(min_ablations, 1)).nonzero()[:, 0]
    # Select the measured rows where the effects are, then move: one (m, E) copy on the device.
    vecs_mE = effects_eE[measured_m.to(where)].to(device, torch.float32)
    if skip_torch_sign:
        vecs_mE = torch.nn.functional.normalize(vecs_mE, dim=1)
        nnz_m = None
    else:
        vecs_mE.sign_()
        nnz_m = vecs_mE.abs().sum(dim=1, dtype=torch.float64)

    if just_these is None:
        row_pos = torch.arange(measured_m.numel(), device=device)
        chosen_c = None
    else:
        chosen_e = torch.zeros(e, dtype=torch.bool, device=device)
        chosen_e[torch.tensor(sorted(set(just_these)), dtype=torch.int64, device=device)] = True
        row_pos = chosen_e[measured_m].nonzero()[:, 0]
        chosen_c = chosen_e[measured_m]
    row_vecs = vecs_mE[row_pos]

    def cosine_tile(rows: slice, cols: slice) -> torch.Tensor:
        with tf32_matmuls(not skip_torch_sign):
            dot = row_vecs[rows] @ vecs_mE[cols].T
        if nnz_m is None:
            return dot.double()
        denom = _sqrt(nnz_m[row_pos[rows]][:, None] * nnz_m[cols][None, :])
        return torch.where(denom > 0, dot.double() / denom, 0.0)

    def keep_tile(cos: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if chosen_c is None:
            keep = b > a
        else:
            b_chosen = chosen_e[b]
            keep = (b != a) & ~(b_chosen & (b < a))
        keep &= cos >= cosine_sim_threshold
        if keep.any():
            keep &= source.lookup(a, b).to(device) <= cooccurrence_threshold
        return keep

    best, n_matching = scan_pairs(
        measured_m[row_pos],
        measured_m,
        cosine_tile,
        keep_tile,
        max_pairs,
        block,
        upper_only=just_these is None,
    )
    settings = {
        "cooccurrence_threshold": cooccurrence_threshold,
        "cosine_sim_threshold": cosine_sim_threshold,
        "just_these": None if just_these is None else sorted(set(just_these)),
        "skip_torch_sign": skip_torch_sign,
        "max_pairs": max_pairs,
        "min_ablations": min_ablations,
    }
    return PairSearch(
        _pairs_from(best, source, ablations_e), n_matching, int(measured_m.numel()), settings
    )


def find_decoder_pairs(
    W_dec_EM: torch.Tensor,
    cooccurrences: CooccurrenceCounts | torch.Tensor,
    *,
    tokens_counted: int | None = None,
    top_n: int = 1000,
    cooccurrence_threshold: int = 0,
    min_firing: int = 1,
    block: int = DEFAULT_BLOCK,
    device: torch.device | str | None = None,
) -> PairSearch:
    """The `top_n` pairs of latents with the most alike decoder rows among pairs that co-occur
    at most `cooccurrence_threshold` times and where both fired at least `min_firing` times
    (dead latents never co-occur, which says nothing)."""
    source = as_cooccurrence_source(cooccurrences, tokens_counted)
    if source.d_sae != W_dec_EM.shape[0]:
        raise UserError(
            f"the decoder has {W_dec_EM.shape[0]} latents but the co-occurrence counts "
            f"{source.d_sae}; they come from different SAEs"
        )
    device = torch.device(device) if device is not None else W_dec_EM.device
    alive_l = (source.firing_counts_e.to(device) >= min_firing).nonzero()[:, 0]
    unit_lM = torch.nn.functional.normalize(W_dec_EM.to(device)[alive_l].float(), dim=1)

    def cosine_tile(rows: slice, cols: slice) -> torch.Tensor:
        with tf32_matmuls(False):
            return (unit_lM[rows] @ unit_lM[cols].T).double()

    def keep_tile(cos: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        keep = b > a
        return keep & (source.lookup(a, b).to(device) <= cooccurrence_threshold)

    best, n_matching = scan_pairs(
        alive_l, alive_l, cosine_tile, keep_tile, top_n, block, upper_only=True
    )
    settings = {
        "top_n": top_n,
        "cooccurrence_threshold": cooccurrence_threshold,
        "min_firing": min_firing,
    }
    return PairSearch(_pairs_from(best, source, None), n_matching, int(alive_l.numel()), settings)
