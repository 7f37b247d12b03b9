"""Ground-truth commands: `absorption-score` and `plant-absorption`."""

from __future__ import annotations

import typer

from pivotal_sae.absorption.score_config import AbsorptionScoreConfig, PlantAbsorptionConfig
from pivotal_sae.configs import typer_command


def _absorption_score(config: AbsorptionScoreConfig) -> None:
    from pivotal_sae.absorption.jobs.score import run_absorption_score

    run_absorption_score(config)


def _plant_absorption(config: PlantAbsorptionConfig) -> None:
    from pivotal_sae.absorption.jobs.plant import run_plant_absorption

    run_plant_absorption(config)


def register(app: typer.Typer) -> None:
    app.command("absorption-score")(typer_command(AbsorptionScoreConfig, _absorption_score))
    app.command("plant-absorption")(typer_command(PlantAbsorptionConfig, _plant_absorption))
