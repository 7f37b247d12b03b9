"""Planted absorption: edit a real SAE so that chosen parent latents go silent on chosen child
latents' tokens, at a chosen rate, with the parent's direction moved into the child's decoder.

The edit is the mechanism Chanin et al. found in trained SAEs: the parent's encoder gains a
negative component along the child's encoder. For parent p and child c (weights `W_enc` (M, E),
`b_enc` (E), `W_dec` (E, M)):

    pre_p'  = pre_p - alpha * (u . z - m)        (W_enc[:, p] -= alpha u; b_enc[p] += alpha m)
    W_dec[c] += beta * W_dec[p]

`z` is the encoder's input and `u` a direction that reads the child's tokens: by default the
discriminant that separates them from all other tokens with the least spread on the others
(`--direction separating`), or the child's own encoder column (`child-encoder`, exact where
that column reads 0 off the child's tokens). `m` is the median of `u . z` on the parent's
*other* tokens (where p fires and c does not), so those keep p's pre-activation on average;
`alpha` is found by bisection so that p is silenced on `rate` of the child's tokens where it
fired (calibration tokens); `beta` is the median ratio a_p / a_c on those tokens, so the
child's decoder carries what the parent wrote there. Tokens where c does not fire change only
where p's activation moves; the answer key records how many did (`other_tokens_changed`). An
encoder is linear, so a partial rate silences p where the child reads strongest: partial
absorption, as trained SAEs show.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from pivotal_sae.errors import UserError

#: Relative reconstruction change above which a token counts as changed.
CHANGED = 1e-5


@dataclass
class PlantedPair:
    parent: int
    child: int
    direction: str
    """`separating` or `child-encoder` (see the module's docstring)."""
    rate: float
    achieved_rate: float
    alpha: float
    beta: float
    offset: float
    n_child_tokens: int
    """Calibration tokens where the child fires and the parent fired before the edit."""
    absorbed_token_ids: list[int] = field(default_factory=list)
    """Indices (into the calibration tokens) where the parent is now silent."""
    kept_token_ids: list[int] = field(default_factory=list)
    """Indices where the child fires and the parent still does."""


def _fires(sae: Any, acts_NM: torch.Tensor) -> torch.Tensor:
    return sae.encode(acts_NM) > 0


def choose_pairs(
    sae: Any,
    acts_NM: torch.Tensor,
    n_pairs: int,
    seed: int,
    min_child_tokens: int = 5,
    min_parent_given_child: float = 0.5,
    max_parent_rate: float = 0.05,
) -> list[tuple[int, int]]:
    """Seeded (parent, child) pairs, all latents distinct: the child fires on at least
    `min_child_tokens` tokens, and on at least `min_parent_given_child` of them the parent
    fires too, while the parent fires on other tokens as well (it is the more general one) but
    on at most `max_parent_rate` of all tokens (dense latents are no category's parent)."""
    fires_NE = _fires(sae, acts_NM).float()
    counts_E = fires_NE.sum(0)
    both_EE = fires_NE.T @ fires_NE
    p_parent_given_child = both_EE / counts_E.clamp_min(1)[None, :]  # [p, c]
    ok = (
        (counts_E[None, :] >= min_child_tokens)
        & (p_parent_given_child >= min_parent_given_child)
        & (counts_E[:, None] >= 2 * counts_E[None, :])
        & (counts_E[:, None] <= max_parent_rate * len(acts_NM))
    )
    ok.fill_diagonal_(False)
    candidates = ok.nonzero().tolist()
    rng = random.Random(seed)
    rng.shuffle(candidates)
    used: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for p, c in candidates:
        if p in used or c in used:
            continue
        pairs.append((p, c))
        used.update((p, c))
        if len(pairs) == n_pairs:
            break
    if len(pairs) < n_pairs:
        raise UserError(
            f"found {len(pairs)} parent/child latent pairs to plant, not {n_pairs}: ask for "
            "fewer with --n-pairs, or calibrate on more tokens"
        )
    return pairs


def check_pairs(pairs: Sequence[tuple[int, int]], d_sae: int) -> None:
    for p, c in pairs:
        for latent in (p, c):
            if not 0 <= latent < d_sae:
                raise UserError(
                    f"latent {latent} is out of range: the SAE has {d_sae} latents "
                    f"(ids 0..{d_sae - 1})"
                )
        if p == c:
            raise UserError(f"a parent and its child must differ (got {p} twice)")
    latents = [latent for pair in pairs for latent in pair]
    if len(set(latents)) != len(latents):
        raise UserError("planted pairs must use distinct latents")


def check_rate(rate: float) -> None:
    if not 0 < rate <= 1:
        raise UserError(f"--rate must be in (0, 1] (share of child tokens absorbed); got {rate}")


def _edit_encoder(sae: Any, p: int, u_M: torch.Tensor, alpha: float, offset: float,
                  W_enc: torch.Tensor, b_enc: torch.Tensor) -> None:  # fmt: skip
    """pre_p' = pre_p - alpha * (u . z - offset), z being the SAE's encoder input."""
    sae.W_enc.data[:, p] = W_enc[:, p] - alpha * u_M
    sae.b_enc.data[p] = b_enc[p] + alpha * offset


def _encoder_input(sae: Any, acts_NM: torch.Tensor) -> torch.Tensor:
    return acts_NM - sae.b_dec if sae.info.apply_b_dec_to_input else acts_NM


def suppression_direction(
    sae: Any, z_NM: torch.Tensor, child_N: torch.Tensor, c: int, direction: str
) -> torch.Tensor:
    """The direction `u` whose reading silences the parent. `child-encoder`: the child's own
    encoder column (pre_p' = pre_p - alpha (pre_c - b_c - offset)). `separating`: the
    ridge-regularized discriminant of the child's tokens against all others,
    (cov_other + lambda I)^-1 (mean_child - mean_other), scaled to the child encoder's norm: the
    linear reading that moves least on other tokens per unit of suppression on the child's."""
    if direction == "child-encoder":
        return sae.W_enc[:, c].clone()
    other = z_NM[~child_N].double()
    diff = z_NM[child_N].double().mean(0) - other.mean(0)
    cov = torch.cov(other.T) if len(other) > 1 else torch.zeros(len(diff), len(diff))
    ridge = 1e-2 * float(cov.diagonal().mean().clamp_min(1e-12))
    u = torch.linalg.solve(cov + ridge * torch.eye(len(diff), dtype=cov.dtype), diff)
    return (u / u.norm() * sae.W_enc[:, c].norm()).to(z_NM.dtype)


@torch.no_grad()
def fold_decoder_norms(sae: Any) -> Any:
    """A TopK SAE that ranks by decoder-norm-scaled pre-activations
    (`rescale_acts_by_decoder_norm`) as the same function without that option: encoder columns
    and biases times the norms, unit decoder rows. Other SAEs come back as they are."""
    if not getattr(sae.info, "rescale_acts_by_decoder_norm", False):
        return sae
    folded = copy.deepcopy(sae)
    norms_E = sae.W_dec.norm(dim=-1)
    folded.W_enc.data = sae.W_enc * norms_E
    folded.b_enc.data = sae.b_enc * norms_E
    folded.W_dec.data = sae.W_dec / norms_E[:, None]
    folded.replace_info(rescale_acts_by_decoder_norm=False)
    return folded


@torch.no_grad()
def plant_absorption(
    sae: Any,
    acts_NM: torch.Tensor,
    pairs: Sequence[tuple[int, int]],
    rate: float,
    direction: str = "separating",
) -> tuple[Any, list[PlantedPair], dict[str, float]]:
    """A copy of `sae` with each (parent, child) pair absorbed at `rate` on `acts_NM`.

    A TopK SAE with `rescale_acts_by_decoder_norm` is first folded into the same function
    without it (`fold_decoder_norms`), so the edited child's new decoder norm does not rescale
    its activations. Returns the edited SAE, one `PlantedPair` per pair and a check of the
    other tokens: `other_tokens_changed` (share of tokens where no child fires whose
    reconstruction moved by more than 1e-5 relative) and `other_tokens_max_change`.
    """
    check_rate(rate)
    check_pairs(pairs, sae.d_sae)
    sae = fold_decoder_norms(sae)
    acts_NM = acts_NM.to(sae.device, sae.dtype)
    before_NE = sae.encode(acts_NM)
    z_NM = _encoder_input(sae, acts_NM)
    edited = copy.deepcopy(sae)
    W_enc, b_enc = sae.W_enc.detach().clone(), sae.b_enc.detach().clone()
    planted: list[PlantedPair] = []
    for p, c in pairs:
        child_N = (before_NE[:, c] > 0) & (before_NE[:, p] > 0)
        siblings_N = (before_NE[:, p] > 0) & (before_NE[:, c] <= 0)
        if not child_N.any():
            raise UserError(f"child latent {c} never fires with parent {p} on these tokens")
        # Where the discriminant cannot reach the rate (a child token it does not separate),
        # the child's encoder column does.
        tries = [direction] if direction == "child-encoder" else [direction, "child-encoder"]
        for used in tries:
            u_M = suppression_direction(sae, z_NM, child_N, c, used)
            alpha, offset, achieved = _fit_alpha(
                sae, edited, acts_NM, z_NM, p, u_M, child_N, siblings_N, rate, W_enc, b_enc
            )
            if achieved >= rate - 1e-6:
                break
        ratio = before_NE[child_N, p] / before_NE[child_N, c]
        beta = float(ratio.median())
        edited.W_dec.data[c] = sae.W_dec[c] + beta * sae.W_dec[p]
        after_p = edited.encode(acts_NM)[:, p]
        ids = child_N.nonzero().flatten()
        planted.append(
            PlantedPair(
                parent=p, child=c, direction=used, rate=rate, achieved_rate=achieved,
                alpha=alpha, beta=beta, offset=offset, n_child_tokens=int(child_N.sum()),
                absorbed_token_ids=ids[after_p[ids] <= 0].tolist(),
                kept_token_ids=ids[after_p[ids] > 0].tolist(),
            )
        )  # fmt: skip
    return edited, planted, reconstruction_check(sae, edited, acts_NM, [c for _, c in pairs])


def _fit_alpha(sae: Any, edited: Any, acts_NM: torch.Tensor, z_NM: torch.Tensor, p: int,
               u_M: torch.Tensor, child_N: torch.Tensor, siblings_N: torch.Tensor, rate: float,
               W_enc: torch.Tensor, b_enc: torch.Tensor) -> tuple[float, float, float]:  # fmt: skip
    """(alpha, offset, achieved rate): the smallest alpha silencing p on `rate` of the child's
    tokens, by doubling then bisection; `edited`'s encoder is left at that alpha."""
    reading_N = z_NM @ u_M
    offset = float(reading_N[siblings_N].median()) if siblings_N.any() else 0.0

    def silenced(alpha: float) -> float:
        _edit_encoder(edited, p, u_M, alpha, offset, W_enc, b_enc)
        return float((edited.encode(acts_NM[child_N])[:, p] <= 0).float().mean())

    low, high = 0.0, 1.0
    while silenced(high) < rate and high < 1e6:
        low, high = high, high * 2
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if silenced(mid) < rate else (low, mid)
    return high, offset, silenced(high)


@torch.no_grad()
def reconstruction_check(
    sae: Any, edited: Any, acts_NM: torch.Tensor, children: Sequence[int]
) -> dict[str, float]:
    """How the edit moved reconstructions of tokens where no planted child fires."""
    before = sae(acts_NM)
    after = edited(acts_NM)
    others_N = ~(before.latent_acts[:, list(children)] > 0).any(-1)
    change_N = (after.reconstruction - before.reconstruction).norm(dim=-1) / (
        before.reconstruction.norm(dim=-1).clamp_min(1e-12)
    )
    other = change_N[others_N]
    return {
        "n_other_tokens": int(others_N.sum()),
        "other_tokens_changed": float((other > CHANGED).float().mean()) if len(other) else 0.0,
        "other_tokens_max_change": float(other.max()) if len(other) else 0.0,
        "other_tokens_mean_change": float(other.mean()) if len(other) else 0.0,
    }
