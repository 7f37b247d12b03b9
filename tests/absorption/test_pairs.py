"""Effect and decoder pairs against per-row loops; sign cosines match bit for bit."""

from __future__ import annotations

import pytest
import torch

from pivotal_sae.absorption.cooccurrence import DenseCooccurrence, SparseCooccurrence
from pivotal_sae.absorption.pairs import find_decoder_pairs, find_effect_pairs, poisson_cdf
from pivotal_sae.errors import UserError

from .conftest import sparse_acts
from .references import assert_same_ranking_up_to_ties, decoder_pairs_loop, effect_pairs_loop

E_ABL, E_READ = 45, 26


def setup(generator: torch.Generator):
    effects_eE = torch.randn(E_ABL, E_READ, generator=generator)
    effects_eE *= torch.rand(E_ABL, E_READ, generator=generator) < 0.35
    effects_eE[4] = 0  # ablated, but no effect: cosine 0 with everything
    effects_eE[9] = effects_eE[12] * 3  # identical signs
    how_often_e = torch.randint(0, 4, (E_ABL,), generator=generator)
    how_often_e[[4, 9, 12]] = 2
    counter = DenseCooccurrence(E_ABL)
    counter.update(sparse_acts(400, E_ABL, 0.04, generator))
    return effects_eE, how_often_e, counter


@pytest.mark.parametrize("sign", [True, False])
@pytest.mark.parametrize("just_these", [None, [9, 4, 30, 12]])
@pytest.mark.parametrize(("cooc", "cos"), [(0, 0.0), (2, -0.3), (1000, 0.25)])
def test_effect_pairs_match_loop(sign, just_these, cooc, cos, generator):
    effects_eE, how_often_e, counter = setup(generator)
    expected = effect_pairs_loop(
        effects_eE, how_often_e, counter.to_dense(), cooc, cos, just_these, sign
    )
    for block in (8, 4096):
        found = find_effect_pairs(
            effects_eE,
            how_often_e,
            counter,
            cooccurrence_threshold=cooc,
            cosine_sim_threshold=cos,
            just_these=just_these,
            skip_torch_sign=not sign,
            max_pairs=None,
            block=block,
        )
        got = [(p.latent_a, p.latent_b) for p in found.pairs]
        if sign:
            # Integer dot products: the very same floats, so the very same order.
            assert got == [x[1:] for x in expected]
            assert [p.cosine for p in found.pairs] == [x[0] for x in expected]
        else:
            # fp32 products: equal within rounding; near-ties (the planted rows) may swap.
            assert sorted(got) == sorted(x[1:] for x in expected)
            reference = {x[1:]: x[0] for x in expected}
            for pair in found.pairs:
                assert pair.cosine == pytest.approx(
                    reference[pair.latent_a, pair.latent_b], abs=1e-6
                )
            cosines = [p.cosine for p in found.pairs]
            assert cosines == sorted(cosines, reverse=True)
        assert found.n_matching == len(expected)


@pytest.mark.parametrize("min_ablations", [2, 3])
def test_min_ablations_leaves_out_rarely_ablated_latents(min_ablations, generator):
    effects_eE, how_often_e, counter = setup(generator)
    expected = effect_pairs_loop(effects_eE, how_often_e, counter.to_dense(), 0, 0.0, None, True,
                                 min_ablations)  # fmt: skip
    found = find_effect_pairs(effects_eE, how_often_e, counter, max_pairs=None, block=8,
                              min_ablations=min_ablations)  # fmt: skip
    assert [(p.latent_a, p.latent_b) for p in found.pairs] == [x[1:] for x in expected]
    assert found.n_rows == int((how_often_e >= min_ablations).sum()) < int((how_often_e > 0).sum())


