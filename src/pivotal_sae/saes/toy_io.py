"""Build toy-lab SAEs by name and save/load them as self-describing directories.

A directory holds `cfg.json` (architecture, widths, k, ...) beside `sae_weights.safetensors`,
the SAELens layout: a flat `topk` SAE trained here (with ReLU) is an ordinary SAELens TopK SAE.
Hierarchical and Matryoshka SAEs add their own tensors (`W_enc_child`, `child_ratio_H`, ...) and
name their architecture in the config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from pivotal_sae.runs import atomic_save_safetensors, atomic_write_json
from pivotal_sae.saes.batchtopk import BatchTopKSae, MatryoshkaBatchTopKSae
from pivotal_sae.saes.hierarchical import HierarchicalSae
from pivotal_sae.saes.matryoshka import MatryoshkaSae
from pivotal_sae.saes.topk import Init, TopKSae
from pivotal_sae.saes.tree import TreeSae

WEIGHTS = "sae_weights.safetensors"
CONFIG = "cfg.json"

ToySae = TopKSae  # every toy architecture subclasses TopKSae

#: Toy architectures by name (each class's `architecture`), as `saes.sae.ARCHITECTURES` maps
#: the language-model side's; the same directory of a hierarchical SAE loads in both.
TOY_ARCHITECTURES: dict[str, type[TopKSae]] = {
    cls.architecture: cls
    for cls in (
        TopKSae,
        HierarchicalSae,
        MatryoshkaSae,
        BatchTopKSae,
        MatryoshkaBatchTopKSae,
        TreeSae,
    )
}
#: The flat TopK family: one layer of latents, one selection (the options only it takes).
FLAT_ARCHITECTURES = ("topk", "batchtopk", "matryoshka", "matryoshka-batchtopk")


def build_toy_sae(
    architecture: str,
    d_in: int,
    d_sae: int,
    k: int,
    *,
    n_children: int = 2,
    prefixes: tuple[int, ...] | None = None,
    relu: bool = True,
    init: Init = "tied",
    parent_recon_coeff: float = 0.0,
    balance: bool = False,
    parents: tuple[int, ...] | None = None,
    generator: torch.Generator | None = None,
    rank_by_norm: bool = False,
    decoder_init_norm: float = 1.0,
) -> TopKSae:
    """A toy SAE of the named architecture; options a class does not take are ignored, except
    `rank_by_norm` and `decoder_init_norm`, which only the flat TopK family takes."""
    if architecture not in TOY_ARCHITECTURES:
        raise ValueError(f"unknown toy SAE architecture {architecture!r}")
    cls = TOY_ARCHITECTURES[architecture]
    flat: dict[str, Any] = {}
    if rank_by_norm:
        flat["rank_by_norm"] = True
    if decoder_init_norm != 1.0:
        if not decoder_init_norm > 0:
            raise ValueError(f"the decoder's initial row norm must be > 0, got {decoder_init_norm}")
        flat["decoder_init_norm"] = decoder_init_norm
    if flat and architecture not in FLAT_ARCHITECTURES:
        raise ValueError(
            f"{', '.join(flat)} applies to {', '.join(FLAT_ARCHITECTURES)} only, not {architecture}"
        )
    given = {
        "n_children": n_children,
        "prefixes": prefixes,
        "parent_recon_coeff": parent_recon_coeff,
        "parents": parents,
    }
    own: dict[str, Any] = {name: given[name] for name in cls.own_options}
    return cls(
        d_in, d_sae, k, relu=relu, init=init, balance=balance, generator=generator, **own, **flat
    )


def save_toy_sae(sae: TopKSae, directory: Path, extra: dict[str, Any] | None = None) -> None:
    """Write weights first and the config last, so a directory with a config is complete."""
    config = {**sae.config_dict(), **(extra or {})}
    atomic_save_safetensors(
        directory / WEIGHTS, sae.state_dict(), metadata={"cfg": json.dumps(config)}
    )
    atomic_write_json(directory / CONFIG, config)


def load_toy_sae(directory: Path, device: torch.device | str = "cpu") -> TopKSae:
    config = json.loads((directory / CONFIG).read_text())
    sae = build_toy_sae(
        config["architecture"],
        config["d_in"],
        config["d_sae"],
        config["k"],
        n_children=config.get("n_children", 2),
        prefixes=tuple(config["prefixes"]) if "prefixes" in config else None,
        relu=config.get("relu", True),
        parent_recon_coeff=config.get("parent_recon_coeff", 0.0),
        balance=config.get("balance", False),
        parents=tuple(config["parents"]) if "parents" in config else None,
        rank_by_norm=config.get("rank_by_norm", False),
        decoder_init_norm=config.get("decoder_init_norm", 1.0),
    )
    state = load_file(str(directory / WEIGHTS))
    # Directories written without load balancing (e.g. by the language-model trainer) have no
    # selection bias; zeros are what they used.
    state.setdefault("selection_bias_E", torch.zeros(sae.d_sae))
    sae.load_state_dict(state)
    return sae.to(device)
