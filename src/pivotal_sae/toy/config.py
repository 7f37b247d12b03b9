"""Configuration of `pivotal-sae toy train`: one dataclass, the source of the CLI and its docs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pivotal_sae.errors import UserError


@dataclass
class ToyTrainConfig:
    """Train an SAE on synthetic data with planted parent/child features and score it."""

    arch: Literal["topk", "hierarchical", "matryoshka"] = "topk"
    """SAE architecture. `hierarchical` adds winner-take-all children under each parent latent."""

    hierarchical: bool = field(default=False, metadata={"flag": "--hierarchical"})
    """The seed's spelling of `--arch hierarchical`."""

    n_children: int = 2
    """Child latents per parent latent (hierarchical SAE; at least 2)."""

    lr: float = 1e-4
    """Adam learning rate."""

    min_lr: float = 1e-6
    """Floor of the ReduceLROnPlateau schedule."""

    max_step: int = 5_000
    """Training steps (0 evaluates the initial SAE, useful with --handcode-sae)."""

    batch_size: int = 100
    """Samples per training step."""

    seed: int = 1
    """Seed for the ground-truth features, the data stream and the SAE initialisation."""

    sae_hidden_dim: int = 30
    """SAE latents E (parent latents for the hierarchical SAE)."""

    dataset_num_features: int = 30
    """Ground-truth parent features A."""

    model_dim: int = 50
    """Dimension M of the synthetic activation space."""

    perturbation_size: float = field(default=0.2, metadata={"aliases": ["--perturbation_size"]})
    """Norm of each child's perturbation away from its parent direction."""

    dataset_k: int = 1
    """Distinct parents active in each sample."""

    sae_k: int = 1
    """k of the TopK (parent) layer."""

    aux_loss_coeff: float = 0.0
    """Weight of the hierarchical SAE's parent/child alignment loss."""

    handcode_sae: bool = field(default=False, metadata={"flag": "--handcode-sae"})
    """Set the SAE to the ground truth by hand (sanity check: pair detection must be 1.0)."""

    parent_only_prob: float = 0.0
    """Probability that an active parent fires alone, with none of its children."""

    eval_every: int = 1_000
    """Steps between full evaluations, plots and checkpoints."""

    device: str = "auto"
    """auto, cpu or cuda (auto picks cuda when a GPU is available)."""

    out: Path | None = None
    """Run directory (default: runs/<timestamp>-toy-<arch>)."""

    resume: Path | None = None
    """Continue the run in this directory from its last checkpoint."""

    def __post_init__(self) -> None:
        if self.hierarchical:
            self.arch = "hierarchical"
            self.hierarchical = False
        checks = [
            (self.n_children >= 2, f"--n-children must be at least 2 (got {self.n_children})"),
            (self.lr > 0, f"--lr must be positive (got {self.lr})"),
            (self.min_lr >= 0, f"--min-lr must be non-negative (got {self.min_lr})"),
            (self.max_step >= 0, f"--max-step must be non-negative (got {self.max_step})"),
            (self.batch_size >= 1, f"--batch-size must be at least 1 (got {self.batch_size})"),
            (self.sae_hidden_dim >= 1, "--sae-hidden-dim must be at least 1"),
            (self.dataset_num_features >= 1, "--dataset-num-features must be at least 1"),
            (self.model_dim >= 1, "--model-dim must be at least 1"),
            (self.perturbation_size >= 0, "--perturbation-size must be non-negative"),
            (
                1 <= self.dataset_k <= self.dataset_num_features,
                f"--dataset-k ({self.dataset_k}) must be between 1 and "
                f"--dataset-num-features ({self.dataset_num_features})",
            ),
            (
                1 <= self.sae_k <= self.sae_hidden_dim,
                f"--sae-k ({self.sae_k}) must be between 1 and --sae-hidden-dim "
                f"({self.sae_hidden_dim})",
            ),
            (
                0 <= self.parent_only_prob <= 1,
                f"--parent-only-prob must be in [0, 1] (got {self.parent_only_prob})",
            ),
            (self.eval_every >= 1, "--eval-every must be at least 1"),
            (
                self.device.lower() in ("auto", "cpu") or self.device.lower().startswith("cuda"),
                f"unknown --device {self.device!r}; choose auto, cpu or cuda",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)

    def replace(self, **changes: object) -> ToyTrainConfig:
        return dataclasses.replace(self, **changes)
