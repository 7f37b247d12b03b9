"""Issue 13, must-show 2 for `ablate` and `absorb` (`cooccur`: test_hardening_kill_anywhere.py):
a run stopped at sampled file replacements (the manifest, checkpoints, each final results
file, the report and the summary) and resumed with --resume ends with the tensors, pairs and
summary of an uninterrupted run, with no checkpoint or temporary file left."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from kill_points import count_replacements, no_debris, run_killed_at, spread

from pivotal_sae.absorption.results import read_file
from pivotal_sae.cli import main

from .test_cli_absorb import SIZES, models, tiny  # noqa: F401 - `tiny` is a fixture


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
        run_killed_at(monkeypatch, kill_at, lambda run=run: main([*argv, "--out", str(run)]))
        if not (run / "manifest.json").exists():
            assert main([*argv, "--out", str(run)]) == 0  # killed before the run existed
        else:
            assert main([job, "--resume", str(run)]) == 0, kill_at
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
