"""Language-model commands: `train-sae` and `sae-info`."""

from __future__ import annotations

import typer

from pivotal_sae.configs import typer_command
from pivotal_sae.training.config import SaeInfoConfig, TrainSaeConfig


def _train_sae(config: TrainSaeConfig) -> None:
    from pivotal_sae.training.job import run_train_sae

    run_train_sae(config)


def _sae_info(config: SaeInfoConfig) -> None:
    from pivotal_sae.training.info import run_sae_info

    run_sae_info(config)


def register(app: typer.Typer) -> None:
    app.command("train-sae")(typer_command(TrainSaeConfig, _train_sae))
    app.command("sae-info")(typer_command(SaeInfoConfig, _sae_info))
