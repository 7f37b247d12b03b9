"""Association measures from co-occurrence counts, against the scalar reference."""

from __future__ import annotations

import math

import torch

from pivotal_sae.absorption.association import association_of_pair, associations


def test_associations_match_the_scalar_reference(generator):
    acts_TE = (torch.rand(400, 9, generator=generator) > 0.7).float()
    acts_TE[:, 8] = 0  # a latent that never fires
    cooc_ee = acts_TE.T @ acts_TE
    f_e = acts_TE.sum(0).long()
    for latent in range(8):
        got = associations(cooc_ee[latent].long(), f_e, latent, tokens=400)
        for other in range(9):
            want = association_of_pair(int(cooc_ee[latent, other]), int(f_e[latent]),
                                       int(f_e[other]), 400)  # fmt: skip
            pairs = [(got.jaccard_e, "jaccard"), (got.lift_e, "lift"), (got.pmi_e, "pmi"),
                     (got.lift_low_e, "low"), (got.lift_high_e, "high")]  # fmt: skip
            for tensor, key in pairs:
                value = float(tensor[other])
                if math.isnan(want[key]):
                    assert math.isnan(value), (latent, other, key)
                else:
                    assert math.isclose(value, want[key], rel_tol=1e-9), (latent, other, key)


def test_independent_latents_have_lift_near_one_inside_the_interval():
    # A fixed seed: a 95 % interval misses the truth on one random draw in twenty, so a fresh
    # seed per run would fail that often.
    generator = torch.Generator().manual_seed(0)
    acts_TE = (torch.rand(200_000, 2, generator=generator) > 0.9).float()
    cooc_ee = acts_TE.T @ acts_TE
    got = associations(cooc_ee[0].long(), acts_TE.sum(0).long(), 0, tokens=200_000)
    assert 0.9 < float(got.lift_e[1]) < 1.1
    assert float(got.lift_low_e[1]) < 1 < float(got.lift_high_e[1])
    assert float(got.jaccard_e[0]) == 1.0 and abs(float(got.pmi_e[1])) < 0.1
