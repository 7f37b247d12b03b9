"""`pivotal-sae toy train --world <synthetic world>`: train on the world, score with SAELens.

`max_step * batch_size` fresh samples, Adam at `lr` (with `--aux-k` and `--normalize-decoder` as
given), then SAELens's synthetic evaluation and the
absorption gap (`toy/synthetic_eval.py`) written to summary.json with the SAE beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pivotal_sae.runs import atomic_write_json
from pivotal_sae.saes.toy_io import build_toy_sae, save_toy_sae
from pivotal_sae.toy.config import ToyTrainConfig
from pivotal_sae.toy.synthetic_eval import score_on_world, train_on_world
from pivotal_sae.toy.worlds import load_world

EVAL_SAMPLES = 50_000


def train_world_run(config: ToyTrainConfig, run_dir: Path, device: torch.device) -> dict[str, Any]:
    world = load_world(config.world, device=str(device))
    sae = build_toy_sae(
        config.arch,
        world.cfg.hidden_dim,
        config.sae_hidden_dim,
        config.sae_k,
        n_children=config.n_children,
        prefixes=tuple(config.matryoshka_prefixes) if config.matryoshka_prefixes else None,
        relu=bool(config.relu),
        parent_recon_coeff=config.parent_recon_coeff or 0.0,
        parents=config.tree_parents() if config.arch == "tree" else None,
        generator=torch.Generator().manual_seed(config.seed),
    ).to(device)
    print(f"pivotal-sae toy train: writing {run_dir} (world {config.world})", flush=True)
    speed = train_on_world(
        sae,
        world,
        config.max_step * config.batch_size,
        config.batch_size,
        config.lr,
        config.seed,
        aux_k=config.aux_k or 0,
        aux_k_coeff=config.aux_k_coeff,
        normalize_decoder=bool(config.normalize_decoder),
    )
    summary = {"run_dir": str(run_dir), "world": config.world, "arch": config.arch, **speed}
    summary.update(score_on_world(sae, world, samples=EVAL_SAMPLES))
    save_toy_sae(sae, run_dir / "sae")
    atomic_write_json(run_dir / "summary.json", summary)
    return summary