def test_pair_fields_and_cap(generator):
    effects_eE, how_often_e, counter = setup(generator)
    full = find_effect_pairs(
        effects_eE, how_often_e, counter, cooccurrence_threshold=3, max_pairs=None, block=8
    )
    capped = find_effect_pairs(
        effects_eE, how_often_e, counter, cooccurrence_threshold=3, max_pairs=7, block=8
    )
    assert capped.pairs == full.pairs[:7]
    assert capped.n_matching == full.n_matching == len(full.pairs)
    cooc_ee = counter.to_dense()
    n = counter.tokens_counted
    for pair in full.pairs:
        a, b = pair.latent_a, pair.latent_b
        assert how_often_e[a] > 0 and how_often_e[b] > 0
        assert pair.cooccurrence == cooc_ee[a, b] <= 3
        assert (pair.firing_a, pair.firing_b) == (cooc_ee[a, a], cooc_ee[b, b])
        assert pair.expected_cooccurrence == pytest.approx(
            int(cooc_ee[a, a]) * int(cooc_ee[b, b]) / n
        )
        assert (pair.ablations_a, pair.ablations_b) == (how_often_e[a], how_often_e[b])
    assert any({p.latent_a, p.latent_b} == {9, 12} and p.cosine == 1.0 for p in full.pairs) or (
        cooc_ee[9, 12] > 3
    )


def test_other_cooccurrence_sources_agree(generator):
    effects_eE, how_often_e, counter = setup(generator)
    rebuilt = SparseCooccurrence(E_ABL)
    cooc_ee = counter.to_dense()
    i, j = torch.triu_indices(E_ABL, E_ABL, 1)
    keep = cooc_ee[i, j] > 0
    keys, counts = (i * E_ABL + j)[keep], cooc_ee[i, j][keep]
    state = counter.state_dict()
    rebuilt.load_state_dict(
        {**state, "cooccurrences_ee_keys": keys, "cooccurrences_ee_counts": counts}
    )
    reference = find_effect_pairs(effects_eE, how_often_e, counter, cooccurrence_threshold=1)
    for source, tokens in ((rebuilt, None), (cooc_ee, counter.tokens_counted)):
        found = find_effect_pairs(
            effects_eE, how_often_e, source, tokens_counted=tokens, cooccurrence_threshold=1
        )
        assert found.pairs == reference.pairs


@pytest.mark.parametrize(("top_n", "cooc", "min_firing"), [(10, 0, 1), (1000, 3, 0)])
def test_decoder_pairs_match_loop(top_n, cooc, min_firing, generator):
    W_dec_EM = torch.randn(E_ABL, 12, generator=generator)
    counter = DenseCooccurrence(E_ABL)
    counter.update(sparse_acts(300, E_ABL, 0.05, generator))
    expected = decoder_pairs_loop(W_dec_EM, counter.to_dense(), top_n, cooc, min_firing)
    found = find_decoder_pairs(
        W_dec_EM, counter, top_n=top_n, cooccurrence_threshold=cooc, min_firing=min_firing, block=9
    )
    got = [(p.cosine, p.latent_a, p.latent_b) for p in found.pairs]
    assert_same_ranking_up_to_ties(got, expected, tol=1e-6)


def test_bad_inputs_are_user_errors(generator):
    effects_eE, how_often_e, counter = setup(generator)
    with pytest.raises(UserError, match="different SAEs"):
        find_effect_pairs(effects_eE[:-1], how_often_e[:-1], counter)
    with pytest.raises(UserError, match="just-these"):
        find_effect_pairs(effects_eE, how_often_e, counter, just_these=[E_ABL])
    with pytest.raises(UserError, match="how_often"):
        find_effect_pairs(effects_eE, how_often_e[:-1], counter)
    with pytest.raises(UserError, match="different SAEs"):
        find_decoder_pairs(torch.randn(E_ABL + 1, 3), counter)


def test_poisson_cdf():
    observed = torch.tensor([0, 3, 0, 5000])
    mean = torch.tensor([2.0, 2.0, 0.0, 5000.0])
    p = poisson_cdf(observed, mean).tolist()
    assert p[:3] == pytest.approx([0.1353352832, 0.8571234605, 1.0])
    assert p[3] == pytest.approx(0.5, abs=0.01)
