"""Synthetic worlds for `pivotal-sae toy train --world`: SAELens's `SyntheticModel` from a config.

`seed` is the toy lab's own data (`toy/data.py`); every other world is built by
`sae_lens.synthetic.SyntheticModel` from the configuration below (no generator of ours) and
cached on disk under the project cache, since building the 16k world's orthogonalised
dictionary takes ~26 minutes on 2 CPU cores. Ground truth (feature directions, the hierarchy
tree) comes from the world itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pivotal_sae.errors import UserError
from pivotal_sae.lm.defaults import cache_dir

if TYPE_CHECKING:
    from sae_lens.synthetic import SyntheticModel, SyntheticModelConfig


@dataclass(frozen=True)
class WorldShape:
    """What the published SynthSAEBench recipe varies; everything else is fixed below."""

    num_features: int
    hidden_dim: int
    root_nodes: int
    orthogonalization_steps: int
    correlation_rank: int
    seed: int = 42


#: The published SynthSAEBench-16k (SAELens docs/synth_sae_bench.md) and a small world of the
#: same shape for CPU tests: branching 4, depth 3, mutually exclusive children.
WORLD_SHAPES: dict[str, WorldShape] = {
    "synthsaebench-16k": WorldShape(16_384, 768, 128, 100, 25),
    # The same recipe drawn with another seed: for choosing settings without looking at the
    # published world, whose scores then measure the choice.
    "synthsaebench-16k-seed43": WorldShape(16_384, 768, 128, 100, 25, seed=43),
    "synthsaebench-small": WorldShape(512, 64, 4, 20, 8),
}
WORLDS: tuple[str, ...] = ("seed", *WORLD_SHAPES)


def world_config(name: str) -> SyntheticModelConfig:
    from sae_lens.synthetic import (
        FoldedNormalMagnitudeConfig,
        HierarchyConfig,
        LinearMagnitudeConfig,
        LowRankCorrelationConfig,
        OrthogonalizationConfig,
        SyntheticModelConfig,
        ZipfianFiringProbabilityConfig,
    )

    shape = WORLD_SHAPES[name]
    return SyntheticModelConfig(
        num_features=shape.num_features,
        hidden_dim=shape.hidden_dim,
        firing_probability=ZipfianFiringProbabilityConfig(
            exponent=0.5, max_prob=0.4, min_prob=5e-4
        ),
        hierarchy=HierarchyConfig(
            total_root_nodes=shape.root_nodes,
            branching_factor=4,
            max_depth=3,
            mutually_exclusive_portion=1.0,
            compensate_probabilities=True,
            scale_children_by_parent=True,
        ),
        orthogonalization=OrthogonalizationConfig(num_steps=shape.orthogonalization_steps, lr=3e-4),
        correlation=LowRankCorrelationConfig(rank=shape.correlation_rank, correlation_scale=0.1),
        mean_firing_magnitudes=LinearMagnitudeConfig(start=5.0, end=4.0),
        std_firing_magnitudes=FoldedNormalMagnitudeConfig(mean=0.5, std=0.5),
        bias=0.5,
        seed=shape.seed,
    )


def world_bytes(name: str) -> int:
    """Up-front estimate of a world's float32 memory while building it: the dictionary, its
    orthogonalisation's Gram matrix (features x features) and the correlation factor."""
    shape = WORLD_SHAPES[name]
    f, h = shape.num_features, shape.hidden_dim
    return 4 * (3 * f * h + f * f + f * shape.correlation_rank)


def available_memory_bytes() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


def check_world(name: str, device: str, sae_width: int) -> None:
    """Refuse, with one sentence, a world that is unknown, does not fit in CPU memory or is
    narrower than the SAE asks for."""
    if name not in WORLDS:
        raise UserError(f"unknown --world {name!r}; choose one of {', '.join(WORLDS)}")
    if name == "seed":
        return
    shape = WORLD_SHAPES[name]
    if device.lower() == "cpu" and world_bytes(name) > available_memory_bytes() // 2:
        raise UserError(
            f"--world {name} needs ~{world_bytes(name) / 2**30:.1f} GiB to build, more than half "
            "of the memory available; use --device cuda or a smaller world"
        )
    if sae_width > shape.num_features:
        raise UserError(
            f"--sae-hidden-dim ({sae_width}) exceeds --world {name}'s {shape.num_features} "
            "features; choose a narrower SAE"
        )


