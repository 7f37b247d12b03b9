"""Claim: keeping each latent's firing per token id (the token-conditioned null's counts,
`absorption/token_firing.py`) costs little beside the co-occurrence pass at 65,536 latents on
one GPU, and equals a plain reference.

    PYTHONPATH=src python benchmarks/token_firing_speed.py                  # GPU, 65,536 latents
    PYTHONPATH=src python benchmarks/token_firing_speed.py --latents 16384 --tokens 400000  # CPU

Data: random top-k activations (--k latents per token) over tokens whose ids follow a Zipf law
over a --vocab of 256,000 ids (Gemma-2's); half of each token's latents come from a pool of 64
fixed for its id (token-specific latents), the rest uniformly at random (--token-share sets the
half). A model of firing, not a measured SAE: the distinct (latent, token id) entries it makes
per token are printed, and the store's size follows them.

Steps:
1. equality at --check-latents latents and --check-tokens tokens, through the co-occurrence
   counter's own update with token ids, merging every 5,000 entries: the stored counts against
   a dict filled one (latent, token) entry at a time, and the token-conditioned expectation of
   200 random co-firing pairs against a loop over those dicts;
2. speed at --latents: the counter's update over --tokens tokens in steps of --step-tokens,
   without token ids and with them (the job's way), interleaved on the same activations
   (alternating which goes first); the
   store's size and peak memory; one merge of a last batch into the full store, by the linear
   merge (`add_sorted_counts`) and by the earlier sort-based merge (concatenate, argsort),
   checked equal; the expectation of the 200 pairs `absorb` attaches to its list.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import torch

from pivotal_sae.absorption.cooccurrence import DenseCooccurrence, SparseCooccurrence
from pivotal_sae.absorption.sparse_counts import add_sorted_counts
from pivotal_sae.absorption.token_firing import SHIFT

POOL = 64


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def zipf_ids(n: int, vocab: int, g: torch.Generator, device: torch.device) -> torch.Tensor:
    """Token ids with P(rank r) ∝ 1 / (r + 1), drawn by inverting the cumulative law."""
    cdf = (1.0 / torch.arange(1, vocab + 1, dtype=torch.float64)).cumsum(0)
    u = torch.rand(n, generator=g, dtype=torch.float64) * cdf[-1]
    return torch.searchsorted(cdf, u).clamp(max=vocab - 1).to(device)


def random_step(args, n: int, latents: int, g: torch.Generator, device: torch.device):
    """(values_TK, indices_TK, token_ids_T) for n tokens."""
    ids_T = zipf_ids(n, args.vocab, g, device)
    n_pool = round(args.k * args.token_share)
    slot_TK = torch.randint(POOL, (n, n_pool), generator=g).to(device)
    # a token id's pool: POOL latents fixed by the id (a cheap integer hash)
    pooled_TK = (ids_T[:, None] * 7919 + slot_TK * 104729 + ids_T[:, None] * slot_TK) % latents
    free_TK = torch.randint(latents, (n, args.k - n_pool), generator=g).to(device)
    indices_TK = torch.cat([pooled_TK, free_TK], dim=1).sort(dim=1).values
    values_TK = torch.rand(n, args.k, generator=g).to(device) + 0.1
    values_TK[:, 1:][indices_TK[:, 1:] == indices_TK[:, :-1]] = 0.0  # a repeat is inactive
    return values_TK, indices_TK, ids_T


def reference_counts(steps) -> tuple[Counter, Counter]:
    """One (latent, token id) entry at a time: firing per token id, and tokens per id."""
    firing: Counter = Counter()
    tokens: Counter = Counter()
    for values_TK, indices_TK, ids_T in steps:
        for row_v, row_i, v in zip(values_TK.tolist(), indices_TK.tolist(), ids_T.tolist(),
                                   strict=True):  # fmt: skip
            tokens[v] += 1
            for value, latent in zip(row_v, row_i, strict=True):
                if value > 0:
                    firing[(latent, v)] += 1
    return firing, tokens


def reference_expected(firing: Counter, tokens: Counter, pairs: list[tuple[int, int]]):
    rows: dict[int, dict[int, int]] = {}
    for (latent, v), count in firing.items():
        rows.setdefault(latent, {})[v] = count
    out = []
    for a, b in pairs:
        row_a, row_b = rows.get(a, {}), rows.get(b, {})
        out.append(sum(row_a[v] * row_b[v] / tokens[v] for v in row_a.keys() & row_b.keys()))
    return out


def sort_merge(keys, counts, keys_U, counts_U):
    """The merge as it was before 2026-12-07: concatenate the new keys, argsort everything."""
    pos_U = torch.searchsorted(keys, keys_U).clamp(max=keys.numel() - 1)
    hit_U = keys[pos_U] == keys_U
    counts.index_add_(0, pos_U[hit_U], counts_U[hit_U])
    keys = torch.cat([keys, keys_U[~hit_U]])
    counts = torch.cat([counts, counts_U[~hit_U]])
    order = torch.argsort(keys)
    return keys[order], counts[order]


def co_firing_pairs(firing_keys: torch.Tensor, n: int, g: torch.Generator) -> list[tuple[int, int]]:
    """n random pairs of latents that fired on one token id at least once (so most share ids):
    a random stored entry, and a random entry of the same token id."""
    latents = firing_keys >> SHIFT
    ids_sorted, order = (firing_keys & ((1 << SHIFT) - 1)).sort()
    pick = torch.randint(len(firing_keys), (n,), generator=g).to(firing_keys.device)
    v = firing_keys[pick] & ((1 << SHIFT) - 1)
    lo = torch.searchsorted(ids_sorted, v)
    hi = torch.searchsorted(ids_sorted, v, right=True)
    offset = (torch.rand(n, generator=g).to(lo.device) * (hi - lo)).long()
    other = order[lo + offset.clamp(max=hi - lo - 1)]
    out = []
    for a, b in zip(latents[pick].tolist(), latents[other].tolist(), strict=True):
        out.append((a, b) if a != b else (a, (b + 1) % int(latents.max() + 1)))
    return out


def check(args, device: torch.device) -> None:
    g = torch.Generator().manual_seed(1)
    counter = SparseCooccurrence(args.check_latents, device, flush_pairs=1 << 16)
    counter.token_firing.flush_entries = 5000
    steps = [random_step(args, 500, args.check_latents, g, device)
             for _ in range(args.check_tokens // 500)]  # fmt: skip
    for values_TK, indices_TK, ids_T in steps:
        counter.update_sparse(values_TK, indices_TK, contexts=1, token_ids_T=ids_T)
    firing, tokens = reference_counts(steps)
    tf = counter.token_firing
    tf.flush()
    got = dict(zip(zip((tf.keys >> SHIFT).tolist(), (tf.keys & ((1 << SHIFT) - 1)).tolist(),
                       strict=True), tf.counts.tolist(), strict=True))  # fmt: skip
    tokens_v = {v: c for v, c in enumerate(tf.tokens_v.tolist()) if c}
    counts_ok = got == dict(firing) and tokens_v == dict(tokens)
    pairs = co_firing_pairs(tf.keys, 200, g)
    i = torch.tensor([a for a, _ in pairs], device=device)
    j = torch.tensor([b for _, b in pairs], device=device)
    fast = tf.expected_cooccurrence(i, j).tolist()
    ref = reference_expected(firing, tokens, pairs)
    worst = max(abs(f - r) / max(abs(r), 1e-12) for f, r in zip(fast, ref, strict=True))
    print(
        f"equality at {args.check_latents:,} latents, {args.check_tokens:,} tokens: "
        f"{len(got):,} (latent, token id) counts equal to the dict's: {counts_ok}; "
        f"expectation of 200 pairs ({sum(r > 0 for r in ref)} nonzero), worst relative "
        f"difference {worst:.1e}"
    )
    if not counts_ok or worst > 1e-12:
        raise SystemExit("token firing and its reference disagree")


def speed(args, device: torch.device) -> None:
    g = torch.Generator().manual_seed(2)
    n_steps = args.tokens // args.step_tokens
    plain = DenseCooccurrence(args.latents, device)
    with_ids = DenseCooccurrence(args.latents, device)
    plain_s = ids_s = 0.0
    for step in range(n_steps):
        values_TK, indices_TK, ids_T = random_step(args, args.step_tokens, args.latents, g, device)
        # alternate which goes first, so neither gains from the other's warm caches
        for which in (0, 1) if step % 2 else (1, 0):
            sync(device)
            started = time.perf_counter()
            if which == 0:
                plain.update_sparse(values_TK, indices_TK, contexts=1)
            else:
                with_ids.update_sparse(values_TK, indices_TK, contexts=1, token_ids_T=ids_T)
            sync(device)
            if which == 0:
                plain_s += time.perf_counter() - started
            else:
                ids_s += time.perf_counter() - started
        if step > 0 and step % max(n_steps // 10, 1) == 0:
            print(f"  {(step + 1) * args.step_tokens:,} tokens: "
                  f"{with_ids.token_firing.keys.numel():,} distinct (latent, token id) stored, "
                  f"{ids_s / plain_s - 1:.0%} slower so far", flush=True)  # fmt: skip
    tf = with_ids.token_firing
    started = time.perf_counter()
    tf.flush()  # the last merge, as saving does
    sync(device)
    ids_s += time.perf_counter() - started
    tokens = n_steps * args.step_tokens
    entries = int(with_ids.firing_counts_e.sum())
    distinct = tf.distinct_entries()
    del plain, with_ids  # the pair counts: room for the merges below
    if device.type == "cuda":
        torch.cuda.empty_cache()
    print(
        f"{args.latents:,} latents, {tokens:,} tokens in steps of {args.step_tokens:,} "
        f"({entries:,} firings): counter without token ids {tokens / plain_s:,.0f} tokens/s, "
        f"with them {tokens / ids_s:,.0f} tokens/s (merged into the store every "
        f"{tf.flush_entries:,} firings, {-(-entries // tf.flush_entries)} merges); "
        f"overhead {ids_s / plain_s - 1:.0%}; store {distinct:,} distinct (latent, token id), "
        f"{distinct / entries:.1%} of firings, {distinct * 16 / 2**30:.2f} GiB"
    )
    # one more step's entries merged into the full store, both ways
    values_TK, indices_TK, ids_T = random_step(args, args.step_tokens, args.latents, g, device)
    codes = (indices_TK[values_TK > 0].to(torch.int64) << SHIFT) + ids_T[:, None].expand_as(
        indices_TK
    )[values_TK > 0]
    keys_U, counts_U = codes.unique(sorted=True, return_counts=True)
    timings = {}
    results = {}
    for name, merge in (("linear merge", add_sorted_counts), ("sort merge", sort_merge)):
        keys, counts = tf.keys.clone(), tf.counts.clone()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        sync(device)
        started = time.perf_counter()
        results[name] = merge(keys, counts, keys_U, counts_U)
        sync(device)
        timings[name] = time.perf_counter() - started
        if device.type == "cuda":
            extra = (torch.cuda.max_memory_allocated(device) - base) / 2**30
            timings[name + " peak"] = extra
        del keys, counts
    same = all(torch.equal(a, b) for a, b in zip(*results.values(), strict=True))
    memory = ""
    if device.type == "cuda":
        memory = (f" (peak beyond the inputs {timings['linear merge peak']:.2f} vs "
                  f"{timings['sort merge peak']:.2f} GiB)")  # fmt: skip
    print(
        f"one merge of {keys_U.numel():,} keys into {distinct:,}: linear "
        f"{timings['linear merge'] * 1e3:.1f} ms, sort-based {timings['sort merge'] * 1e3:.1f} ms, "
        f"ratio {timings['sort merge'] / timings['linear merge']:.1f}x, equal: {same}{memory}"
    )
    del results
    pairs = co_firing_pairs(tf.keys, 200, g)
    i = torch.tensor([a for a, _ in pairs], device=device)
    j = torch.tensor([b for _, b in pairs], device=device)
    sync(device)
    started = time.perf_counter()
    tf.expected_cooccurrence(i, j)
    sync(device)
    print(f"token-conditioned expectation of 200 pairs: {time.perf_counter() - started:.2f} s")
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")
    if not same:
        raise SystemExit("the two merges disagree")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latents", type=int, default=65_536)
    parser.add_argument("--vocab", type=int, default=256_000)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--token-share", type=float, default=0.5)
    parser.add_argument("--tokens", type=int, default=2_000_000)
    parser.add_argument("--step-tokens", type=int, default=6_400, help="64 contexts of 100")
    parser.add_argument("--check-latents", type=int, default=512)
    parser.add_argument("--check-tokens", type=int, default=20_000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}")
    check(args, device)
    speed(args, device)


if __name__ == "__main__":
    main()
