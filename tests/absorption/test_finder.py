"""The `partial` finder against a loop over pairs, and its evidence."""

from __future__ import annotations

import math

import pytest
import torch

from pivotal_sae.absorption.cooccurrence import DenseCooccurrence
from pivotal_sae.absorption.finder import find_partial_pairs, poisson_sf, wilson_interval
from pivotal_sae.absorption.pairs import poisson_cdf
from pivotal_sae.errors import UserError

from .references import cooccurrence_loop, partial_pairs_loop


def random_case(seed: int, e: int = 48, m: int = 16, tokens: int = 400):
    g = torch.Generator().manual_seed(seed)
    W_dec_EM = torch.randn(e, m, generator=g)
    W_dec_EM[3] = W_dec_EM[7] + 0.3 * torch.randn(m, generator=g)  # an alike pair
    acts_TE = torch.rand(tokens, e, generator=g) * (torch.rand(tokens, e, generator=g) < 0.08)
    acts_TE[:, 11] = 0.0  # a dead latent
    return W_dec_EM, acts_TE


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("exponent", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("neighbours_first", [True, False])
def test_partial_pairs_match_a_loop_over_pairs(
    seed: int, exponent: float, neighbours_first: bool
) -> None:
    W_dec_EM, acts_TE = random_case(seed)
    counter = DenseCooccurrence(acts_TE.shape[1], "cpu")
    counter.update(acts_TE, contexts=1)
    cooc_ee = cooccurrence_loop(acts_TE)
    for block in (7, 4096):  # tiles that cut the matrix unevenly, and one tile
        search = find_partial_pairs(W_dec_EM, counter, exponent=exponent, min_firing=5,
                                    max_pairs=40, block=block,
                                    neighbours_first=neighbours_first)  # fmt: skip
        expected, n_scored = partial_pairs_loop(W_dec_EM, cooc_ee, exponent, 5, 40,
                                                neighbours_first)  # fmt: skip
        assert search.n_scored == n_scored
        assert len(search.pairs) == len(expected)
        assert search.settings["neighbours_first"] is neighbours_first
        # with neighbours first the flagged pairs lead the list; the flag is set either way
        flags = [p.nearest_neighbours for p in search.pairs]
        assert any(flags)
        assert (flags == sorted(flags, reverse=True)) is neighbours_first
        for pair, (score, i, j, parent, absorber, near) in zip(search.pairs, expected,
                                                               strict=True):  # fmt: skip
            assert pair.nearest_neighbours is near
            assert (pair.parent, pair.absorber) == (parent, absorber)
            assert pair.score == pytest.approx(score, rel=1e-5, abs=1e-6)
            assert pair.cooccurrence == int(cooc_ee[i, j])
            assert pair.firing_parent == int(cooc_ee[parent, parent])
            assert pair.p_parent_given_absorber == pytest.approx(
                int(cooc_ee[i, j]) / int(cooc_ee[absorber, absorber])
            )
            assert pair.p_parent_given_absorber_low <= pair.p_parent_given_absorber
            assert pair.p_parent_given_absorber <= pair.p_parent_given_absorber_high
            assert 0 <= pair.p_cofire_by_chance <= pair.q_cofire <= 1
        assert all(11 not in (p.parent, p.absorber) for p in search.pairs)
        assert [p.q_cofire for p in search.pairs] == pytest.approx(
            q_values_loop(search.pairs, W_dec_EM, cooc_ee, len(acts_TE), 5), rel=1e-9
        )
        assert all(p.expected_given_tokens is None for p in search.pairs)  # no token ids fed


def q_values_loop(pairs, W_dec_EM, cooc_ee, tokens, min_firing):
    """Every scored pair's Poisson p-value (the finder's gates), then for each reported pair
    p · m / #(p' <= p), made monotone over the reported pairs."""
    firing = cooc_ee.diagonal().tolist()
    unit = torch.nn.functional.normalize(W_dec_EM.double(), dim=1)
    p_all = []
    for i in range(len(firing)):
        for j in range(i + 1, len(firing)):
            cos = float(unit[i] @ unit[j])
            if min(firing[i], firing[j]) >= min_firing and cooc_ee[i, j] > 0 and cos > 0:
                mean = torch.tensor([firing[i] * firing[j] / tokens], dtype=torch.float64)
                p_all.append(float(poisson_sf(cooc_ee[i, j].reshape(1), mean)))
    m = len(p_all)
    q = [min(1.0, p.p_cofire_by_chance * m / sum(x <= p.p_cofire_by_chance for x in p_all))
         for p in pairs]  # fmt: skip
    return [min(q[k] for k in range(len(pairs))
                if pairs[k].p_cofire_by_chance >= pair.p_cofire_by_chance)
            for pair in pairs]  # fmt: skip


def test_the_gates_keep_out_pairs_that_never_cofire_or_point_apart() -> None:
    W_dec_EM = torch.tensor([[1.0, 0.0], [0.9, 0.1], [-1.0, 0.0], [0.0, 1.0]])
    acts_TE = torch.zeros(20, 4)
    acts_TE[:10, 0] = 1.0
    acts_TE[5:15, 1] = 1.0  # co-fires with 0 on 5 tokens
    acts_TE[:10, 2] = 1.0  # co-fires with 0 always, but points the other way
    acts_TE[15:, 3] = 1.0  # never co-fires with anyone
    search = find_partial_pairs(W_dec_EM, cooccurrence_loop(acts_TE), tokens_counted=20,
                                min_firing=1)  # fmt: skip
    assert [(p.parent, p.absorber) for p in search.pairs] == [(0, 1)]
    (pair,) = search.pairs
    assert pair.score == pytest.approx(0.9 / math.hypot(0.9, 0.1) * 0.5**0.5)


def test_wilson_interval_and_poisson_tail_known_values() -> None:
    low, high = wilson_interval(torch.tensor([5]), torch.tensor([10]))
    assert float(low) == pytest.approx(0.2366, abs=1e-4)  # textbook value for 5 of 10
    assert float(high) == pytest.approx(0.7634, abs=1e-4)
    # P(X >= 3 | mean 1) = 1 - e^-1 (1 + 1 + 1/2)
    assert float(poisson_sf(torch.tensor([3]), torch.tensor([1.0]))) == pytest.approx(
        1 - math.exp(-1) * 2.5
    )
    assert float(poisson_sf(torch.tensor([0]), torch.tensor([2.0]))) == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"exponent": -1.0}, "--partial-exponent"),
        ({"exponent": math.nan}, "--partial-exponent"),
        ({"min_firing": 0}, "--min-firing"),
        ({"max_pairs": 0}, "--max-pairs"),
    ],
)
def test_bad_settings_are_refused_in_one_line(kwargs, message) -> None:
    W_dec_EM, acts_TE = random_case(0, e=12)
    with pytest.raises(UserError, match=message):
        find_partial_pairs(W_dec_EM, cooccurrence_loop(acts_TE), tokens_counted=400, **kwargs)


