"""Checkpoints of `train-sae`, so that a killed run resumes (`--resume RUN`) to the result of an
uninterrupted one.

A checkpoint (`checkpoints/step-<N>/`, the scheme of `pivotal_sae.checkpoints`) holds each SAE's
training state after step N: weights, optimizer and schedule, dead-latent counters. It does not
hold the shuffling buffer. A resumed run reads the corpus again from the start through the model
and the buffer (same contexts, same shuffle seed, so the same batches) and trains only from step
N + 1: the model's forward passes up to the checkpoint are repeated, the SAE steps are not.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from pivotal_sae.checkpoints import LATEST, CheckpointFolder
from pivotal_sae.configs import config_to_dict
from pivotal_sae.errors import UserError
from pivotal_sae.runs import read_manifest
from pivotal_sae.training.config import TrainSaeConfig

JOB = "train-sae"
#: Options a resumed run may change: where it runs, not what it computes.
RESUMABLE_CHANGES = ("resume", "out", "device", "force")


class Trainer(Protocol):
    def save_state(self, directory: Path) -> None: ...

    def load_state(self, directory: Path) -> None: ...


def resumed_config(config: TrainSaeConfig) -> TrainSaeConfig:
    """The options `config.resume` was started with (from its manifest). Flags given beside
    --resume must agree with them; only --device may change."""
    assert config.resume is not None
    run_dir = Path(config.resume)
    saved = read_manifest(run_dir, JOB).get("config", {})
    given = config_to_dict(config)
    plain = config_to_dict(TrainSaeConfig())
    for name, value in given.items():
        if name in RESUMABLE_CHANGES or value == plain.get(name) or value == saved.get(name):
            continue
        raise UserError(
            f"--resume continues {run_dir} with the options it was started with; "
            f"--{name.replace('_', '-')} {value} differs from its {saved.get(name)} (leave it out)"
        )
    names = {f.name for f in dataclasses.fields(TrainSaeConfig)} - set(RESUMABLE_CHANGES)
    values = {k: v for k, v in saved.items() if k in names}
    if "corpus" in values and values["corpus"] is not None:
        values["corpus"] = Path(values["corpus"])
    values["device"] = (
        config.device if config.device != plain["device"] else saved.get("device", plain["device"])
    )
    try:
        resumed = TrainSaeConfig(**values, out=run_dir)
    except (TypeError, ValueError, AttributeError, UserError) as exc:
        raise UserError(
            f"{run_dir / 'manifest.json'} is damaged: its config does not make a run ({exc})"
        ) from None
    if not resumed.hook:
        raise UserError(f"{run_dir / 'manifest.json'} is damaged: it names no --hook")
    return resumed


class TrainingCheckpoints:
    """`RUN/checkpoints`: the newest complete training state, saved every --save-every steps."""

    def __init__(self, run_dir: Path) -> None:
        self.folder = CheckpointFolder(run_dir)

    def latest_step(self) -> tuple[int, int, Path] | None:
        """(step, tokens, folder) of the newest complete checkpoint, or None if there is none."""
        record = self.folder.pointer()
        if record is None:
            return None
        step, tokens = record.get("step"), record.get("tokens")
        if not (isinstance(step, int) and isinstance(tokens, int) and step >= 1 and tokens >= 0):
            raise UserError(f"{self.folder.dir / LATEST} is damaged; the run cannot resume")
        return step, tokens, self.folder.folder(record["dir"])

    def save(self, step: int, tokens: int, trainers: Mapping[str, Trainer]) -> None:
        name = f"step-{step:09d}"
        directory = self.folder.folder(name)
        shutil.rmtree(directory, ignore_errors=True)  # what a killed save of this step left
        for index, trainer in enumerate(trainers.values()):
            trainer.save_state(directory / f"sae-{index}")
        self.folder.commit(name, {"step": step, "tokens": tokens})

    def restore(self, directory: Path, trainers: Mapping[str, Trainer]) -> None:
        for index, trainer in enumerate(trainers.values()):
            part = directory / f"sae-{index}"
            try:
                trainer.load_state(part)
            except UserError:
                raise
            except Exception as exc:  # a damaged file fails inside torch or safetensors
                raise UserError(
                    f"checkpoint {part} is damaged ({type(exc).__name__}); the run cannot resume"
                ) from None

    def clear(self) -> None:
        self.folder.clear()


def finished(run_dir: Path) -> bool:
    return (Path(run_dir) / "summary.json").is_file()


def describe(state: Any) -> str:
    return "from its start" if state is None else f"from step {state[0]:,}"
