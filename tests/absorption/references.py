"""Plain-loop reference implementations that the vectorized code must match exactly."""

from __future__ import annotations

import math

import pytest
import torch


def cooccurrence_loop(acts_TE: torch.Tensor) -> torch.Tensor:
    """One token at a time, one pair at a time."""
    e = acts_TE.shape[1]
    counts = [[0] * e for _ in range(e)]
    for token in acts_TE.tolist():
        active = [i for i, value in enumerate(token) if value > 0]
        for i in active:
            for j in active:
                counts[i][j] += 1
    return torch.tensor(counts, dtype=torch.int64)


def top_examples_loop(batches, d_sae: int, n: int, before: int, after: int) -> dict[int, list]:
    """Per latent, all contexts' (−max, context id, position, tokens, acts), best n kept."""
    best: dict[int, list] = {e: [] for e in range(d_sae)}
    for acts_BSE, ids_BS, count_BS, context_ids_B, attention_BS in batches:
        b_size, s_size, _ = acts_BSE.shape
        for b in range(b_size):
            for e in range(d_sae):
                peak, where = 0.0, -1
                for s in range(s_size):
                    value = float(acts_BSE[b, s, e])
                    if count_BS[b, s] and value > peak:
                        peak, where = value, s
                if where < 0:
                    continue
                tokens, acts = [], []
                for s in range(where - before, where + after + 1):
                    if 0 <= s < s_size and attention_BS[b, s]:
                        tokens.append(int(ids_BS[b, s]))
                        acts.append(float(acts_BSE[b, s, e]))
                    else:
                        tokens.append(-1)
                        acts.append(0.0)
                best[e].append((-peak, int(context_ids_B[b]), where, tokens, acts))
    return {e: sorted(entries, key=lambda x: (x[0], x[1]))[:n] for e, entries in best.items()}


def sign_cosine(x: list[float], y: list[float]) -> float:
    sx = [(v > 0) - (v < 0) for v in x]
    sy = [(v > 0) - (v < 0) for v in y]
    dot = sum(a * b for a, b in zip(sx, sy, strict=True))
    n = sum(a != 0 for a in sx) * sum(b != 0 for b in sy)
    return dot / math.sqrt(n) if n else 0.0


def raw_cosine(x: list[float], y: list[float]) -> float:
    nx = math.sqrt(sum(v * v for v in x))
    ny = math.sqrt(sum(v * v for v in y))
    if nx == 0 or ny == 0:
        return 0.0
    return sum(a * b for a, b in zip(x, y, strict=True)) / (nx * ny)


def effect_pairs_loop(
    effects_eE, how_often_e, cooccurrences_ee, cooc_threshold, cos_threshold, just_these, sign,
    min_ablations=1,
):  # fmt: skip
    """Every row against every other row, as the original did, each unordered pair once."""
    rows = effects_eE.double().tolist()
    how = how_often_e.tolist()
    cooc = cooccurrences_ee.tolist()
    chosen = set(just_these) if just_these is not None else None
    found = []
    for i in range(len(rows)):
        for j in range(len(rows)):
            if i == j or how[i] < min_ablations or how[j] < min_ablations or 0 in (how[i], how[j]):
                continue
            if chosen is None and j < i:
                continue
            if chosen is not None and (i not in chosen or (j in chosen and j < i)):
                continue
            if cooc[i][j] > cooc_threshold:
                continue
            cos = sign_cosine(rows[i], rows[j]) if sign else raw_cosine(rows[i], rows[j])
            if cos >= cos_threshold:
                found.append((cos, i, j))
    return sorted(found, key=lambda x: (-x[0], x[1], x[2]))


def assert_same_ranking_up_to_ties(got, expected, tol: float) -> None:
    """`got` and `expected` are (cosine, i, j) lists, best first: the same list, except that
    pairs whose cosines differ by at most `tol` (float32 against float64 rounding) may swap
    places, or swap in and out at the list's end."""
    assert len(got) == len(expected)
    reference = {(i, j): cosine for cosine, i, j in expected}
    cut = expected[-1][0] if expected else 0.0
    for (cosine, i, j), (expected_cosine, *_) in zip(got, expected, strict=True):
        assert cosine == pytest.approx(expected_cosine, abs=tol)
        assert cosine == pytest.approx(reference.get((i, j), cut), abs=tol)
    assert len({(i, j) for _, i, j in got}) == len(got)
    assert sum((i, j) not in reference for _, i, j in got) <= sum(
        abs(c - cut) <= tol for c, *_ in expected
    )


def decoder_pairs_loop(W_dec_EM, cooccurrences_ee, top_n, cooc_threshold, min_firing):
    rows = W_dec_EM.double().tolist()
    cooc = cooccurrences_ee.tolist()
    found = []
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            if cooc[i][i] < min_firing or cooc[j][j] < min_firing:
                continue
            if cooc[i][j] <= cooc_threshold:
                found.append((raw_cosine(rows[i], rows[j]), i, j))
    return sorted(found, key=lambda x: (-x[0], x[1], x[2]))[:top_n]


def partial_pairs_loop(W_dec_EM, cooccurrences_ee, exponent, min_firing, max_pairs,
                       neighbours_first=False):  # fmt: skip
    """The `partial` finder one pair at a time, in float64: (score, i, j, parent, absorber,
    near), near: one latent is the other's nearest decoder neighbour among the latents firing
    at least `min_firing` times. With `neighbours_first` those pairs come first."""
    rows = [[float(v) for v in row] for row in W_dec_EM.tolist()]
    norms = [math.sqrt(sum(v * v for v in row)) for row in rows]
    counts = cooccurrences_ee.tolist()
    firing = [counts[i][i] for i in range(len(rows))]

    def cosine(i, j):
        if norms[i] == 0 or norms[j] == 0:
            return 0.0
        return sum(x * y for x, y in zip(rows[i], rows[j], strict=True)) / norms[i] / norms[j]

    alive = [i for i in range(len(rows)) if firing[i] >= min_firing]
    nearest = {}
    for i in alive:
        best, best_cos = None, -math.inf
        for j in alive:
            if j != i and cosine(i, j) > best_cos:
                best, best_cos = j, cosine(i, j)
        nearest[i] = best
    found = []
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            if firing[i] < min_firing or firing[j] < min_firing or counts[i][j] <= 0:
                continue
            if norms[i] == 0 or norms[j] == 0:
                continue
            cos = cosine(i, j)
            if cos <= 0:
                continue
            unshared = 1 - counts[i][j] / max(firing[i], firing[j])
            score = cos * max(unshared, 0.0) ** exponent
            parent, absorber = (i, j) if firing[i] >= firing[j] else (j, i)
            near = nearest[i] == j or nearest[j] == i
            found.append((score, i, j, parent, absorber, near))
    found.sort(key=lambda t: (not (neighbours_first and t[5]), -t[0], t[1], t[2]))
    return found[:max_pairs], len(found)
