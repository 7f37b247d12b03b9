"""Issue 13, must-show 2 (in-process part): `cooccur` stopped at every file replacement of
its run (manifest, each checkpoint file and pointer, the final files, the summary) resumes
to the tensors and summary of an uninterrupted run, with no checkpoint or debris left."""

from __future__ import annotations

import json
import os

import pytest
import torch

from pivotal_sae.absorption.results import read_file
from pivotal_sae.cli import main

from .test_cli_absorb import cooccur_args, tiny  # noqa: F401 - `tiny` is a fixture


class Killed(BaseException):
    """Stands in for SIGKILL: nothing on the way out handles it."""


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
    replaced = []
    real_replace = os.replace

    def counting(src, dst):
        replaced.append(dst)
        return real_replace(src, dst)

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", counting)
        assert main([*argv, "--out", str(straight)]) == 0
    expected_tensors, expected_summary = _outcome(straight)
    assert len(replaced) >= 8
    print(f"{len(replaced)} kill points")
    for kill_at in range(len(replaced)):
        run = tmp_path / f"killed-{kill_at}"
        calls = []

        def dies(src, dst, kill_at=kill_at, calls=calls):
            calls.append(dst)
            if len(calls) - 1 == kill_at:
                raise Killed
            return real_replace(src, dst)

        with monkeypatch.context() as patch:
            patch.setattr(os, "replace", dies)
            with pytest.raises(Killed):
                main([*argv, "--out", str(run)])
        if not (run / "manifest.json").exists():
            assert main([*argv, "--out", str(run)]) == 0  # killed before the run existed
        else:
            assert main(["cooccur", "--resume", str(run)]) == 0, kill_at
        tensors, summary = _outcome(run)
        assert tensors.keys() == expected_tensors.keys()
        for key, value in expected_tensors.items():
            assert torch.equal(tensors[key], value), (kill_at, key)
        assert summary == expected_summary, kill_at
        assert not (run / "checkpoints").exists(), kill_at
        assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")], kill_at
