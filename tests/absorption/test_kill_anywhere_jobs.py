"""Issue 13, must-show 2 for `ablate` and `absorb` (`cooccur`: test_hardening_kill_anywhere.py):
a run stopped at sampled file replacements (the manifest, checkpoints, each final results
file, the report and the summary) and resumed with --resume ends with the tensors, pairs and
summary of an uninterrupted run, with no checkpoint or temporary file left. And `cooccur`
SIGKILLed for real inside one of its final writes (leaving what only a real kill leaves: the
temporary file of the write) resumes to the same result."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import torch
from kill_points import count_replacements, kill_then_finish, no_debris, spread

from pivotal_sae.absorption.results import read_file
from pivotal_sae.cli import main

from .test_cli_absorb import (  # noqa: F401 - `tiny` and `_one_thread` are fixtures
    SIZES,
    _one_thread,
    cooccur_args,
    models,
    tiny,
)


def is_timing(key: str) -> bool:
    """Summary entries that time the run (or say it was resumed) rather than give its result."""
    return key.endswith(("_seconds", "per_second")) or key == "resumed"


def outcome(run: Path, files: tuple[str, ...]) -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {}
    for name in files:
        tensors.update(
            {f"{name}/{k}": v for k, v in read_file(run / f"{name}.safetensors")[0].items()}
        )
    summary = json.loads((run / "summary.json").read_text())
    kept = {stage: {k: v for k, v in entry.items() if not is_timing(k)}
            for stage, entry in summary.items() if isinstance(entry, dict)}  # fmt: skip
    if (run / "pairs.json").exists():
        kept["pairs.json"] = json.loads((run / "pairs.json").read_text())
    return tensors, kept


def check_kills(tmp_path, monkeypatch, job: str, argv: list[str], files: tuple[str, ...],
                how_many: int) -> None:  # fmt: skip
    straight = tmp_path / "straight"
    replaced = count_replacements(monkeypatch, lambda: main([*argv, "--out", str(straight)]))
    print(f"{job}: {len(replaced)} kill points")
    expected = outcome(straight, files)
    for kill_at in spread(len(replaced), how_many, last=2):
        run = tmp_path / f"killed-{kill_at}"
        kill_then_finish(monkeypatch, main, argv, [job], run, kill_at)
        tensors, summary = outcome(run, files)
        assert tensors.keys() == expected[0].keys(), kill_at
        for key, value in expected[0].items():
            assert torch.equal(tensors[key], value), (kill_at, key)
        assert summary == expected[1], kill_at
        assert not no_debris(run), (kill_at, no_debris(run))


def test_ablate_killed_at_sampled_writes_resumes_to_the_same_result(
    tmp_path,
    monkeypatch,
    tiny,  # noqa: F811 - the fixture
):
    argv = [
        "ablate",
        *models(tiny),
        *SIZES[:-2],
        "--n-prompts",
        "12",
        "--save-frequency",
        "4",
        "--exclusion-prompts",
        "8",
    ]
    check_kills(tmp_path, monkeypatch, "ablate", argv, ("effects",), how_many=2)


def test_absorb_killed_at_sampled_writes_resumes_to_the_same_result(
    tmp_path,
    monkeypatch,
    tiny,  # noqa: F811
):
    argv = ["absorb", *models(tiny), *SIZES, "--n-prompts", "8", "--cooccurrence-prompts", "12",
            "--save-frequency", "4"]  # fmt: skip
    files = ("cooccurrences", "top_examples", "effects")
    check_kills(tmp_path, monkeypatch, "absorb", argv, files, how_many=3)


# The CLI, SIGKILLing itself just before its N-th file replacement (counted from 0).
KILL_AT_WRITE = """import os, signal, sys
kill_at, calls, replace = int(sys.argv[1]), [0], os.replace
def dying_replace(src, dst):
    if calls[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    calls[0] += 1
    replace(src, dst)
os.replace = dying_replace
from pivotal_sae.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_cooccur_sigkilled_inside_a_final_write_resumes_to_the_same_result(
    tmp_path,
    tmp_path_factory,
    monkeypatch,
    tiny,  # noqa: F811
):
    argv = [*cooccur_args(tiny), "--n-prompts", "12", "--save-frequency", "4"]
    straight = tmp_path / "straight"
    replaced = count_replacements(monkeypatch, lambda: main([*argv, "--out", str(straight)]))
    kill_at = random.randrange(len(replaced) - 4, len(replaced))  # the final files, the summary
    print(f"SIGKILL before writing {replaced[kill_at]}")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # float sums as in this process (one thread)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(tmp_path_factory.getbasetemp() / "pycache")
    run = tmp_path / "killed"
    command = [sys.executable, "-c", KILL_AT_WRITE, str(kill_at), *argv, "--out", str(run)]
    child = subprocess.run(command, env=env, capture_output=True, timeout=240)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    assert [p for p in run.rglob("*") if p.name.endswith(".tmp")]  # the write it was inside
    assert main(["cooccur", "--resume", str(run)]) == 0
    files = ("cooccurrences", "top_examples")
    tensors, summary = outcome(run, files)
    expected = outcome(straight, files)
    for key, value in expected[0].items():
        assert torch.equal(tensors[key], value), key
    assert summary == expected[1]
    assert not no_debris(run), no_debris(run)
