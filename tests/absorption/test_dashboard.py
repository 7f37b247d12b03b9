"""Each dashboard panel's numbers against a plain loop over a small hand-made sample."""

from __future__ import annotations

import math

import pytest
import torch

from pivotal_sae.absorption import dashboard as d
from pivotal_sae.absorption.association import association_of_pair, cooccurrence_clusters


@pytest.fixture(scope="module")
def sample_parts():
    """Two batches of 3 contexts × 7 positions, 5 latents; the last two positions of row 1 are
    padding and position 0 (BOS) never counts."""
    g = torch.Generator().manual_seed(3)
    parts = []
    for _ in range(2):
        acts = torch.rand(3, 7, 5, generator=g)
        acts[acts < 0.55] = 0.0
        ids = torch.randint(10, 16, (3, 7), generator=g)
        ids[1, 5:] = -1
        counted = ids >= 0
        counted[:, 0] = False
        parts.append((acts, ids, counted))
    return parts


@pytest.fixture(scope="module")
def sample(sample_parts):
    return d.ActivationSample.from_batches(sample_parts, 5)


def firings(sample_parts, latent):
    """(context, position, token id, value) of every counted non-zero activation, plain loops."""
    out = []
    for part, (acts, ids, counted) in enumerate(sample_parts):
        for n in range(acts.shape[0]):
            for s in range(acts.shape[1]):
                if counted[n, s] and acts[n, s, latent] > 0:
                    out.append((part * 3 + n, s, int(ids[n, s]), float(acts[n, s, latent])))
    return out


@pytest.mark.parametrize("latent", range(5))
def test_the_histogram_counts_each_firing_once_in_its_bin(sample, sample_parts, latent):
    hist = d.activation_histogram(sample, latent, n_bins=4)
    values = [f[3] for f in firings(sample_parts, latent)]
    counted = sum(int(c.sum()) for _, _, c in sample_parts)
    assert hist.silent == counted - len(values)
    top = max(values)
    expected = [0] * 4
    for v in values:
        expected[min(3, math.floor(v / (top / 4)))] += 1
    assert hist.counts == expected
    assert hist.edges[0] == 0 and hist.edges[-1] == pytest.approx(top)


@pytest.mark.parametrize("latent", range(5))
def test_top_tokens_count_and_average_by_token(sample, sample_parts, latent):
    by_token: dict[int, list[float]] = {}
    for _, _, token, value in firings(sample_parts, latent):
        by_token.setdefault(token, []).append(value)
    expected = sorted(
        ((t, len(v), sum(v) / len(v)) for t, v in by_token.items()),
        key=lambda x: (-x[1], -x[2], x[0]),
    )[:3]
    got = d.top_tokens(sample, latent, k=3)
    assert [(s.token_id, s.times) for s in got] == [(t, c) for t, c, _ in expected]
    assert [s.mean_activation for s in got] == pytest.approx([m for _, _, m in expected])


def test_quantile_bands_split_the_firings_by_rank_strongest_first(sample, sample_parts):
    values = sorted((f[3] for f in firings(sample_parts, 2)), reverse=True)
    bands = d.quantile_examples(sample, 2, n_bands=3, per_band=2, before=2, after=1)
    n = len(values)
    for b, band in enumerate(bands):
        chunk = values[b * n // 3 : (b + 1) * n // 3]
        assert (band.high, band.low) == pytest.approx((chunk[0], chunk[-1]))
        assert band.share == pytest.approx(len(chunk) / n)
        assert band.examples[0].activation == pytest.approx(chunk[0])
        for window in band.examples:
            assert band.low <= window.activation <= band.high
            assert window.acts[window.center] == window.activation
            assert all(t >= 0 for t in window.token_ids)  # padding is cut off


def test_a_window_shows_the_latents_activation_at_each_token(sample, sample_parts):
    context, position, _, value = firings(sample_parts, 1)[0]
    window = d.window_at(sample, 1, context * 7 + position, before=3, after=2)
    acts, ids, counted = sample_parts[context // 3]
    row = context % 3
    first = max(0, position - 3)
    expected_ids = [int(t) for t in ids[row, first : position + 3] if t >= 0]
    assert window.token_ids == expected_ids
    assert window.center == position - first and window.activation == pytest.approx(value)
    for k, s in enumerate(range(first, first + len(expected_ids))):
        truth = float(acts[row, s, 1]) if counted[row, s] else 0.0
        assert window.acts[k] == pytest.approx(truth)


def test_reader_effects_are_mean_effects_split_by_sign():
    effects_eE = torch.tensor([[6.0, -3.0, 0.0, 1.5], [1.0, 1.0, 1.0, 1.0]])
    how_often_e = torch.tensor([3, 0])
    lowered, raised = d.reader_effects(effects_eE, how_often_e, 0, k=2)
    assert lowered == [d.Moved(0, 2.0), d.Moved(3, 0.5)]
    assert raised == [d.Moved(1, -1.0)]
    assert d.reader_effects(effects_eE, how_often_e, 1) is None


def test_correlated_latents_match_the_scalar_reference():
    c = torch.tensor([[50, 20, 0, 5], [20, 40, 1, 9], [0, 1, 10, 0], [5, 9, 0, 30]])
    got = d.correlated_latents(c[1], c.diagonal(), 1, tokens=1000, k=5)
    assert [p.latent for p in got] == [0, 3, 2]  # by Jaccard: 20/70, 9/61, 1/49; itself out
    for p in got:
        ref = association_of_pair(int(c[1, p.latent]), 40, int(c[p.latent, p.latent]), 1000)
        assert (p.jaccard, p.lift, p.pmi) == pytest.approx(
            (ref["jaccard"], ref["lift"], ref["pmi"])
        )
        assert (p.lift_low, p.lift_high) == pytest.approx((ref["low"], ref["high"]))


def test_logit_effects_rank_tokens_by_unembedding_dot_direction():
    unembed_VM = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.5, 0.5], [0.0, -2.0]])
    promoted, suppressed = d.logit_effects(torch.tensor([2.0, 1.0]), unembed_VM, k=2)
    assert promoted == [d.LogitEffect(0, 2.0), d.LogitEffect(3, 1.5)]
    assert suppressed == [d.LogitEffect(2, -2.0), d.LogitEffect(4, -2.0)]


def test_clusters_are_the_components_of_the_jaccard_graph():
    # 0-1 and 1-2 fire together (a chain), 3-4 together, 5 alone, 6 never fires.
    f = [10, 10, 10, 10, 10, 10, 0]
    c = torch.diag(torch.tensor(f))
    for a, b, n in [(0, 1, 8), (1, 2, 6), (3, 4, 9), (0, 5, 1)]:
        c[a, b] = c[b, a] = n
    assert cooccurrence_clusters(c, threshold=0.4) == [[0, 1, 2], [3, 4]]
    assert cooccurrence_clusters(c, threshold=0.6) == [[0, 1], [3, 4]]
    assert cooccurrence_clusters(c, threshold=0.6, min_size=1)[-1] == [6]
