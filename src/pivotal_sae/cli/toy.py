"""`pivotal-sae toy ...`: the toy hierarchy lab (SPEC §1)."""

from __future__ import annotations

import typer

from pivotal_sae.configs import typer_command
from pivotal_sae.toy.config import ToyTrainConfig

app = typer.Typer(
    help="The toy hierarchy lab: synthetic parent/child features with ground truth.",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help, as every command (see cli/__init__.py)
)


HEADLINE = (
    "adjusted_pair_detection_rate",
    "pair_detection_rate",
    "mmcs_mean",
    "dead_latents",
    "absorption_rate",
    "val_reconstruction_mse",
    "steps_per_second",
)


def _train(config: ToyTrainConfig) -> None:
    from pivotal_sae.toy.train import train

    summary = train(config)
    shown = ", ".join(
        f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
        for key in HEADLINE
        if (value := summary.get(key)) is not None
    )
    print(shown)
    print(f"results in {summary['run_dir']} (summary.json, metrics.jsonl, plots/, tensorboard/)")


app.command("train")(typer_command(ToyTrainConfig, _train))
