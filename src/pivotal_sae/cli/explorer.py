"""Explorer commands: `serve` (the web app) and `highlight` (its command-line client)."""

from __future__ import annotations

import typer

from pivotal_sae.configs import typer_command
from pivotal_sae.explorer.config import HighlightConfig, ServeConfig


def _serve(config: ServeConfig) -> None:
    from pivotal_sae.explorer.app import serve

    serve(config)


def _highlight(config: HighlightConfig) -> None:
    from pivotal_sae.explorer.client import run_highlight

    run_highlight(config)


def register(app: typer.Typer) -> None:
    app.command("serve")(typer_command(ServeConfig, _serve))
    app.command("highlight")(typer_command(HighlightConfig, _highlight))
