"""Patched forward passes: V variants replayed from the ablator's block vs one full pass each.

Selective ablation adds a delta at one hook and reads a deeper one, once per ablated latent.
`LanguageModel.run_patched` replays only the blocks between the two hooks, all variants in one
batch; `run_patched_naive` is the original's way (a full forward from the embeddings per
variant, batch size 1). Both run on the same contexts and deltas; the script checks they agree
within 1e-4 relative and prints the speed-up, on a random Gemma-2-shaped model.

    uv run python benchmarks/lm_patching.py                   # CPU, 4 layers, d 256
    uv run python benchmarks/lm_patching.py --device cuda --dtype bfloat16 --shape gemma-2-2b \\
        --ablator blocks.20.hook_resid_post --reader blocks.21.hook_mlp_out --variants 64
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pivotal_sae.lm.patching import run_patched_naive
from pivotal_sae.lm.random_models import random_gemma2


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--shape", default="gemma-2-small")
    p.add_argument("--ablator", default="blocks.2.hook_resid_post")
    p.add_argument("--reader", default="blocks.3.hook_mlp_out")
    p.add_argument("--contexts", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--variants", type=int, default=32, help="ablations per context (K)")
    p.add_argument("--naive-variants", type=int, default=None, help="fewer for the naive run")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    lm = random_gemma2(args.shape, dtype=args.dtype, device=args.device)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (args.contexts, args.seq), generator=g).to(lm.device)
    mask = torch.ones_like(ids)
    index_V = torch.arange(args.contexts).repeat_interleave(args.variants).to(lm.device)
    delta_VSM = torch.randn(len(index_V), args.seq, lm.d_model, generator=g).to(lm.device, lm.dtype)

    sync(lm.device)
    start = time.perf_counter()
    baseline = lm.patch_baseline(ids, mask, args.ablator, args.reader)
    fast = torch.cat([
        lm.run_patched(baseline, index_V[i : i + args.variants], delta_VSM[i : i + args.variants])
        for i in range(0, len(index_V), args.variants)
    ])  # fmt: skip
    sync(lm.device)
    t_fast = time.perf_counter() - start

    n_naive = args.naive_variants or len(index_V)
    start = time.perf_counter()
    naive = run_patched_naive(lm, ids, mask, args.ablator, args.reader, index_V[:n_naive],
                              delta_VSM[:n_naive])  # fmt: skip
    sync(lm.device)
    t_naive = (time.perf_counter() - start) * len(index_V) / n_naive
    error = float((fast[:n_naive] - naive).abs().max() / naive.abs().max())
    assert error < (1e-4 if lm.dtype == torch.float32 else 2e-2), f"relative error {error:.2e}"
    result = {
        "model": lm.name, "n_layers": lm.n_layers, "d_model": lm.d_model,
        "ablator": args.ablator, "reader": args.reader, "contexts": args.contexts,
        "variants": len(index_V), "seq": args.seq, "device": args.device, "dtype": args.dtype,
        "fast_s": t_fast, "naive_s_extrapolated": t_naive, "speedup": t_naive / t_fast,
        "max_relative_error": error,
    }  # fmt: skip
    print(json.dumps(result, indent=2))
    print(f"fast {t_fast:.2f} s vs naive {t_naive:.2f} s for {len(index_V)} variants "
          f"-> {t_naive / t_fast:.1f}x (max relative error {error:.1e})")  # fmt: skip


if __name__ == "__main__":
    main()
