"""Top activating examples against a per-context, per-latent loop."""

from __future__ import annotations

import pytest
import torch

from pivotal_sae.absorption.examples import TopExamples
from pivotal_sae.errors import UserError

from .references import top_examples_loop

D_SAE, S = 21, 11


def batches(generator: torch.Generator, n_batches: int = 4, b: int = 3):
    """Contexts with padding at the end of some and an uncounted first position (BOS)."""
    out, next_id = [], 0
    for _ in range(n_batches):
        acts_BSE = torch.relu(torch.randn(b, S, D_SAE, generator=generator) - 0.7)
        ids_BS = torch.randint(0, 1000, (b, S), generator=generator)
        attention_BS = torch.ones(b, S, dtype=torch.bool)
        attention_BS[0, -3:] = False
        acts_BSE[0, -3:] = 0
        count_BS = attention_BS.clone()
        count_BS[:, 0] = False
        out.append((acts_BSE, ids_BS, count_BS, torch.arange(next_id, next_id + b), attention_BS))
        next_id += b
    return out


def as_tuples(held: TopExamples, latent: int):
    return [
        (-x.max_act, x.context_id, x.position, x.token_ids, x.acts)
        for x in held.examples_for(latent)
    ]


def assert_same(held: TopExamples, expected) -> None:
    for latent in range(D_SAE):
        got = as_tuples(held, latent)
        want = expected[latent]
        assert [g[1:4] for g in got] == [w[1:4] for w in want], latent
        for g, w in zip(got, want, strict=True):
            assert g[0] == pytest.approx(w[0], abs=1e-6)
            assert g[4] == pytest.approx(w[4], abs=1e-6)


@pytest.mark.parametrize(("n", "before", "after"), [(1, 0, 0), (3, 2, 3), (20, 4, 1)])
def test_matches_loop(n, before, after, generator):
    data = batches(generator)
    held = TopExamples(D_SAE, n, before, after)
    for batch in data:
        held.update(*batch)
    assert_same(held, top_examples_loop(data, D_SAE, n, before, after))
    for example in held.examples_for(0):
        assert example.center == before and len(example.token_ids) == before + 1 + after


def test_merge_and_state_round_trip(generator):
    data = batches(generator, n_batches=6)
    whole, first, second = (TopExamples(D_SAE, 4, 2, 2) for _ in range(3))
    for i, batch in enumerate(data):
        whole.update(*batch)
        (first if i % 2 else second).update(*batch)
    restored = TopExamples.from_state_dict(first.state_dict())
    restored.merge_(second)
    for name, tensor in whole.state_dict().items():
        assert torch.equal(restored.state_dict()[name], tensor), name


def test_bad_state_and_merge():
    with pytest.raises(UserError):
        TopExamples.from_state_dict({"max_acts_EK": torch.zeros(2, 2)})
    with pytest.raises(UserError):
        TopExamples(5).merge_(TopExamples(6))
    state = TopExamples(5, 2, 1, 1).state_dict()
    state["acts_EKW"] = torch.zeros(5, 2, 4)
    with pytest.raises(UserError, match="acts_EKW"):
        TopExamples.from_state_dict(state)
