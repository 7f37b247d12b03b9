"""The CLI's contract with users: one line on stderr and exit code 2 for bad input."""

from __future__ import annotations

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
