"""Claim: the `partial` finder scans every pair of a 65,536-latent SAE in seconds on one GPU, and
equals a row-at-a-time float64 reference.

    PYTHONPATH=src python benchmarks/partial_finder_speed.py [--latents 65536] [--dim 2304]

Data: a random decoder (latents × dim) with planted near-duplicate rows, and exact co-occurrence
counts of random top-k activations (--tokens tokens, k = --k) with correlated firing so that
alike rows co-fire. Steps:
1. equality at --check-latents latents: the tiled finder (nearest neighbours first, its
   default) against the reference (in float64, one matrix-vector product per row for each
   latent's nearest neighbour, one per row for its pairs, every pair scored, nearest-neighbour
   pairs first, sorted): same pairs in the same order, scores within 1e-5 relative;
2. speed at --latents: the tiled finder over the whole matrix (also timed without neighbours
   first), and the reference's two passes on their first --reference-rows rows, each
   extrapolated to all rows (printed as such).
"""

from __future__ import annotations

import argparse
import time

import torch

from pivotal_sae.absorption.cooccurrence import DenseCooccurrence
from pivotal_sae.absorption.finder import (
    NEIGHBOUR_BONUS,
    find_partial_pairs,
    nearest_neighbours,
    partial_score,
)


def make_case(latents: int, dim: int, tokens: int, k: int, device: torch.device, seed: int = 0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    W_dec_EM = torch.randn(latents, dim, generator=g)
    twins = torch.randperm(latents, generator=g)[: latents // 16].view(-1, 2)
    W_dec_EM[twins[:, 1]] = W_dec_EM[twins[:, 0]] + 0.5 * torch.randn(len(twins), dim, generator=g)
    W_dec_EM = W_dec_EM.to(device)
    counter = DenseCooccurrence(latents, device)
    chunk = 16_384
    for start in range(0, tokens, chunk):
        n = min(chunk, tokens - start)
        indices_TK = torch.randint(latents, (n, k), generator=g)
        # a twin's partner fires along with it on half of its tokens
        partner = torch.full((latents,), -1, dtype=torch.int64)
        partner[twins[:, 0]] = twins[:, 1]
        extra_T = partner[indices_TK[:, 0]]
        use_T = (extra_T >= 0) & (torch.rand(n, generator=g) < 0.5)
        indices_TK[use_T, 1] = extra_T[use_T]
        indices_TK = indices_TK.sort(dim=1).values
        values_TK = torch.rand(n, k, generator=g) + 0.1
        values_TK[:, 1:][indices_TK[:, 1:] == indices_TK[:, :-1]] = 0.0  # a repeat is inactive
        counter.update_sparse(values_TK.to(device), indices_TK.to(device), contexts=1)
    return W_dec_EM, counter


def alive_units(W_dec_EM, counter, min_firing):
    alive = (counter.firing_counts_e >= min_firing).nonzero()[:, 0]
    return alive, torch.nn.functional.normalize(W_dec_EM[alive].double(), dim=1)


def reference_nearest(unit, rows=None):
    """Row at a time in float64: each alive latent's nearest other alive latent (its index)."""
    nearest = torch.zeros(unit.shape[0], dtype=torch.int64, device=unit.device)
    for r in range(unit.shape[0] if rows is None else rows):
        cos = unit @ unit[r]
        cos[r] = -torch.inf
        nearest[r] = cos.argmax()
    return nearest


def reference(W_dec_EM, counter, exponent, min_firing, max_pairs, nearest, rows=None):
    """Row at a time in float64: every pair (i, j > i) of alive latents scored, pairs of nearest
    neighbours (`nearest`, by alive index) first, then sorted."""
    firing_e = counter.firing_counts_e
    alive, unit = alive_units(W_dec_EM, counter, min_firing)
    scores, firsts, seconds = [], [], []
    for r in range(alive.numel() if rows is None else rows):
        i = alive[r]
        js = alive[r + 1 :]
        cos = unit[r + 1 :] @ unit[r]
        cooc = counter.lookup(i.expand_as(js), js)
        score = partial_score(cos, cooc, firing_e[i].expand_as(js), firing_e[js], exponent)
        later = torch.arange(r + 1, alive.numel(), device=alive.device)
        near = (nearest[later] == r) | (later == nearest[r])
        ok = (cooc > 0) & (cos > 0)
        scores.append((score + NEIGHBOUR_BONUS * near)[ok])
        firsts.append(i.expand_as(js)[ok])
        seconds.append(js[ok])
    score, a, b = torch.cat(scores), torch.cat(firsts), torch.cat(seconds)
    order = torch.sort(a * 2**32 + b).indices
    order = order[torch.sort(score[order], descending=True, stable=True).indices][:max_pairs]
    near = score[order] >= NEIGHBOUR_BONUS
    return score[order] - NEIGHBOUR_BONUS * near, a[order], b[order], score.numel()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latents", type=int, default=65_536)
    parser.add_argument("--dim", type=int, default=2304)
    parser.add_argument("--tokens", type=int, default=200_000)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--check-latents", type=int, default=4096)
    parser.add_argument("--reference-rows", type=int, default=256)
    parser.add_argument("--max-pairs", type=int, default=10_000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}")

    W_dec_EM, counter = make_case(args.check_latents, args.dim, args.tokens // 4, args.k, device)
    fast = find_partial_pairs(W_dec_EM, counter, max_pairs=args.max_pairs, block=1024)
    nearest = reference_nearest(alive_units(W_dec_EM, counter, 5)[1])
    ref_score, ref_a, ref_b, ref_n = reference(W_dec_EM, counter, 0.5, 5, args.max_pairs, nearest)
    fast_pairs = [(min(p.parent, p.absorber), max(p.parent, p.absorber)) for p in fast.pairs]
    ref_pairs = list(zip(ref_a.tolist(), ref_b.tolist(), strict=True))
    ref_scores = ref_score.tolist()
    worst = max(
        (
            abs(p.score - s) / max(abs(s), 1e-12)
            for p, s in zip(fast.pairs, ref_scores, strict=True)
        ),
        default=0.0,
    )
    # fp32 cosines against float64 ones: pairs whose scores tie within that error may swap
    swapped = [i for i, (f, r) in enumerate(zip(fast_pairs, ref_pairs, strict=True)) if f != r]
    near_ties = all(
        abs(fast.pairs[i].score - ref_scores[i]) <= 1e-5 * ref_scores[i] for i in swapped
    )
    cut = ref_scores[-1] if ref_scores else 0.0
    outside = set(fast_pairs) ^ set(ref_pairs)
    edge_only = all(
        abs(p.score - cut) <= 1e-5 * cut
        for p, f in zip(fast.pairs, fast_pairs, strict=True)
        if f in outside
    )
    print(
        f"equality at {args.check_latents:,} latents: {len(fast.pairs):,} pairs, "
        f"{len(swapped)} positions differ (all near-ties within 1e-5: {near_ties}), "
        f"{len(outside) // 2} pairs differ at the cut-off (all ties there: {edge_only}); "
        f"pairs scored {fast.n_scored:,} vs {ref_n:,}; "
        f"worst relative score difference {worst:.2e}; "
        f"{sum(p.nearest_neighbours for p in fast.pairs):,} nearest-neighbour pairs first"
    )
    if not (near_ties and edge_only) or fast.n_scored != ref_n or worst > 1e-5:
        raise SystemExit("the finder and its reference disagree")

    del W_dec_EM, counter
    if device.type == "cuda":
        torch.cuda.empty_cache()
    started = time.perf_counter()
    W_dec_EM, counter = make_case(args.latents, args.dim, args.tokens, args.k, device)
    sync(device)
    print(f"built {args.latents:,} latents x {args.dim} and counts of {args.tokens:,} tokens in "
          f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    sync(device)
    started = time.perf_counter()
    find_partial_pairs(W_dec_EM, counter, max_pairs=args.max_pairs, neighbours_first=False)
    sync(device)
    plain_s = time.perf_counter() - started
    started = time.perf_counter()
    fast = find_partial_pairs(W_dec_EM, counter, max_pairs=args.max_pairs)
    sync(device)
    fast_s = time.perf_counter() - started
    print(
        f"tiled finder without neighbours first {plain_s:.2f} s, with (the default) {fast_s:.2f} s"
    )
    unit = alive_units(W_dec_EM, counter, 5)[1]
    started = time.perf_counter()
    reference_nearest(unit, rows=args.reference_rows)
    sync(device)
    near_s = time.perf_counter() - started
    nearest = nearest_neighbours(unit.float())  # the pairs pass needs every latent's
    del unit
    sync(device)
    started = time.perf_counter()
    reference(W_dec_EM, counter, 0.5, 5, args.max_pairs, nearest, rows=args.reference_rows)
    sync(device)
    ref_s = time.perf_counter() - started
    alive = int((counter.firing_counts_e >= 5).sum())
    pairs_all = alive * (alive - 1) / 2
    pairs_ref = sum(alive - 1 - r for r in range(args.reference_rows))
    ref_full = ref_s * pairs_all / pairs_ref + near_s * alive / args.reference_rows
    print(
        f"{args.latents:,} latents ({alive:,} alive): tiled finder {fast_s:.2f} s for "
        f"{pairs_all:,.0f} pairs ({fast.n_scored:,} scored, top {len(fast.pairs):,} kept, "
        f"{sum(p.nearest_neighbours for p in fast.pairs):,} of them nearest neighbours); "
        f"row-at-a-time reference {near_s:.2f} s (nearest neighbours) + {ref_s:.2f} s (pairs) "
        f"for {args.reference_rows} rows, extrapolated {ref_full:.0f} s; "
        f"ratio {ref_full / fast_s:.0f}x"
    )
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
