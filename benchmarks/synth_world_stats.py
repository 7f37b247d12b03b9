"""Firing statistics of a SynthSAEBench world against the published ones, without an SAE.

Mean L0 and the L0 among the 4,096 most frequent features depend on the world's firing
configuration (probabilities, hierarchy, correlations, magnitudes), not on its feature
directions. `--skip-orthogonalization` builds the world from the same config minus the
orthogonalisation of its directions (~26 minutes of the 16k world's build on 2 CPU cores), so the
statistics can be checked on a CPU:

    python benchmarks/synth_world_stats.py --world synthsaebench-16k --skip-orthogonalization
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from pivotal_sae.toy.worlds import WORLD_SHAPES, world_config, world_statistics

PUBLISHED = {"synthsaebench-16k": {"mean_l0": 34.0, "mean_l0_top": 25.0}}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--world", default="synthsaebench-16k", choices=sorted(WORLD_SHAPES))
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--top", type=int, default=4096)
    parser.add_argument("--skip-orthogonalization", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    from sae_lens.synthetic import SyntheticModel

    config = world_config(args.world)
    if args.skip_orthogonalization:
        config = dataclasses.replace(config, orthogonalization=None)
    start = time.perf_counter()
    world = SyntheticModel(config, device=args.device)
    built = time.perf_counter() - start
    stats = world_statistics(world, samples=args.samples, top=args.top)
    sampled = time.perf_counter() - start - built
    published = PUBLISHED.get(args.world, {})
    print(
        f"{args.world} ({'directions not orthogonalised, ' if args.skip_orthogonalization else ''}"
        f"built in {built:.0f}s, {args.samples:,} samples in {sampled:.0f}s on {args.device}): "
        f"mean L0 {stats['mean_l0']:.2f} (published {published.get('mean_l0', '-')}), among the "
        f"{args.top} most frequent features {stats['mean_l0_top']:.2f} (published "
        f"{published.get('mean_l0_top', '-')})"
    )
    print(json.dumps({"world": args.world, "built_s": built, "sampled_s": sampled, **stats}))


if __name__ == "__main__":
    main()