def world_dir(name: str) -> Path:
    return cache_dir() / "worlds" / name


def load_world(name: str, device: str = "cpu") -> SyntheticModel:
    """The world from the cache, built and saved there on first use."""
    from sae_lens.synthetic import SyntheticModel

    directory = world_dir(name)
    if not (directory / "synthetic_model_config.json").exists():
        model = SyntheticModel(world_config(name), device=device)
        partial = directory.with_name(directory.name + ".partial")
        model.save(partial)
        partial.rename(directory)
    return SyntheticModel.load_from_disk(directory, device=device)


def parent_child_pairs(world: SyntheticModel) -> list[tuple[int, int]]:
    """(parent feature, child feature) for every edge of the world's hierarchy tree."""
    pairs: list[tuple[int, int]] = []
    stack: list[Any] = list(world.hierarchy.roots) if world.hierarchy else []
    while stack:
        node = stack.pop()
        for child in node.children:
            if node.feature_index is not None and child.feature_index is not None:
                pairs.append((node.feature_index, child.feature_index))
            stack.append(child)
    return pairs


def world_forest(world: SyntheticModel) -> tuple[list[int], tuple[int, ...]]:
    """The world's features as a tree SAE's latents: (feature of each latent, its parent latent
    or -1), level by level: tree roots and features outside any tree first, then children."""
    roots = list(world.hierarchy.roots) if world.hierarchy else []
    in_trees = {f for root in roots for f in root.get_all_feature_indices()}
    features = [root.feature_index for root in roots]
    features += [f for f in range(world.cfg.num_features) if f not in in_trees]
    parents = [-1] * len(features)
    level = [(i, root) for i, root in enumerate(roots)]
    while level:
        below = []
        for latent, node in level:
            for child in node.children:
                below.append((len(features), child))
                features.append(child.feature_index)
                parents.append(latent)
        level = below
    if any(f is None for f in features):
        raise ValueError("the world's hierarchy has nodes without features")
    return features, tuple(parents)


def world_statistics(
    world: SyntheticModel, samples: int = 100_000, top: int = 4096
) -> dict[str, float]:
    """Mean L0 of regenerated samples, overall and counting only the `top` most frequent
    features (the published check compares the latter with an SAE of width 4,096), and the
    share of firing features at the top of the world's forest."""
    import torch  # lazily: the CLI imports this module for its names, and --help stays fast

    with torch.no_grad():
        return _world_statistics(world, samples, top)


def _world_statistics(world: SyntheticModel, samples: int, top: int) -> dict[str, float]:
    import torch

    fires_F = torch.zeros(world.cfg.num_features)
    l0_sum = 0.0
    rows = 0
    while rows < samples:
        feature_acts_BF = world.activation_generator.sample(min(10_000, samples - rows))
        if feature_acts_BF.is_sparse:
            feature_acts_BF = feature_acts_BF.to_dense()
        active_BF = (feature_acts_BF != 0).float().cpu()
        fires_F += active_BF.sum(0)
        l0_sum += active_BF.sum().item()
        rows += active_BF.shape[0]
    top_fires = fires_F.topk(min(top, fires_F.numel())).values.sum().item()
    features, parents = world_forest(world)
    top_level = torch.tensor([f for f, p in zip(features, parents, strict=True) if p < 0])
    return {
        "mean_l0": l0_sum / rows,
        "mean_l0_top": top_fires / rows,
        "top": float(top),
        # Share of firing features that are tree roots or outside any tree.
        "top_level_share": fires_F[top_level].sum().item() / max(fires_F.sum().item(), 1.0),
    }
