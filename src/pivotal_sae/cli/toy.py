"""`pivotal-sae toy ...`: the toy hierarchy lab (SPEC §1)."""

from __future__ import annotations

import typer

from pivotal_sae.configs import typer_command
from pivotal_sae.toy.config import ToyTrainConfig

app = typer.Typer(
    help="The toy hierarchy lab: synthetic parent/child features with ground truth.",
    no_args_is_help=True,
)


def _train(config: ToyTrainConfig) -> None:
    print(config)


app.command("train")(typer_command(ToyTrainConfig, _train))
