"""Claim: at the seed example the improved recipe finds every parent/child pair with no dead
latents, where the original rules find a quarter of them; and flat SAEs absorb parents.

    uv run python benchmarks/toy_quality.py [--seeds 1 2 3] [--steps 20000] [--ablations]

Runs, one after another, each setting below for every seed (20,000 steps each, as in the issue),
writes every run under `--out` (default runs/toy-quality) and prints markdown tables of the
summaries: per setting the mean over seeds and the per-seed values. Each run is what
`pivotal-sae toy train` does with the printed options.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path
from typing import Any

from pivotal_sae.toy.config import ToyTrainConfig
from pivotal_sae.toy.train import train

SEED_EXAMPLE = {
    "lr": 1e-4,
    "sae_hidden_dim": 30,
    "dataset_num_features": 30,
    "batch_size": 100,
    "arch": "hierarchical",
    "perturbation_size": 0.4,
    "model_dim": 50,
}
# Flat SAEs get the hierarchical SAE's latent budget: 30 parents + 60 children = 90 latents, and
# its number of active latents per row: 3 parents + 3 children = 6.
FLAT = {"sae_hidden_dim": 90, "sae_k": 6}

SETTINGS: dict[str, dict[str, Any]] = {
    "hierarchical, original rules": {"recipe": "original"},
    "hierarchical, improved": {"recipe": "improved"},
    "hierarchical, improved, parent-only 0.3": {"recipe": "improved", "parent_only_prob": 0.3},
    "topk 90/6, improved": {"arch": "topk", **FLAT},
    "topk 90/6, improved, parent-only 0.3": {"arch": "topk", **FLAT, "parent_only_prob": 0.3},
    "matryoshka 90/6, improved": {"arch": "matryoshka", **FLAT},
    "matryoshka 90/6, improved, parent-only 0.3": {
        "arch": "matryoshka",
        **FLAT,
        "parent_only_prob": 0.3,
    },
}
ABLATIONS: dict[str, dict[str, Any]] = {
    f"improved, {name}": {"recipe": "improved", **change}
    for name, change in {
        "without relu": {"relu": False},
        "without tied init": {"init_encoder_from_decoder": False},
        "with decoder normalisation": {"normalize_decoder": True},
        "without parent reconstruction loss": {"parent_recon_coeff": 0.0},
        "without load balancing": {"balance_rate": 0.0},
        "without child resampling": {"resample_every": 0},
        "with aux-k 4": {"aux_k": 4},
        "with warm-up 500 and decay 0.2": {"warmup_steps": 500, "lr_decay_frac": 0.2},
    }.items()
}
COLUMNS = (
    "adjusted_pair_detection_rate",
    "pair_detection_rate",
    "dead_latents",
    "adjusted_mmcs_mean",
    "adjusted_mmcs_min",
    "mmcs_mean",
    "absorption_rate",
    "val_reconstruction_mse",
)


def as_flags(options: dict[str, Any]) -> str:
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in options.items())


def fmt(values: list[Any]) -> str:
    if any(v is None for v in values):
        return "n/a"
    mean = sum(values) / len(values)
    each = "/".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in values)
    return f"{mean:.3g} ({each})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=Path("runs/toy-quality"))
    parser.add_argument("--ablations", action="store_true", help="also each improvement removed")
    parser.add_argument("--only", nargs="*", help="names of settings to run (default: all)")
    args = parser.parse_args()
    settings = {**SETTINGS, **(ABLATIONS if args.ablations else {})}
    if args.only:
        settings = {k: v for k, v in settings.items() if k in args.only}
    print("| setting | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for name, options in settings.items():
        summaries = []
        for seed in args.seeds:
            slug = name.replace(", ", "-").replace(" ", "_").replace("/", "-")
            out = args.out / f"{slug}-seed{seed}"
            if (out / "summary.json").exists():
                summaries.append(json.loads((out / "summary.json").read_text()))
                continue
            config = ToyTrainConfig(
                **{**SEED_EXAMPLE, **options},
                seed=seed,
                max_step=args.steps,
                eval_every=5000,
                plots=False,
                out=out,
            )
            with contextlib.redirect_stdout(io.StringIO()):
                summaries.append(train(config))
        cells = [fmt([s[c] for s in summaries]) for c in COLUMNS]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
        print(f"<!-- {name}: {as_flags({**SEED_EXAMPLE, **options})} -->", flush=True)


if __name__ == "__main__":
    main()
