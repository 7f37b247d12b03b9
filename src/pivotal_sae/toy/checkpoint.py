"""Checkpoints of a toy run: SAE weights in safetensors plus the state that makes resume exact.

Layout under the run directory:

    checkpoints/step_0005000/cfg.json                  SAE config (self-describing directory)
    checkpoints/step_0005000/sae_weights.safetensors   weights and EMA ratios
    checkpoints/step_0005000/training_state.pt         optimizer, schedulers, RNG, counters
    checkpoints/latest.json                            the newest complete checkpoint

`latest.json` is written last, atomically, so a kill at any moment leaves it pointing at a
checkpoint whose files are all whole. Older checkpoints keep their weights; only the newest keeps
its training state (the optimizer state is the bulk of it and is useless once superseded).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from pivotal_sae.errors import UserError
from pivotal_sae.runs import atomic_save_torch, atomic_write_json
from pivotal_sae.saes.topk import TopKSae
from pivotal_sae.saes.toy_io import WEIGHTS, save_toy_sae

CHECKPOINTS = "checkpoints"
LATEST = "latest.json"
STATE = "training_state.pt"


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINTS / f"step_{step:07d}"


def save_checkpoint(run_dir: Path, step: int, sae: TopKSae, state: dict[str, Any]) -> Path:
    directory = checkpoint_dir(run_dir, step)
    save_toy_sae(sae, directory, extra={"step": step})
    atomic_save_torch(directory / STATE, state)
    atomic_write_json(run_dir / CHECKPOINTS / LATEST, {"step": step, "dir": directory.name})
    for older in (run_dir / CHECKPOINTS).glob(f"step_*/{STATE}"):
        if older.parent != directory:
            older.unlink(missing_ok=True)
    return directory


def latest_checkpoint(run_dir: Path) -> tuple[int, Path]:
    """Step and directory of the newest complete checkpoint, or a UserError saying why not."""
    pointer = run_dir / CHECKPOINTS / LATEST
    if not pointer.is_file():
        raise UserError(f"{run_dir} has no checkpoint to resume from (no {CHECKPOINTS}/{LATEST})")
    try:
        latest = json.loads(pointer.read_text())
        step, directory = int(latest["step"]), run_dir / CHECKPOINTS / latest["dir"]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise UserError(f"{pointer} is damaged; the run cannot be resumed") from None
    if not (directory / STATE).is_file() or not (directory / WEIGHTS).is_file():
        raise UserError(f"checkpoint {directory} is incomplete; the run cannot be resumed")
    return step, directory


def load_training_state(directory: Path, device: torch.device) -> dict[str, Any]:
    return torch.load(directory / STATE, map_location=device, weights_only=True)
