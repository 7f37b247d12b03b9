"""SynthSAEBench side by side: our toy SAEs and SAELens's trainers on one synthetic world.

Every architecture trains on the same number of fresh samples from the world and is scored by
SAELens's `eval_sae_on_synthetic_data` plus our tree absorption gap (toy/synthetic_eval.py).
Ours: TopK (per-row top-k), Matryoshka (nested prefixes, per-row top-k), hierarchical (parents
plus 4 children each, so width/5 parent latents for the same total width). References:
SAELens's BatchTopK and Matryoshka BatchTopK through its `SyntheticSAERunner`.

The defaults are the published recipe (SynthSAEBench-16k, width 4096, batch 1024, lr 3e-4,
200M samples: a GPU job). A small CPU check:

    python benchmarks/synth_sae_bench.py --world synthsaebench-small --samples 200000 \
        --width 128 --batch-size 256 --lr 3e-3 --l0 5 --device cpu
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from pivotal_sae.saes.matryoshka import default_prefixes
from pivotal_sae.saes.toy_io import build_toy_sae
from pivotal_sae.toy.synthetic_eval import score_on_world, train_on_world
from pivotal_sae.toy.worlds import WORLD_SHAPES, load_world

COLUMNS = ("f1", "mcc", "uniqueness", "explained_variance", "absorption_gap", "l0")
COLUMNS += ("dead_latents", "samples_per_s")


def ours(arch: str, world: Any, args: argparse.Namespace, k: int) -> dict[str, Any]:
    width = args.width // 5 if arch == "hierarchical" else args.width
    sae = build_toy_sae(
        arch, world.cfg.hidden_dim, width, k, n_children=4, prefixes=default_prefixes(width)
    ).to(args.device)
    speed = train_on_world(sae, world, args.samples, args.batch_size, args.lr)
    return {**speed, **score_on_world(sae, world, samples=args.eval_samples)}


def saelens(arch: str, world: Any, args: argparse.Namespace, k: int) -> dict[str, Any]:
    from sae_lens.config import LoggingConfig
    from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAEConfig
    from sae_lens.saes.matryoshka_batchtopk_sae import MatryoshkaBatchTopKTrainingSAEConfig
    from sae_lens.synthetic.synthetic_sae_runner import (
        SyntheticSAERunner,
        SyntheticSAERunnerConfig,
    )

    d_in = world.cfg.hidden_dim
    sae_cfg: Any
    if arch == "saelens-matryoshka":
        widths = sorted(set(default_prefixes(args.width)) | {args.width})
        sae_cfg = MatryoshkaBatchTopKTrainingSAEConfig(
            d_in=d_in, d_sae=args.width, k=k, matryoshka_widths=widths
        )
    else:
        sae_cfg = BatchTopKTrainingSAEConfig(d_in=d_in, d_sae=args.width, k=k)
    cfg: Any = SyntheticSAERunnerConfig(
        synthetic_model=world.cfg,
        sae=sae_cfg,
        training_samples=args.samples,
        batch_size=args.batch_size,
        lr=args.lr,
        device=args.device,
        output_path=None,
        checkpoint_path=None,
        run_final_eval=False,
        logger=LoggingConfig(log_to_wandb=False),
    )
    start = time.perf_counter()
    result = SyntheticSAERunner(cfg, override_synthetic_model=world).run()
    speed = args.samples / (time.perf_counter() - start)
    return {"samples_per_s": speed, **score_on_world(result.sae, world, args.eval_samples)}


ARCHS = {
    "topk": ours,
    "matryoshka": ours,
    "hierarchical": ours,
    "saelens-batchtopk": saelens,
    "saelens-matryoshka": saelens,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default="synthsaebench-16k", choices=sorted(WORLD_SHAPES))
    parser.add_argument("--samples", type=int, default=200_000_000, help="training samples")
    parser.add_argument("--eval-samples", type=int, default=100_000)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--l0", type=int, nargs="+", default=[25, 20])
    parser.add_argument("--arch", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    world = load_world(args.world, device=args.device)
    print(f"world {args.world}, {args.samples:,} samples, width {args.width}, {args.device}")
    print("| arch | L0 target | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for k in args.l0:
        for arch in args.arch:
            scores = ARCHS[arch](arch, world, args, k)
            cells = [
                f"{scores[c]:.3g}" if isinstance(scores[c], float) else str(scores[c])
                for c in COLUMNS
            ]
            print(f"| {arch} | {k} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
