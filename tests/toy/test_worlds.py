"""SAELens synthetic worlds: the small world, our SAEs scored by SAELens's evaluation, and the
`toy train --world` CLI's refusals."""

from __future__ import annotations

import json
import math
import os
import tempfile

import pytest
import torch

from pivotal_sae.cli import main
from pivotal_sae.saes.toy_io import build_toy_sae
from pivotal_sae.toy import worlds
from pivotal_sae.toy.synthetic_eval import score_on_world, train_on_world

SMALL = "synthsaebench-small"


@pytest.fixture(scope="module")
def world_cache():
    # One build (~10 s on 2 cores) shared by every test here, never the user's cache; not under
    # pytest's basetemp, which concurrent pytest runs on this machine prune.
    before = os.environ.get("PIVOTAL_SAE_CACHE")
    with tempfile.TemporaryDirectory(prefix="pivotal-worlds-") as cache:
        os.environ["PIVOTAL_SAE_CACHE"] = cache
        yield cache
    if before is None:
        del os.environ["PIVOTAL_SAE_CACHE"]
    else:
        os.environ["PIVOTAL_SAE_CACHE"] = before


@pytest.fixture(autouse=True)
def _shared_world_cache(world_cache, monkeypatch):
    # After conftest's per-test private cache, so every test here shares the one build.
    monkeypatch.setenv("PIVOTAL_SAE_CACHE", world_cache)


@pytest.fixture(scope="module")
def small_world(world_cache):
    return worlds.load_world(SMALL)


def test_small_world_is_cached_and_has_a_tree(small_world):
    assert small_world.feature_dict.feature_vectors.shape == (512, 64)
    assert (worlds.world_dir(SMALL) / "synthetic_model_config.json").exists()
    again = worlds.load_world(SMALL)
    assert torch.equal(again.feature_dict.feature_vectors, small_world.feature_dict.feature_vectors)
    pairs = worlds.parent_child_pairs(small_world)
    parents = {p for p, _ in pairs}
    assert len(pairs) > len(parents) > 4  # roots and inner nodes, branching up to 4


def test_regenerated_world_statistics(small_world):
    stats = worlds.world_statistics(small_world, samples=20_000, top=64)
    assert 1 < stats["mean_l0"] < 20
    assert 0 < stats["mean_l0_top"] <= stats["mean_l0"]
    whole = worlds.world_statistics(small_world, samples=20_000, top=4096)
    assert whole["mean_l0_top"] == pytest.approx(whole["mean_l0"])


@pytest.mark.parametrize("arch", ["topk", "matryoshka", "hierarchical"])
def test_each_architecture_trains_and_is_scored_by_saelens(arch, small_world):
    sae = build_toy_sae(arch, 64, 64, 5, n_children=4)
    speed = train_on_world(sae, small_world, samples=2_560, batch_size=256, lr=3e-3)
    assert speed["samples_per_s"] > 0
    scores = score_on_world(sae, small_world, samples=5_000)
    for name in ("f1", "precision", "recall", "mcc", "uniqueness"):
        assert 0 <= scores[name] <= 1, name
    assert scores["l0"] > 0 and scores["explained_variance"] <= 1
    assert math.isfinite(scores["absorption_gap"]) and scores["parents_scored"] > 0


def test_cli_trains_on_a_world(tmp_path, small_world):
    out = tmp_path / "run"
    args = ["--world", SMALL, "--arch", "topk", "--sae-hidden-dim", "64", "--sae-k", "5"]
    args += ["--max-step", "5", "--batch-size", "64", "--device", "cpu", "--no-plots"]
    assert main(["toy", "train", *args, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world"] == SMALL and 0 <= summary["mcc"] <= 1


BAD_WORLDS = [
    (["--world", "atlantis"], "unknown --world"),
    (["--world", SMALL, "--sae-hidden-dim", "600"], "exceeds --world"),
    (["--world", "synthsaebench-16k", "--sae-hidden-dim", "64"], "GiB to build"),
]


@pytest.mark.parametrize(("args", "needle"), BAD_WORLDS)
def test_bad_world_is_one_line_exit_2_and_writes_nothing(
    args, needle, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(worlds, "available_memory_bytes", lambda: 1 << 30)
    out = tmp_path / "run"
    full = ["toy", "train", *args, "--device", "cpu", "--out", str(out)]
    assert main(full) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err
    assert not out.exists() and list(tmp_path.iterdir()) == []
