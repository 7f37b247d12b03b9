"""Where a SynthSAEBench training step spends its time: drawing the world's samples, or the SAE.

Builds the world, then measures samples/s three ways, each after a warm-up and with the GPU
synchronised before the clock stops:

1. `world.sample` alone, drawing `c` batches per call for each `--chunks c`;
2. one of our SAEs' Adam steps alone, on batches drawn beforehand (`--arch`);
3. `train_on_world` (both together, as the benchmark trains) for each `--chunks c`; on a GPU
   also with its CUDA graph of the step and, separately, with TF32 matrix products (the world's
   draws included), and the graphed step checked against the eager one (same seed and draws, 40
   steps with an lr decay: largest relative parameter difference).

Prints a table and writes `throughput.json` into `--out`; the last line names the fastest chunk
and its training samples/s, so a script can size a run to the device time it has. One command:

    python benchmarks/synth_throughput.py --world synthsaebench-16k --out $OUT
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch


def timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    from synth_sae_bench import bench_prefixes

    from pivotal_sae.absorption.pairs import tf32_matmuls
    from pivotal_sae.saes.toy_io import build_toy_sae
    from pivotal_sae.toy.synthetic_eval import train_on_world
    from pivotal_sae.toy.worlds import load_world

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default="synthsaebench-16k")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--l0", type=int, default=25)
    parser.add_argument("--arch", nargs="+", default=["topk", "matryoshka"])
    parser.add_argument("--chunks", type=int, nargs="+", default=[16])
    parser.add_argument("--samples", type=int, default=2_000_000, help="per measurement")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "benchmarks/out"))
    args = parser.parse_args()
    device = torch.device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)

    built = time.perf_counter()
    world = load_world(args.world, device=str(device))
    print(f"world {args.world} ready in {time.perf_counter() - built:.1f} s", flush=True)
    bs, features = args.batch_size, world.cfg.num_features
    steps = max(1, args.samples // bs)
    rows: list[dict[str, object]] = []

    def record(what: str, chunk: int | None, seconds: float, samples: int) -> None:
        row = {"what": what, "chunk_batches": chunk, "samples_per_s": samples / seconds}
        rows.append(row)
        print(f"{what:32s} chunk {chunk!s:>4s}  {samples / seconds:12,.0f} samples/s", flush=True)

    for chunk in args.chunks:
        draws = max(1, steps // chunk)
        world.sample(chunk * bs)  # warm-up
        seconds = timed(lambda c=chunk, d=draws: [world.sample(c * bs) for _ in range(d)], device)
        record("world.sample", chunk, seconds, draws * chunk * bs)

    pool = [world.sample(bs) for _ in range(16)]

    def fresh_sae(arch: str) -> torch.nn.Module:
        return build_toy_sae(
            arch, world.cfg.hidden_dim, args.width, args.l0, n_children=4,
            prefixes=bench_prefixes(args.width), generator=torch.Generator().manual_seed(1),
        ).to(device)  # fmt: skip

    for arch in args.arch:
        sae = fresh_sae(arch)
        optimizer = torch.optim.Adam(sae.parameters(), lr=3e-4)

        def sae_steps(n: int, sae=sae, optimizer=optimizer) -> None:  # type: ignore[no-untyped-def]
            for i in range(n):
                x_BM = pool[i % len(pool)]
                loss = sae.reconstruction_loss(x_BM, sae(x_BM))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

        sae_steps(20)
        record(f"SAE step only ({arch})", None, timed(lambda: sae_steps(steps), device), steps * bs)
        variants = [(False, False), (True, False), (False, True)]  # (CUDA graph, TF32)
        for chunk in args.chunks:
            for graph, tf32 in variants if device.type == "cuda" else variants[:1]:
                chunk_bytes = chunk * 4 * bs * features
                with tf32_matmuls(tf32):
                    speed = train_on_world(
                        sae, world, steps * bs, bs, 3e-4, 1, chunk_bytes=chunk_bytes,
                        cuda_graph=graph,
                    )  # fmt: skip
                what = f"train_on_world ({arch}{', CUDA graph' if graph else ''}"
                record(
                    f"{what}{', TF32' if tf32 else ''})",
                    chunk,
                    steps * bs / speed["samples_per_s"],
                    steps * bs,
                )
        if device.type == "cuda":
            # The graphed step against the eager one: same seed, same draws, 40 steps.
            trained = []
            for graph in (False, True):
                twin = fresh_sae(arch)
                train_on_world(twin, world, 40 * bs, bs, 3e-4, 7, lr_decay=0.5, cuda_graph=graph)
                trained.append(dict(twin.named_parameters()))
            worst = max(
                float((trained[0][n] - trained[1][n]).abs().max() / trained[0][n].abs().max())
                for n in trained[0]
            )
            rows.append({"what": f"graph vs eager ({arch})", "max_relative_difference": worst})
            print(f"graph vs eager ({arch}), 40 steps: max relative difference {worst:.2e}")

    (args.out / "throughput.json").write_text(json.dumps(rows, indent=2))
    trains = [r for r in rows if str(r["what"]).startswith("train_on_world")]
    best = max(trains, key=lambda r: float(r["samples_per_s"]))  # type: ignore[arg-type]
    print(f"fastest: {best['what']} chunk {best['chunk_batches']} {best['samples_per_s']:.0f}")


if __name__ == "__main__":
    main()
