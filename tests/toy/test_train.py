"""The training job end to end: outputs of a run directory, recipes, resume after a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pivotal_sae.toy import checkpoint
from pivotal_sae.toy.config import ToyTrainConfig
from pivotal_sae.toy.train import train

TINY = dict(max_step=60, eval_every=20, log_every=10, plots=False, device="cpu")


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    _, directory = checkpoint.latest_checkpoint(run_dir)
    return load_file(str(directory / "sae_weights.safetensors"))


def test_run_directory_holds_every_output(tmp_path):
    summary = train(ToyTrainConfig(out=tmp_path / "run", **{**TINY, "plots": True}))
    run = tmp_path / "run"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["job"] == "toy-train" and manifest["config"]["arch"] == "hierarchical"
    assert "git_commit" in manifest["code_version"] and manifest["packages"]["torch"]
    assert json.loads((run / "summary.json").read_text()) == summary
    for key in (
        "pair_detection_rate",
        "adjusted_pair_detection_rate",
        "single_detection_rate",
        "mmcs_min",
        "mmcs_mean",
        "dead_latents",
        "val_reconstruction_mse",
        "absorption_rate",
        "steps",
        "steps_per_second",
    ):
        assert key in summary
    assert summary["steps"] == 60 and summary["steps_per_second"] > 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "eval"] == [0, 20, 40, 60]
    assert [r["step"] for r in records if r["kind"] == "train"] == [10, 20, 30, 40, 50, 60]
    assert {"train_reconstruction_loss", "train_aux_loss", "lr", "mmcs_mean"} <= set(records[1])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    train_loss = events.Scalars("train/train_reconstruction_loss")
    assert [e.step for e in train_loss] == [10, 20, 30, 40, 50, 60]
    assert train_loss[-1].value == pytest.approx(records[-2]["train_reconstruction_loss"])
    assert [e.step for e in events.Scalars("eval/adjusted_pair_detection_rate")] == [0, 20, 40, 60]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "latest.json",
        "step_0000000",
        "step_0000020",
        "step_0000040",
        "step_0000060",
    ]
    plots = {p.name for p in (run / "plots").glob("*.png")}
    assert "feature_vs_feature.png" in plots
    for name in ("decoder_vs_features", "decoder_vs_features_sorted", "latent_vs_latent"):
        assert f"step_0000060_{name}.png" in plots
    assert "step_0000060_decoder_norms.png" in plots
    # Training curves beside TensorBoard, and an index page listing every plot.
    assert (run / "plots" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    index = (run / "plots" / "index.html").read_text()
    for name in plots:
        assert f'src="{name}"' in index
    assert index.index('src="curves.png"') < index.index('src="step_0000060_decoder_norms.png"')


@pytest.mark.parametrize("arch", ["topk", "matryoshka"])
def test_flat_architectures_report_null_for_pair_metrics(arch, tmp_path):
    summary = train(
        ToyTrainConfig(
            arch=arch, sae_hidden_dim=90, sae_k=6, parent_only_prob=0.3, out=tmp_path / "r", **TINY
        )
    )
    assert summary["pair_detection_rate"] is None and summary["adjusted_mmcs_mean"] is None
    assert 0 <= summary["absorption_rate"] <= 1
    assert set(summary["dead_latents_by_kind"]) == {"latent"}


def test_original_recipe_turns_every_improvement_off():
    config = ToyTrainConfig(recipe="original")
    assert (config.relu, config.init_encoder_from_decoder, config.normalize_decoder) == (
        False,
        False,
        False,
    )
    assert config.aux_k == 0 and config.balance_rate == 0 and config.resample_every == 0
    improved = ToyTrainConfig(recipe="improved", aux_k=0)
    assert improved.aux_k == 0 and improved.relu is True, "explicit options beat the recipe"


class Crash(Exception):
    pass


def test_resume_after_a_crash_ends_with_identical_weights(tmp_path, monkeypatch):
    settings = dict(recipe="improved", max_step=90, eval_every=30, plots=False, device="cpu")
    train(ToyTrainConfig(out=tmp_path / "straight", **settings))

    save = checkpoint.save_checkpoint

    def save_then_crash(run_dir, step, sae, state):
        directory = save(run_dir, step, sae, state)
        if step == 30:
            raise Crash
        return directory

    monkeypatch.setattr(checkpoint, "save_checkpoint", save_then_crash)
    with pytest.raises(Crash):
        train(ToyTrainConfig(out=tmp_path / "crashed", **settings))
    monkeypatch.setattr(checkpoint, "save_checkpoint", save)
    assert not (tmp_path / "crashed" / "summary.json").exists()
    summary = train(ToyTrainConfig(resume=tmp_path / "crashed"))
    assert summary["steps_this_session"] == 60
    straight, resumed = final_weights(tmp_path / "straight"), final_weights(tmp_path / "crashed")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name
    eval_steps = [
        json.loads(line)["step"]
        for line in (tmp_path / "crashed" / "metrics.jsonl").read_text().splitlines()
        if '"eval"' in line
    ]
    assert eval_steps == [0, 30, 60, 90], "records after the checkpoint are not duplicated"