def test_token_conditioned_evidence_when_the_counts_kept_token_ids() -> None:
    from .test_token_firing import case, token_expectation_loop

    acts_TE, ids_T = case(5, e=10)
    counter = DenseCooccurrence(10, "cpu")
    counter.update(acts_TE, contexts=1, token_ids_T=ids_T)
    W_dec_EM = torch.randn(10, 4, generator=torch.Generator().manual_seed(0)).abs()  # all alike
    search = find_partial_pairs(W_dec_EM, counter, min_firing=1, max_pairs=10)
    assert search.pairs
    for pair in search.pairs:
        expected = token_expectation_loop(acts_TE, ids_T, pair.parent, pair.absorber)
        assert pair.expected_given_tokens == pytest.approx(expected, rel=1e-12)
        assert pair.p_fewer_given_tokens == pytest.approx(
            float(poisson_cdf(torch.tensor([pair.cooccurrence]), torch.tensor([expected])))
        )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_benchmark_nearest_first_against_a_loop(seed) -> None:
    """benchmarks/absorption_finders.py's candidate reordering: pairs holding a latent's nearest
    decoder neighbour first, each part keeping the list's order."""
    from benchmark_loader import load_benchmark

    bench = load_benchmark("absorption_finders")
    g = torch.Generator().manual_seed(seed)
    W_dec_EM = torch.randn(30, 8, generator=g, dtype=torch.float64)
    ranked = [(i, j) for i in range(30) for j in range(i + 1, 30)]
    ranked = [ranked[k] for k in torch.randperm(len(ranked), generator=g).tolist()]
    nearest = []
    for i in range(30):
        best, best_cos = -1, -2.0
        for j in range(30):
            if j != i:
                cos = float(torch.cosine_similarity(W_dec_EM[i], W_dec_EM[j], dim=0))
                if cos > best_cos:
                    best, best_cos = j, cos
        nearest.append(best)
    is_near = [nearest[a] == b or nearest[b] == a for a, b in ranked]
    expected = [p for p, near in zip(ranked, is_near, strict=True) if near]
    expected += [p for p, near in zip(ranked, is_near, strict=True) if not near]
    got = bench.nearest_first(ranked, W_dec_EM)
    assert got == expected
    assert 0 < sum(is_near) < len(ranked)


@pytest.mark.parametrize("n", [0, 1, 2, 23])
def test_nearest_neighbours_in_uneven_tiles_against_a_loop(n: int) -> None:
    """Each row's most alike other row, ties to the lowest index, whatever the tiling."""
    from pivotal_sae.absorption.finder import nearest_neighbours

    g = torch.Generator().manual_seed(n)
    unit_lM = torch.nn.functional.normalize(torch.randn(n, 5, generator=g), dim=1)
    if n > 3:
        unit_lM[3] = unit_lM[1]  # twins: every other row ties between 1 and 3 (1 wins)
    expected = []
    for i in range(n):
        best, best_cos = i, -math.inf
        for j in range(n):
            if j != i and float(unit_lM[i] @ unit_lM[j]) > best_cos:
                best, best_cos = j, float(unit_lM[i] @ unit_lM[j])
        expected.append(best)
    for block in (1, 4, 7, 4096):
        assert nearest_neighbours(unit_lM, block).tolist() == expected
