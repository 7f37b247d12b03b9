"""Co-occurrence beyond raw counts: Jaccard, lift and PMI (with a 95 % interval) per pair.

From the same exact counts as the pair search (`cooccurrences_ee`, firing counts `f_e`, tokens
N): for latents a and b with c tokens where both fire,
    Jaccard = c / (f_a + f_b - c),    expected = f_a f_b / N,    lift = c / expected,
    PMI = ln lift.
The interval treats c as Poisson around its mean (expected fixed): ln lift ± 1.96 / sqrt(c);
for c = 0 the upper bound is the rule of three (3 / expected) and the lower bound is 0.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

Z_95 = 1.959963984540054


class Associations(NamedTuple):
    """One latent against every latent (index e), each a float64 tensor of shape (E,)."""

    cooccurrences_e: torch.Tensor
    jaccard_e: torch.Tensor
    expected_e: torch.Tensor
    lift_e: torch.Tensor
    pmi_e: torch.Tensor
    lift_low_e: torch.Tensor
    lift_high_e: torch.Tensor


def associations(
    cooccurrences_e: torch.Tensor, firing_counts_e: torch.Tensor, latent: int, tokens: int
) -> Associations:
    """Latent `latent`'s row of the co-occurrence matrix, as association measures (NaN where a
    latent never fired, so that nothing can be said)."""
    c_e = cooccurrences_e.double()
    f_e = firing_counts_e.double()
    f_a = f_e[latent]
    union_e = f_a + f_e - c_e
    jaccard_e = torch.where(union_e > 0, c_e / union_e.clamp(min=1), torch.nan)
    expected_e = f_a * f_e / max(tokens, 1)
    known_e = expected_e > 0
    lift_e = torch.where(known_e, c_e / expected_e.clamp(min=1e-300), torch.nan)
    pmi_e = torch.log(lift_e)
    spread_e = Z_95 / c_e.clamp(min=1).sqrt()
    lift_low_e = torch.where(c_e > 0, lift_e * torch.exp(-spread_e), 0.0)
    lift_high_e = torch.where(c_e > 0, lift_e * torch.exp(spread_e), 3.0 / expected_e)
    lift_low_e = torch.where(known_e, lift_low_e, torch.nan)
    lift_high_e = torch.where(known_e, lift_high_e, torch.nan)
    return Associations(c_e, jaccard_e, expected_e, lift_e, pmi_e, lift_low_e, lift_high_e)


def association_of_pair(c: int, f_a: int, f_b: int, tokens: int) -> dict[str, float]:
    """The plain scalar reference of `associations` for one pair."""
    union = f_a + f_b - c
    expected = f_a * f_b / tokens
    if expected == 0:
        nan = math.nan
        return {"jaccard": c / union if union else nan, "lift": nan, "pmi": nan,
                "low": nan, "high": nan}  # fmt: skip
    lift = c / expected
    if c == 0:
        low, high = 0.0, 3.0 / expected
    else:
        low, high = lift * math.exp(-Z_95 / math.sqrt(c)), lift * math.exp(Z_95 / math.sqrt(c))
    pmi = math.log(lift) if lift > 0 else -math.inf
    return {"jaccard": c / union, "lift": lift, "pmi": pmi, "low": low, "high": high}


def jaccard_matrix(cooccurrences_ee: torch.Tensor) -> torch.Tensor:
    """Jaccard of every pair, (E, E) float64, from counts whose diagonal is the firing counts
    (0 where neither latent fired)."""
    c_ee = cooccurrences_ee.double()
    f_e = c_ee.diagonal()
    union_ee = f_e[:, None] + f_e[None, :] - c_ee
    return torch.where(union_ee > 0, c_ee / union_ee.clamp(min=1), 0.0)


def cooccurrence_clusters(
    cooccurrences_ee: torch.Tensor, threshold: float = 0.3, min_size: int = 2
) -> list[list[int]]:
    """Groups of latents that fire together: the connected components of the graph whose edges
    join latents with Jaccard >= `threshold` (as Clarke et al.'s sae_cooccurrence builds its
    graphs from the same counts). Components of at least `min_size` latents, largest first,
    each sorted; ties by smallest member."""
    jaccard_ee = jaccard_matrix(cooccurrences_ee)
    jaccard_ee.fill_diagonal_(0.0)
    i, j = (jaccard_ee >= threshold).nonzero(as_tuple=True)
    labels_e = torch.arange(cooccurrences_ee.shape[0])
    # Each latent takes the smallest label among its neighbours until nothing changes; at most
    # the graph's diameter rounds, each one vectorized over all edges.
    while True:
        smallest_e = labels_e.scatter_reduce(0, i, labels_e[j], reduce="amin")
        smallest_e = smallest_e[smallest_e]  # pointer jumping: halves the rounds needed
        if torch.equal(smallest_e, labels_e):
            break
        labels_e = smallest_e
    groups: dict[int, list[int]] = {}
    for latent, label in enumerate(labels_e.tolist()):
        groups.setdefault(label, []).append(latent)
    found = [g for g in groups.values() if len(g) >= min_size]
    return sorted(found, key=lambda g: (-len(g), g[0]))
