"""The CLI's contract with users: one line on stderr and exit code 2 for bad input."""

from __future__ import annotations

import re

import pytest

from pivotal_sae.cli import main
from pivotal_sae.configs import expand_multi_value_options


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["toy", "train", "--arch", "nope"], "--arch"),
        (["toy", "train", "--no-such-flag"], "--no-such-flag"),
        (["toy", "train", "--lr", "-1"], "--lr"),
        (["toy", "train", "--device", "tpu"], "--device"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert needle in err
    assert "Traceback" not in err


def test_help_exits_zero(capsys):
    assert main(["toy", "train", "--help"]) == 0
    assert "--perturbation-size" in capsys.readouterr().out


def test_multi_value_options_accept_argparse_style():
    from pivotal_sae import configs

    configs.MULTI_VALUE_OPTIONS.add("--xs")
    argv = ["cmd", "--xs", "1", "2", "3", "--y", "4"]
    assert expand_multi_value_options(argv) == [
        "cmd",
        "--xs",
        "1",
        "--xs",
        "2",
        "--xs",
        "3",
        "--y",
        "4",
    ]


def _leaf_commands():
    """(argv prefix, click command) for every command of the CLI, sub-groups walked."""
    import typer

    from pivotal_sae.cli import app

    def walk(prefix, command):
        subcommands = getattr(command, "commands", None)
        if subcommands is None:
            yield prefix, command
            return
        for name, sub in sorted(subcommands.items()):
            yield from walk([*prefix, name], sub)

    return list(walk([], typer.main.get_command(app)))


@pytest.mark.parametrize(
    ("argv", "command"), _leaf_commands(), ids=[" ".join(a) for a, _ in _leaf_commands()]
)
def test_help_at_80_columns_shows_every_option_name_whole(argv, command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("TERM", "dumb")
    assert main([*argv, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Usage: pivotal-sae {' '.join(argv)} [OPTIONS]"), out[:200]
    assert max(len(line) for line in out.splitlines()) <= 80
    for param in command.params:
        if param.hidden:
            continue
        for name in [*param.opts, *param.secondary_opts]:
            assert name in re.findall(r"-[\w-]+", out), (
                f"{name} cut or missing in `{' '.join(argv)} --help`"
            )
    assert not re.findall(r"--[\w-]*-\n", out), "an option name in a description wrapped"
    assert "<bool>" not in out, "switches take no value"


def test_the_cli_starts_without_importing_torch():
    """--help and the hub checks stay fast: no command module imports torch when loaded
    (torch alone takes seconds to import on a small machine)."""
    import subprocess
    import sys

    code = "import sys, pivotal_sae.cli; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
