"""Issue 13, must-show 2 (in-process part): `cooccur` stopped at every file replacement of
its run (manifest, each checkpoint file and pointer, the final files, the summary) resumes
to the tensors and summary of an uninterrupted run, with no checkpoint or debris left."""

from __future__ import annotations

import json

import torch
from kill_points import count_replacements, kill_then_finish

from pivotal_sae.absorption.results import read_file
from pivotal_sae.cli import main

from .test_cli_absorb import cooccur_args, tiny  # noqa: F401 - `tiny` is a fixture


def _outcome(run) -> tuple[dict, dict]:
    tensors = {}
    for name in ("cooccurrences", "top_examples"):
        tensors.update(
            {f"{name}/{k}": v for k, v in read_file(run / f"{name}.safetensors")[0].items()}
        )
    summary = json.loads((run / "summary.json").read_text())["cooccur"]
    kept = {k: v for k, v in summary.items() if k not in ("wall_seconds", "tokens_per_second")}
    return tensors, kept


def test_cooccur_killed_at_every_write_resumes_to_the_same_result(
    tmp_path,
    monkeypatch,
    tiny,  # noqa: F811 - the fixture
):
    argv = [*cooccur_args(tiny), "--n-prompts", "12", "--save-frequency", "4"]
    straight = tmp_path / "straight"
    codes: list[int] = []
    replaced = count_replacements(
        monkeypatch, lambda: codes.append(main([*argv, "--out", str(straight)]))
    )
    assert codes == [0]
    expected_tensors, expected_summary = _outcome(straight)
    assert len(replaced) >= 8
    print(f"{len(replaced)} kill points")
    for kill_at in range(len(replaced)):
        run = tmp_path / f"killed-{kill_at}"
        kill_then_finish(monkeypatch, main, argv, ["cooccur"], run, kill_at)
        tensors, summary = _outcome(run)
        assert tensors.keys() == expected_tensors.keys()
        for key, value in expected_tensors.items():
            assert torch.equal(tensors[key], value), (kill_at, key)
        assert summary == expected_summary, kill_at
        assert not (run / "checkpoints").exists(), kill_at
        assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")], kill_at
