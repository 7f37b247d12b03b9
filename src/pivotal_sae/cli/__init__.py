"""The `pivotal-sae` command line: parse, build a config, call the library, say where results went.

Each job's sub-command lives in its own module beside this one and is registered here.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

try:  # Typer >= 0.20 carries its own copy of Click
    from typer._click import _textwrap as click_textwrap
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover
    from click import _textwrap as click_textwrap  # type: ignore[no-redef]
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

from pivotal_sae.configs import expand_multi_value_options, refuse_empty_paths
from pivotal_sae.errors import UserError

app = typer.Typer(
    name="pivotal-sae",
    help="Find and measure feature absorption in sparse autoencoders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Click's plain help: rich's 80-column tables cut long option names short
    # ("--ablator-sae-pa…"), which makes them impossible to read or copy.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _register() -> None:
    from pivotal_sae.cli import toy

    app.add_typer(toy.app, name="toy")
    from pivotal_sae.cli import lm

    lm.register(app)
    from pivotal_sae.cli import absorb

    absorb.register(app)
    from pivotal_sae.cli import ground_truth

    ground_truth.register(app)
    from pivotal_sae.cli import explorer

    explorer.register(app)


_register()


class _HelpTextWrapper(click_textwrap.TextWrapper):
    """Help text names options ("the top --abridge-ablations-to"): wrapping lines at their
    hyphens would cut those names in two."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "break_on_hyphens": False})


# Click looks its wrapper up on each call and uses it for help text only.
click_textwrap.TextWrapper = _HelpTextWrapper  # type: ignore[misc]


def _fail(message: str) -> None:
    message = " ".join(message.replace("Value error, ", "").split())
    print("pivotal-sae: error: " + message, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script. Users' errors become one stderr line and exit code 2."""
    args = expand_multi_value_options(list(sys.argv[1:] if argv is None else argv))
    try:
        refuse_empty_paths(args)
        command = typer.main.get_command(app)
        result = command.main(args=args, prog_name="pivotal-sae", standalone_mode=False)
    except UserError as exc:
        _fail(str(exc))
        return 2
    except click_exceptions.NoArgsIsHelpError:
        return 2  # Typer has already shown the help
    except click_exceptions.UsageError as exc:
        where = f"{exc.ctx.command_path}: " if exc.ctx else ""
        _fail(where + exc.format_message())
        return 2
    except click_exceptions.ClickException as exc:
        _fail(exc.format_message())
        return 2
    except typer.Abort:
        print("pivotal-sae: aborted", file=sys.stderr)
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
