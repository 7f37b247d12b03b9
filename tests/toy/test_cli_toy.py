"""`pivotal-sae toy train` as users call it: the handcoded sanity check and bad input."""

from __future__ import annotations

import json

import pytest
import torch

from pivotal_sae.cli import main

HANDCODED = [
    "toy",
    "train",
    "--hierarchical",
    "--handcode-sae",
    "--max-step",
    "0",
    "--sae-hidden-dim",
    "30",
    "--dataset-num-features",
    "30",
    "--model-dim",
    "50",
    "--perturbation-size",
    "0.4",
]


def test_handcoded_sae_detects_every_pair(tmp_path, capsys):
    # The exact command; plots are left out here only to keep the test quick.
    assert main([*HANDCODED, "--no-plots", "--out", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["pair_detection_rate"] == 1.0
    assert summary["adjusted_pair_detection_rate"] == 1.0
    assert summary["dead_latents"] == 0 and summary["absorption_rate"] == 0.0
    assert str(tmp_path / "run") in capsys.readouterr().out


BAD_INPUT = [
    (["--dataset-k", "31"], "--dataset-k"),
    (["--sae-k", "31"], "--sae-k"),
    (["--n-children", "1"], "--n-children"),
    (["--lr", "-0.1"], "--lr"),
    (["--device", "tpu"], "--device"),
    (["--handcode-sae", "--arch", "topk"], "--handcode-sae"),
    (["--resume", "{tmp}"], "not a run directory"),
    (["--resume", "{tmp}/missing"], "not a directory"),
    # issue 13, defect 16: nonsense that used to train to NaN or be silently reinterpreted
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--lr", "1e308"], "--lr must be in (0, 1]"),
    (["--perturbation-size", "inf"], "--perturbation-size must be a finite number"),
    (["--aux-loss-coeff", "nan"], "--aux-loss-coeff must be a finite number"),
    (["--arch", "topk", "--hierarchical"], "--hierarchical contradicts --arch topk"),
    (["--out", "{tmp}/new", "--resume", "{tmp}"], "give either --out or --resume"),
    (["--out", ""], "--out is empty"),
    (["--out="], "--out is empty"),
    # defect 8: sizes that cannot fit are refused before anything is written
    (["--batch-size", "1000000000"], "GiB of memory"),
    (["--sae-hidden-dim", "1000000000"], "GiB of memory"),
    (["--dataset-num-features", "1000000000"], "GiB of memory"),
    (["--model-dim", "1000000000"], "GiB of memory"),
    (["--n-children", "1000000000"], "GiB of memory"),
    # defect 7: --out where nothing can be created
    (["--out", "/proc/pivotal-sae-x"], "--out /proc/pivotal-sae-x cannot be created"),
    (["--out", "{tmp}/../file/sub"], "cannot be created"),
]


@pytest.mark.parametrize(("args", "needle"), BAD_INPUT)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    args, needle, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("mine")
    args = [a.replace("{tmp}", str(tmp_path / "empty")) for a in args]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(["toy", "train", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu_is_a_user_error(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["toy", "train", "--device", "cuda", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--device cuda" in err and "no CUDA GPU" in err
    assert not out.exists()


def test_resume_of_a_run_whose_manifest_has_no_config_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"job": "toy-train", "config": {}}))
    assert main(["toy", "train", "--resume", str(run)]) == 2
    assert "records no config" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ["manifest.json"]


def test_resume_of_a_finished_run_says_so_and_changes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["toy", "train", "--arch", "topk", "--max-step", "20", "--eval-every", "10",
            "--sae-hidden-dim", "8", "--dataset-num-features", "8", "--model-dim", "10",
            "--no-plots", "--out", str(run)]  # fmt: skip
    assert main(argv) == 0
    before = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    capsys.readouterr()
    assert main(["toy", "train", "--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert "finished all 20 steps already; nothing changed" in out
    after = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    assert after == before


def test_readme_flat_toy_examples_use_the_measured_latent_budget():
    """At the default 30 latents a flat SAE cannot show absorption; docs/toy.md measures 90
    latents with k 6 against the hierarchical SAE's 30 × (1 + 2)."""
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    commands = [c for c in readme.replace("\\\n", " ").splitlines() if "toy train" in c]
    flat = [c for c in commands if "--arch topk" in c or "--arch matryoshka" in c]
    assert flat
    for command in flat:
        assert "--sae-hidden-dim 90" in command and "--sae-k 6" in command, command
