"""End-to-end co-occurrence with a model: `pivotal-sae cooccur`'s loop vs the original's.

Ours is the job's own step (`jobs.cooccur.count_batch`): the model up to the ablator hook
(early exit), the SAE, exact pair counts on the device and the top examples. The original
(`gemma_cooccurrences.py`) ran the whole model with the SAE spliced in, then per prompt made
a sparse 0/1 (tokens × latents) matrix, multiplied its transpose by it, copied the (E × E)
result to the host and added it to a dense float32 matrix there; it is re-created here on the
same contexts (their counted positions: BOS left out as ours does). Also timed: the bare
forward to the hook, the ceiling for any counting, and ours without the firing per token id
(the token-conditioned null's counts), for what they cost. Counts are checked equal.

    uv run python benchmarks/cooccurrence_model_speed.py   # CPU: 4 layers, d 256, E 4096
    python benchmarks/cooccurrence_model_speed.py --preset gemma2-2b --device cuda   # GPU

Prints tokens/s of ours, of the bare forward and of the original, the ratios, and the time the
original's 2,000,000-prompt × 100-token run would take at our rate.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from absorb_setup import add_common_args, build, contexts, machine, memory, resolve, sync

from pivotal_sae.absorption.cooccurrence import make_cooccurrence_counter
from pivotal_sae.absorption.examples import TopExamples
from pivotal_sae.absorption.jobs.cooccur import count_batch


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_common_args(p)
    p.add_argument("--contexts", type=int, default=None, help="contexts timed for ours")
    p.add_argument("--reference-contexts", type=int, default=None, help="for the original")
    p.add_argument("--no-examples", action="store_true", help="count only, no top examples")
    p.add_argument("--repeats", type=int, default=3, help="interleaved passes; best of each")
    args = resolve(p.parse_args())
    gpu = args.preset == "gemma2-2b"
    args.contexts = args.contexts or (1024 if gpu else 128)
    args.reference_contexts = args.reference_contexts or (16 if gpu else 32)
    return args


@torch.no_grad()
def original_counts(models, batches, d_sae: int) -> tuple[torch.Tensor, float]:
    """The original loop: full forward, SAE, per prompt a sparse AᵀA added on the host."""
    lm, hook, sae = models.lm, models.ablator_hook, models.ablator
    cooccurrences_ee = torch.zeros(d_sae, d_sae)
    sync(lm.device)
    start = time.perf_counter()
    for batch in batches:
        hidden = lm.activations(batch.input_ids_BS, batch.attention_mask_BS, [hook],
                                early_exit=False)[hook]  # fmt: skip
        acts_BSe = sae.encode(hidden)
        count = batch.count_mask_BS.to(acts_BSe.device)
        for i in range(acts_BSe.shape[0]):
            active_binary_Se = (acts_BSe[i][count[i]] > 0).float().to_sparse()
            cooccurrences_ee += (active_binary_Se.T @ active_binary_Se).cpu()
    sync(lm.device)
    return cooccurrences_ee, time.perf_counter() - start


@torch.no_grad()
def ours(models, batches, examples: bool, token_firing: bool = True):
    """The job's step; without `token_firing` the counter drops the per-token-id firing counts
    (the job before they were added, 2026-12-05), for the cost of keeping them."""
    sae = models.ablator
    counter = make_cooccurrence_counter(sae.d_sae, sae.device)
    if not token_firing:
        counter.token_firing.add = lambda *args: None  # type: ignore[method-assign]
    top = TopExamples(sae.d_sae, 10, device=sae.device) if examples else None
    sync(sae.device)
    start = time.perf_counter()
    for batch in batches:
        count_batch(models, batch, counter, top)
    sync(sae.device)
    return counter, time.perf_counter() - start


@torch.no_grad()
def bare_forward(models, batches) -> float:
    lm, hook = models.lm, models.ablator_hook
    sync(lm.device)
    start = time.perf_counter()
    for batch in batches:
        lm.activations(batch.input_ids_BS, batch.attention_mask_BS, [hook])
    sync(lm.device)
    return time.perf_counter() - start


@torch.no_grad()
def breakdown(models, batches) -> dict[str, float]:
    """Seconds spent in each part of our step, synchronising between parts."""
    lm, hook, sae = models.lm, models.ablator_hook, models.ablator
    counter = make_cooccurrence_counter(sae.d_sae, sae.device)
    top = TopExamples(sae.d_sae, 10, device=sae.device)
    parts = dict.fromkeys(["forward", "encode", "count", "examples"], 0.0)
    for batch in batches:
        marks = [time.perf_counter()]
        hidden = lm.activations(batch.input_ids_BS, batch.attention_mask_BS, [hook])[hook]
        sync(lm.device)
        marks.append(time.perf_counter())
        acts_BSE = sae.encode(hidden)
        sync(lm.device)
        marks.append(time.perf_counter())
        on_device = batch.to(acts_BSE.device)
        counter.update(acts_BSE[on_device.count_mask_BS], contexts=len(batch),
                       token_ids_T=on_device.input_ids_BS[on_device.count_mask_BS])  # fmt: skip
        sync(lm.device)
        marks.append(time.perf_counter())
        top.update(acts_BSE, on_device.input_ids_BS, on_device.count_mask_BS,
                   on_device.context_index_B, on_device.attention_mask_BS)  # fmt: skip
        sync(lm.device)
        marks.append(time.perf_counter())
        for name, a, b in zip(parts, marks, marks[1:], strict=False):
            parts[name] += b - a
    return {name: round(seconds, 3) for name, seconds in parts.items()}


def counts_equal(counter, reference_ee: torch.Tensor, seed: int) -> bool:
    """Every entry for small E; for large E the diagonal, the total and 10⁶ random pairs."""
    e = counter.d_sae
    reference = reference_ee.to(torch.int64) if e <= 8192 else reference_ee
    if e <= 8192:
        return torch.equal(counter.to_dense().cpu(), reference)
    g = torch.Generator().manual_seed(seed)
    diag = torch.arange(e)
    i, j = torch.randint(0, e, (2, 1_000_000), generator=g)
    ok = torch.equal(counter.lookup(diag, diag).cpu(), reference[diag, diag].long())
    ok &= torch.equal(counter.lookup(i, j).cpu(), reference[i, j].long())
    upper_total = (reference.double().sum() + reference.diagonal().double().sum()) / 2
    return bool(ok) and float(counter.packed_counts.double().sum()) == float(upper_total)


def main() -> None:
    args = parse_args()
    models = build(args, with_reader=False)
    warm = contexts(args.batch_size, args.seq, args.batch_size, args.seed + 2, start=2 * 10**6)
    ours(models, warm, not args.no_examples)  # first-call costs (allocator, kernels) off the clock
    bare_forward(models, warm)
    batches = contexts(args.contexts, args.seq, args.batch_size, args.seed)
    tokens = sum(int(b.count_mask_BS.sum()) for b in batches)
    ours_s = bare_s = no_tokens_s = float("inf")
    for _ in range(args.repeats):  # interleaved, so a drifting clock hurts all alike
        counter, seconds = ours(models, batches, not args.no_examples)
        ours_s, bare_s = min(ours_s, seconds), min(bare_s, bare_forward(models, batches))
        no_tokens_s = min(no_tokens_s, ours(models, batches, not args.no_examples, False)[1])
    parts = breakdown(models, batches)
    ours_memory = memory(args.device)  # before the original allocates its own
    ref_batches = contexts(args.reference_contexts, args.seq, args.batch_size, args.seed)
    ref_tokens = sum(int(b.count_mask_BS.sum()) for b in ref_batches)
    reference_ee, ref_s = original_counts(models, ref_batches, args.d_sae)
    counter_on_ref, _ = ours(models, ref_batches, False)
    equal = counts_equal(counter_on_ref, reference_ee, args.seed)
    rate, bare_rate, ref_rate = tokens / ours_s, tokens / bare_s, ref_tokens / ref_s
    projected_tokens = 2_000_000 * 99  # 100-token prompts, BOS not counted
    report = {
        "benchmark": "cooccurrence_model_speed", "preset": args.preset, "device": args.device,
        "machine": machine(args.device), "torch": torch.__version__, "model": models.lm.name,
        "dtype": args.dtype, "hook": args.ablator_hook, "d_sae": args.d_sae,
        "mean_l0": round(float(counter.firing_counts_e.sum()) / counter.tokens_counted, 1),
        "seq": args.seq, "batch_size": args.batch_size, "tokens_ours": tokens,
        "tokens_original": ref_tokens, "top_examples": not args.no_examples,
        "ours_tokens_per_s": round(rate), "bare_forward_tokens_per_s": round(bare_rate),
        "original_tokens_per_s": round(ref_rate),
        "ours_vs_bare_forward": round(rate / bare_rate, 3),
        "ours_without_token_firing_tokens_per_s": round(tokens / no_tokens_s),
        "token_firing_entries": counter.token_firing.distinct_entries(),
        "speedup_vs_original": round(rate / ref_rate, 2), "counts_equal": equal,
        "projected_hours_2M_prompts_x100_tokens": round(projected_tokens / rate / 3600, 2),
        "projected_hours_original": round(projected_tokens / ref_rate / 3600, 1),
        **{f"ours_{k}": v for k, v in ours_memory.items()},
        "repeats": args.repeats, "breakdown_s": parts,
    }  # fmt: skip
    print(f"co-occurrence end to end ({args.preset}, {args.device}): ours {rate:,.0f} tokens/s, "
          f"bare forward to {args.ablator_hook} {bare_rate:,.0f} tokens/s "
          f"({rate / bare_rate:.2f} of it), original {ref_rate:,.0f} tokens/s "
          f"-> {rate / ref_rate:.1f}x; counts equal: {equal}; without firing per token id "
          f"{tokens / no_tokens_s:,.0f} tokens/s ({ours_s / no_tokens_s - 1:+.1%} for it); "
          f"2M x 100-token prompts: "
          f"{report['projected_hours_2M_prompts_x100_tokens']} h")  # fmt: skip
    print(json.dumps(report))
    if not equal:
        sys.exit("counts differ from the original's")


if __name__ == "__main__":
    main()
