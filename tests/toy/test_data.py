"""The vectorized generator against a plain loop, and the sampling rules of SPEC §1."""

from __future__ import annotations

import pytest
import torch

from pivotal_sae.toy import data
from pivotal_sae.toy.data import (
    ToyFeatures,
    assemble,
    draw_choices,
    make_features,
    sample_batch,
    sum_features,
)


def fresh_seed() -> int:
    return int(torch.randint(0, 2**31 - 1, ()).item())


def assemble_reference(features: ToyFeatures, parents, slots, parent_only):
    """One row, one active parent at a time."""
    batch, n_children = parents.shape[0], features.n_children
    x = torch.zeros(batch, features.parents_AM.shape[1])
    parent_on = torch.zeros(batch, features.n_parents, dtype=torch.bool)
    child_on = torch.zeros(batch, features.n_parents * n_children, dtype=torch.bool)
    for b in range(batch):
        for j in range(parents.shape[1]):
            a, s = int(parents[b, j]), int(slots[b, j])
            parent_on[b, a] = True
            x[b] += features.parents_AM[a]
            if not parent_only[b, j]:
                x[b] += features.perturbations_ANM[a, s]
                child_on[b, a * n_children + s] = True
    return x, parent_on, child_on


@pytest.mark.parametrize(
    ("n_children", "dataset_k", "parent_only_prob"), [(2, 3, 0.0), (3, 4, 0.3)]
)
def test_generator_matches_plain_loop(n_children, dataset_k, parent_only_prob):
    rng = torch.Generator().manual_seed(torch.seed() % 2**31)
    features = make_features(12, n_children, 7, 0.4, rng)
    choices = draw_choices(64, 12, n_children, dataset_k, parent_only_prob, rng)
    batch = assemble(features, choices)
    x, parent_on, child_on = assemble_reference(features, *choices)
    torch.testing.assert_close(batch.x_BM, x)
    assert torch.equal(batch.parent_on_BA, parent_on)
    assert torch.equal(batch.child_on_BC, child_on)
    torch.testing.assert_close(sum_features(features, choices), x)


def test_features_have_the_planted_geometry():
    features = make_features(5, 3, 11, 0.25, torch.Generator().manual_seed(0))
    torch.testing.assert_close(features.parents_AM.norm(dim=-1), torch.ones(5))
    torch.testing.assert_close(features.perturbations_ANM.norm(dim=-1), torch.full((5, 3), 0.25))
    children = features.children_CM.view(5, 3, 11)
    torch.testing.assert_close(
        children[2, 1], features.parents_AM[2] + features.perturbations_ANM[2, 1]
    )


def test_choices_are_distinct_uniform_and_respect_parent_only_prob():
    rng = torch.Generator().manual_seed(3)
    choices = draw_choices(20_000, 6, 2, 3, 0.3, rng)
    sorted_parents = choices.parents_BK.sort(dim=1).values
    assert (sorted_parents[:, 1:] != sorted_parents[:, :-1]).all(), "parents of a row must differ"
    per_parent = (
        torch.bincount(choices.parents_BK.flatten(), minlength=6) / choices.parents_BK.numel()
    )
    torch.testing.assert_close(per_parent, torch.full((6,), 1 / 6), atol=0.01, rtol=0)
    assert abs(choices.child_slots_BK.float().mean().item() - 0.5) < 0.01
    assert abs(choices.parent_only_BK.float().mean().item() - 0.3) < 0.01


def test_stream_is_reproducible_from_generator_state():
    features = make_features(8, 2, 5, 0.4, torch.Generator().manual_seed(1))
    rng = torch.Generator().manual_seed(7)
    sample_batch(features, 10, 2, 0.0, rng)
    state = rng.get_state()
    first = sample_batch(features, 10, 2, 0.0, rng)
    rng.set_state(state)
    again = sample_batch(features, 10, 2, 0.0, rng)
    assert torch.equal(first.x_BM, again.x_BM)


@pytest.mark.parametrize("tabulated", [True, False])
def test_every_parent_subset_is_equally_likely(tabulated, monkeypatch):
    """Both ways of drawing a row's parents: a row of the table of all subsets, and (past the
    table's size limit) the k smallest of uniform keys."""
    monkeypatch.setattr(data, "MAX_TABULATED_SUBSETS", 10 if tabulated else 9)
    data.parent_subsets.cache_clear()
    try:
        assert (data.parent_subsets(5, 2) is not None) == tabulated
        choices = draw_choices(60_000, 5, 2, 2, 0.0, torch.Generator().manual_seed(fresh_seed()))
    finally:
        data.parent_subsets.cache_clear()
    low, high = choices.parents_BK.sort(dim=1).values.unbind(1)
    assert (low < high).all()
    counts = torch.bincount(low * 5 + high, minlength=25)
    pairs = [a * 5 + b for a in range(5) for b in range(a + 1, 5)]
    # 6,000 expected per subset; a binomial's standard deviation there is about 73.
    assert counts[pairs].sub(6000).abs().max() < 400, counts[pairs]
    assert counts.sum() == counts[pairs].sum()
