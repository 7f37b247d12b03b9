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
