"""Checkpoints of a toy run: SAE weights in safetensors plus the state that makes resume exact.

The shared scheme of `pivotal_sae.checkpoints`, one folder per evaluation step:

    checkpoints/step_0005000/cfg.json                  SAE config (self-describing directory)
    checkpoints/step_0005000/sae_weights.safetensors   weights and EMA ratios
    checkpoints/step_0005000/training_state.pt         optimizer, schedulers, RNG, counters
    checkpoints/latest.json                            the newest complete checkpoint

Older checkpoints keep their weights; only the newest keeps its training state (the optimizer
state is the bulk of it and is useless once superseded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pivotal_sae.checkpoints import CHECKPOINTS, LATEST, CheckpointFolder
from pivotal_sae.errors import UserError
from pivotal_sae.runs import atomic_save_torch
from pivotal_sae.saes.topk import TopKSae
from pivotal_sae.saes.toy_io import WEIGHTS, save_toy_sae

STATE = "training_state.pt"


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return CheckpointFolder(run_dir).folder(f"step_{step:07d}")


def _is_step_folder(path: Path) -> bool:
    return path.is_dir() and path.name.startswith("step_") and (path / WEIGHTS).is_file()


def save_checkpoint(run_dir: Path, step: int, sae: TopKSae, state: dict[str, Any]) -> Path:
    folder = CheckpointFolder(run_dir)
    directory = checkpoint_dir(run_dir, step)
    save_toy_sae(sae, directory, extra={"step": step})
    atomic_save_torch(directory / STATE, state)
    folder.commit(directory.name, {"step": step}, keep=_is_step_folder)
    for older in folder.dir.glob(f"step_*/{STATE}"):
        if older.parent != directory:
            older.unlink(missing_ok=True)
    return directory


def has_checkpoint(run_dir: Path) -> bool:
    """Whether a checkpoint was ever completed (a run killed before its first has none)."""
    return CheckpointFolder(run_dir).pointer() is not None


def latest_checkpoint(run_dir: Path) -> tuple[int, Path]:
    """Step and directory of the newest complete checkpoint, or a UserError saying why not."""
    record = CheckpointFolder(run_dir).pointer()
    if record is None:
        raise UserError(f"{run_dir} has no checkpoint to resume from (no {CHECKPOINTS}/{LATEST})")
    directory = checkpoint_dir(run_dir, 0).parent / record["dir"]
    try:
        step = int(record["step"])
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{run_dir / CHECKPOINTS / LATEST} is damaged (no step)") from None
    if not (directory / STATE).is_file() or not (directory / WEIGHTS).is_file():
        raise UserError(f"checkpoint {directory} is incomplete; the run cannot be resumed")
    return step, directory


def load_training_state(directory: Path, device: torch.device) -> dict[str, Any]:
    path = directory / STATE
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged file
        raise UserError(f"{path} is damaged and cannot be read ({type(exc).__name__})") from None
