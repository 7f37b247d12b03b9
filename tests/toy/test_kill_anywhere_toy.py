"""Issue 13, must-show 2 for `toy train`: a run stopped at sampled file replacements (the
manifest, checkpoints, and the final writes: last checkpoint and summary) and resumed with
--resume ends with the checkpoints, metrics and summary of an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from kill_points import count_replacements, kill_then_finish, spread
from safetensors.torch import load_file

from pivotal_sae.cli import main

ARGS = ["toy", "train", "--max-step", "30", "--eval-every", "10", "--log-every", "7",
        "--no-plots", "--device", "cpu", "--batch-size", "20", "--seed", "3"]  # fmt: skip
#: Summary entries that describe this session, not the result.
SESSION = ("steps_this_session", "steps_per_second", "wall_seconds", "run_dir")


def outcome(run: Path) -> tuple[dict[str, torch.Tensor], dict, list[dict]]:
    """Every kept checkpoint's weights and cfg, the summary without timings, the metrics."""
    tensors: dict[str, torch.Tensor] = {}
    configs = {}
    for folder in sorted((run / "checkpoints").glob("step_*")):
        weights = load_file(str(folder / "sae_weights.safetensors"))
        tensors.update({f"{folder.name}/{k}": v for k, v in weights.items()})
        configs[folder.name] = json.loads((folder / "cfg.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    kept = {k: v for k, v in summary.items() if k not in SESSION}
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return tensors, {"summary": kept, "configs": configs}, metrics


def test_toy_train_killed_at_sampled_writes_resumes_to_the_same_result(tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    replaced = count_replacements(monkeypatch, lambda: main([*ARGS, "--out", str(straight)]))
    assert any("summary.json" in p for p in replaced), replaced
    expected = outcome(straight)
    assert len(expected[0]) >= 4 * 2  # checkpoints at steps 0, 10, 20 and 30
    for kill_at in spread(len(replaced), 3, last=2):
        run = tmp_path / f"killed-{kill_at}"
        kill_then_finish(monkeypatch, main, ARGS, ["toy", "train"], run, kill_at)
        tensors, json_parts, metrics = outcome(run)
        assert tensors.keys() == expected[0].keys(), kill_at
        for key, value in expected[0].items():
            assert torch.equal(tensors[key], value), (kill_at, key)
        assert (json_parts, metrics) == expected[1:], kill_at
        assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")], kill_at
