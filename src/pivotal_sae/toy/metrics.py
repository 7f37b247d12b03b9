"""Scores of a toy SAE against the planted features (SPEC §1, Metrics); docs/toy.md defines each.

Two families:
- weight metrics (`weight_metrics`): need only the weights and the ground-truth features, so they
  are cheap enough to log every few steps: pair/single detection (plain and adjusted) and MMCS;
- activation metrics (`activation_metrics`): need a forward pass over the validation batch:
  dead latents per kind, reconstruction MSE and the ground-truth absorption rate.
Every function here is vectorized; the plain-loop references they are tested against live in
`tests/toy/`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from pivotal_sae.saes.hierarchical import HierarchicalSae
from pivotal_sae.saes.topk import TopKSae, ToySaeOutput, scatter_dense
from pivotal_sae.toy.data import ToyBatch, ToyFeatures


def cosine_sims(a_DM: Float[Tensor, "D M"], b_CM: Float[Tensor, "C M"]) -> Float[Tensor, "D C"]:
    return F.normalize(a_DM, dim=-1, eps=1e-12) @ F.normalize(b_CM, dim=-1, eps=1e-12).T


def nearest_children(
    directions_ENM: Float[Tensor, "E N M"], children_CM: Float[Tensor, "C M"]
) -> Int[Tensor, "E N"]:
    """For each child slot of each parent latent, the nearest ground-truth child (by cosine)."""
    n_latents, n_slots, _ = directions_ENM.shape
    sims = cosine_sims(directions_ENM.flatten(0, 1), children_CM)
    return sims.argmax(dim=-1).view(n_latents, n_slots)


def pair_detected(nearest_EN: Int[Tensor, "E N"], n_children: int) -> Bool[Tensor, " E"]:
    """A parent latent's children found distinct siblings of one ground-truth parent."""
    same_parent = (nearest_EN // n_children == nearest_EN[:, :1] // n_children).all(dim=1)
    ordered = nearest_EN.sort(dim=1).values
    distinct = (ordered[:, 1:] != ordered[:, :-1]).all(dim=1)
    return same_parent & distinct


def single_detected(nearest_EN: Int[Tensor, "E N"]) -> Bool[Tensor, " E"]:
    """All of a parent latent's children found the same feature (the children failed to split)."""
    return (nearest_EN == nearest_EN[:, :1]).all(dim=1)


def mmcs(
    directions_DM: Float[Tensor, "D M"], children_CM: Float[Tensor, "C M"]
) -> tuple[float, float]:
    """Min and mean over child features of the best cosine with any of the directions."""
    best_C = cosine_sims(directions_DM, children_CM).max(dim=0).values
    return best_C.min().item(), best_C.mean().item()


@torch.no_grad()
def weight_metrics(sae: TopKSae, features: ToyFeatures) -> dict[str, float | None]:
    """Detection rates and MMCS. Flat SAEs: MMCS of decoder rows; detection does not apply.

    For a hierarchical SAE the scored directions are child directions `d_e + r d_en`: `adjusted_*`
    uses the EMA ratio r, the plain metric r = 1 (both as in the original code).
    """
    children_CM = features.children_CM
    if not isinstance(sae, HierarchicalSae):
        low, mean = mmcs(sae.W_dec, children_CM)
        return {
            "pair_detection_rate": None,
            "adjusted_pair_detection_rate": None,
            "single_detection_rate": None,
            "adjusted_single_detection_rate": None,
            "mmcs_min": low,
            "mmcs_mean": mean,
            "adjusted_mmcs_min": None,
            "adjusted_mmcs_mean": None,
        }
    # Plain and adjusted directions scored together: one similarity product, one read-back.
    directions_2ENM = torch.stack(
        [sae.child_directions_ENM(adjusted=False), sae.child_directions_ENM(adjusted=True)]
    )
    n_latents, n_slots = directions_2ENM.shape[1:3]
    sims_2HC = cosine_sims(directions_2ENM.flatten(0, 2), children_CM).view(
        2, n_latents * n_slots, -1
    )
    nearest_XN = sims_2HC.argmax(dim=-1).view(2 * n_latents, n_slots)  # X: both kinds' E
    best_2C = sims_2HC.max(dim=1).values
    stats_2S = torch.stack(
        [
            pair_detected(nearest_XN, sae.n_children).view(2, -1).float().mean(dim=1),
            single_detected(nearest_XN).view(2, -1).float().mean(dim=1),
            best_2C.amin(dim=1),
            best_2C.mean(dim=1),
        ],
        dim=1,
    )
    out: dict[str, float | None] = {}
    for prefix, (pair, single, low, mean) in zip(("", "adjusted_"), stats_2S.tolist(), strict=True):
        out[f"{prefix}pair_detection_rate"] = pair
        out[f"{prefix}single_detection_rate"] = single
        out[f"{prefix}mmcs_min"], out[f"{prefix}mmcs_mean"] = low, mean
    return out


def latent_directions(sae: TopKSae) -> Float[Tensor, "L M"]:
    """One direction per latent: decoder rows; hierarchical children use `d_e + r d_en`."""
    if isinstance(sae, HierarchicalSae):
        return torch.cat([sae.W_dec, sae.child_directions_ENM(adjusted=True).flatten(0, 1)])
    return sae.W_dec


def latent_firing(sae: TopKSae, out: ToySaeOutput) -> Bool[Tensor, "B L"]:
    """Which latents fired on each row, in the order of `latent_directions`."""
    fires_BE = scatter_dense((out.values_BK != 0).float(), out.indices_BK, sae.d_sae).bool()
    if not isinstance(sae, HierarchicalSae):
        return fires_BE
    assert out.child_values_BK is not None and out.child_slots_BK is not None
    child_index_BK = out.indices_BK * sae.n_children + out.child_slots_BK
    fires_BH = scatter_dense(
        (out.child_values_BK != 0).float(), child_index_BK, sae.d_sae * sae.n_children
    ).bool()
    return torch.cat([fires_BE, fires_BH], dim=1)


def absorption_rate(
    directions_LM: Float[Tensor, "L M"],
    fires_BL: Bool[Tensor, "B L"],
    features: ToyFeatures,
    child_on_BC: Bool[Tensor, "B C"],
) -> float | None:
    """Share of (row, child) events where the child's latent fires but its parent's latent doesn't.

    The parent's latent is the latent whose direction is most cosine-similar to the parent
    direction; a child's latent likewise for the child feature. Events are rows where child `c`
    is present and its latent fires; absorbed events are those where the latent of `c`'s parent
    stays silent. None when no event occurred.
    """
    parent_latent_A = cosine_sims(features.parents_AM, directions_LM).argmax(dim=-1)
    child_latent_C = cosine_sims(features.children_CM, directions_LM).argmax(dim=-1)
    child_ids_C = torch.arange(child_latent_C.shape[0], device=fires_BL.device)
    parent_latent_C = parent_latent_A[child_ids_C // features.n_children]
    events_BC = child_on_BC & fires_BL[:, child_latent_C]
    absorbed_BC = events_BC & ~fires_BL[:, parent_latent_C]
    n_events = int(events_BC.sum())
    return int(absorbed_BC.sum()) / n_events if n_events else None


def dead_latents(fired: dict[str, Tensor], n_children: int) -> dict[str, int]:
    """Latents that fired on no validation row, per kind (each child slot its own kind)."""
    if "child" not in fired:
        return {kind: int((~alive).sum()) for kind, alive in fired.items()}
    child_alive_EN = fired["child"].view(-1, n_children)
    counts = {"parent": int((~fired["parent"]).sum())}
    for slot in range(n_children):
        counts[f"child_{slot}"] = int((~child_alive_EN[:, slot]).sum())
    return counts


@torch.no_grad()
def activation_metrics(
    sae: TopKSae, out: ToySaeOutput, batch: ToyBatch, features: ToyFeatures
) -> dict[str, Any]:
    by_kind = dead_latents(sae.fired(out), getattr(sae, "n_children", 1))
    return {
        "dead_latents": sum(by_kind.values()),
        "dead_latents_by_kind": by_kind,
        "val_reconstruction_mse": (out.recon_BM - batch.x_BM).pow(2).mean().item(),
        "absorption_rate": absorption_rate(
            latent_directions(sae), latent_firing(sae, out), features, batch.child_on_BC
        ),
    }
