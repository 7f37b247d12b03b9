"""Early exit: reading one hook vs running the whole model, on MiniLM and a 12-layer Gemma-2.

`LanguageModel.activations` stops the forward pass once the deepest requested hook has been
seen. This script times reading `blocks.3.hook_resid_post` that way against a full forward pass
(the same hooks, no early exit) and against the bare model forward with no hooks at all, checks
the activations are identical, and prints the ratios.

    uv run python benchmarks/lm_early_exit.py             # CPU, both models
    uv run python benchmarks/lm_early_exit.py --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pivotal_sae.lm.model import LanguageModel
from pivotal_sae.lm.random_models import random_gemma2


def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median seconds of `fn` over `repeats` runs after one warm-up."""
    fn()
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def measure(lm: LanguageModel, hook: str, batch: int, seq: int, repeats: int) -> dict:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (batch, seq), generator=g).to(lm.device)
    mask = torch.ones_like(ids)
    early = lm.activations(ids, mask, [hook])[hook]
    full = lm.activations(ids, mask, [hook], early_exit=False)[hook]
    assert torch.equal(early, full), "early exit changed the activations"
    with torch.no_grad():
        t_early = timed(lambda: lm.activations(ids, mask, [hook]), repeats, lm.device)
        t_full = timed(lambda: lm.activations(ids, mask, [hook], early_exit=False), repeats,
                       lm.device)  # fmt: skip
        t_bare = timed(lambda: lm.forward(ids, mask), repeats, lm.device)
    return {
        "model": lm.name,
        "n_layers": lm.n_layers,
        "hook": hook,
        "tokens": batch * seq,
        "early_exit_s": t_early,
        "full_forward_s": t_full,
        "bare_forward_s": t_bare,
        "speedup_vs_full": t_full / t_early,
        "speedup_vs_bare": t_bare / t_early,
        "ideal_speedup": lm.n_layers / (int(hook.split(".")[1]) + 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    minilm = LanguageModel.load(None, device=args.device, dtype=args.dtype)
    gemma = random_gemma2("gemma-2-small", n_layers=12, hidden_size=512, intermediate_size=2048,
                          dtype=args.dtype, device=args.device)  # fmt: skip
    rows = [measure(lm, "blocks.3.hook_resid_post", args.batch, args.seq, args.repeats)
            for lm in (minilm, gemma)]  # fmt: skip
    machine = {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
               "device": args.device, "dtype": args.dtype, "torch": torch.__version__}  # fmt: skip
    if args.device.startswith("cuda"):
        machine["gpu"] = torch.cuda.get_device_name()
    print(json.dumps({"machine": machine, "results": rows}, indent=2))
    for r in rows:
        print(f"{r['model']:>24} ({r['n_layers']} layers) {r['hook']}: early exit "
              f"{r['early_exit_s'] * 1e3:.1f} ms vs full {r['full_forward_s'] * 1e3:.1f} ms "
              f"-> {r['speedup_vs_full']:.2f}x (ideal {r['ideal_speedup']:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
