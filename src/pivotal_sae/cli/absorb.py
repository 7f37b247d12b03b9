"""Absorption-search commands: `cooccur`, `ablate`, `pairs` and `absorb`."""

from __future__ import annotations

import typer

from pivotal_sae.absorption.config import AblateConfig, AbsorbConfig, CooccurConfig, PairsConfig
from pivotal_sae.configs import typer_command


def _cooccur(config: CooccurConfig) -> None:
    from pivotal_sae.absorption.jobs.cooccur import run_cooccur

    run_cooccur(config)


def _ablate(config: AblateConfig) -> None:
    from pivotal_sae.absorption.jobs.ablate import run_ablate

    run_ablate(config)


def _pairs(config: PairsConfig) -> None:
    from pivotal_sae.absorption.jobs.pairs import run_pairs

    run_pairs(config)


def _absorb(config: AbsorbConfig) -> None:
    from pivotal_sae.absorption.jobs.absorb import run_absorb

    run_absorb(config)


def register(app: typer.Typer) -> None:
    app.command("absorb")(typer_command(AbsorbConfig, _absorb))
    app.command("cooccur")(typer_command(CooccurConfig, _cooccur))
    app.command("ablate")(typer_command(AblateConfig, _ablate))
    app.command("pairs")(typer_command(PairsConfig, _pairs))
