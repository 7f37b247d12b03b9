"""Issue 13, must-show 2 for `train-sae`: a run stopped at sampled file replacements (first
checkpoint, the middle, the final SAE folder, cfg.json and summary) and resumed with --resume
ends with the weights, config, metrics and summary of an uninterrupted run, with no checkpoint
or debris left (TopK SAEs); and the same after a real SIGKILL of a `train-sae` process
(hierarchical SAEs)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from kill_points import count_replacements, kill_then_finish, no_debris, run_killed_at, spread
from safetensors.torch import load_file
from test_cli_train import TINY_TRAIN, text_file, tiny_bert_dir  # noqa: F401 - fixtures

from pivotal_sae.cli import main

#: Timings, not results: they differ between any two runs.
TIMINGS = ("wall_seconds", "tokens_per_second")


def train_args(model: Path, corpus: Path, arch: str = "topk") -> list[str]:
    return ["train-sae", "--model", str(model), "--corpus", str(corpus), *TINY_TRAIN,
            "--hook", "blocks.1.hook_resid_post", "--save-every", "3", "--arch", arch]  # fmt: skip


def outcome(run: Path) -> tuple[dict[str, torch.Tensor], dict, dict, list[str]]:
    """Weights, cfg.json, summary without timings, metrics lines of a finished run."""
    weights = load_file(str(run / "sae" / "sae_weights.safetensors"))
    cfg = json.loads((run / "sae" / "cfg.json").read_text())
    summary = {k: v for k, v in json.loads((run / "summary.json").read_text()).items()
               if k not in (*TIMINGS, "saes")}  # fmt: skip
    return weights, cfg, summary, (run / "metrics.jsonl").read_text().splitlines()


def assert_same(run: Path, straight: Path, label: object) -> None:
    weights, cfg, summary, metrics = outcome(run)
    expected = outcome(straight)
    assert weights.keys() == expected[0].keys()
    for name, tensor in expected[0].items():
        assert torch.equal(weights[name], tensor), (label, name)
    assert (cfg, summary, metrics) == expected[1:], label
    assert not no_debris(run), (label, no_debris(run))


def test_train_sae_killed_at_sampled_writes_resumes_to_the_same_result(
    tmp_path,
    monkeypatch,
    tiny_bert_dir,  # noqa: F811 - the fixtures
    text_file,  # noqa: F811
):
    argv = train_args(tiny_bert_dir, text_file)
    straight = tmp_path / "straight"
    replaced = count_replacements(monkeypatch, lambda: main([*argv, "--out", str(straight)]))
    assert sum("latest.json" in p for p in replaced) >= 3, replaced  # checkpoints were saved
    assert not no_debris(straight)
    for kill_at in spread(len(replaced), 2, last=3):
        run = tmp_path / f"killed-{kill_at}"
        kill_then_finish(monkeypatch, main, argv, ["train-sae"], run, kill_at)
        assert_same(run, straight, kill_at)
    # Killed after the summary, before the checkpoints went: resuming only tidies up.
    late = tmp_path / "killed-after-summary"
    shutil.copytree(straight, late)
    (late / "checkpoints" / "step-000000009").mkdir(parents=True)
    (late / "checkpoints" / "latest.json").write_text('{"dir": "step-000000009", "step": 9}')
    (late / ".summary.json.x1y2.tmp").write_text("{")
    assert main(["train-sae", "--resume", str(late)]) == 0
    assert_same(late, straight, "after the summary")


# The CLI, pausing 0.2 s after each checkpoint so that a busy machine cannot hide the whole run
# from the watching test; the SIGKILL still lands wherever training is at that moment.
LAUNCH = """import sys, time
from pivotal_sae.training import resume
save = resume.TrainingCheckpoints.save
def paced(*args, **kwargs):
    save(*args, **kwargs)
    time.sleep(0.2)
resume.TrainingCheckpoints.save = paced
from pivotal_sae.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.timeout(240)
def test_train_sae_sigkilled_then_resumed_gives_the_same_result(
    tmp_path,
    tmp_path_factory,
    tiny_bert_dir,  # noqa: F811
    text_file,  # noqa: F811
):
    # The hierarchical SAE: its own training state, and a child process that need not import
    # SAELens (~12 s on a busy 2-core machine).
    argv = train_args(tiny_bert_dir, text_file, arch="hierarchical")
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(tmp_path_factory.getbasetemp() / "pycache")
    killed = tmp_path / "killed"
    command = [sys.executable, "-c", LAUNCH, *argv, "--out", str(killed)]
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while not (killed / "checkpoints" / "latest.json").exists():
            assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        time.sleep(random.uniform(0, 0.35))  # two paced checkpoints (0.4 s) are still to come
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert main(["train-sae", "--resume", str(killed)]) == 0
    assert main([*argv, "--out", str(tmp_path / "straight")]) == 0
    assert_same(killed, tmp_path / "straight", "SIGKILL")


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_train_sae_resume_of_a_damaged_run_is_one_line_and_changes_nothing(
    tmp_path,
    monkeypatch,
    capsys,
    tiny_bert_dir,  # noqa: F811
    text_file,  # noqa: F811
):
    argv = train_args(tiny_bert_dir, text_file)
    run = tmp_path / "run"
    # Killed at the 4th write: manifest, first checkpoint (weights, latest.json), then this.
    run_killed_at(monkeypatch, 3, lambda: main([*argv, "--out", str(run)]))
    assert (run / "checkpoints" / "latest.json").is_file()
    pointed = json.loads((run / "checkpoints" / "latest.json").read_text())["dir"]
    latest = run / "checkpoints" / pointed / "sae-0" / "sae_weights.safetensors"

    def manifest(edit):
        def change(run_dir: Path) -> None:
            data = json.loads((run_dir / "manifest.json").read_text())
            (run_dir / "manifest.json").write_text(json.dumps(edit(data)))

        return change

    def write(relative: str, text: bytes):
        return lambda run_dir: (run_dir / relative).write_bytes(text)

    weights = str(latest.relative_to(run))
    cases = [
        (write("manifest.json", b"[]"), [], "damaged (not a run manifest)"),
        (manifest(lambda m: {**m, "job": "cooccur"}), [], "is a run of `cooccur`"),
        (manifest(lambda m: {**m, "config": {**m["config"], "d_sae": "x"}}), [], "is damaged"),
        (lambda run_dir: None, ["--d-sae", "32"], "--d-sae 32 differs from its 64"),
        (write("checkpoints/latest.json", b"[1]"), [], "latest.json is damaged"),
        (write(weights, latest.read_bytes()[:100]), [], "is damaged"),
    ]
    capsys.readouterr()
    for index, (damage, extra, needle) in enumerate(cases):
        copy = tmp_path / f"copy-{index}"
        shutil.copytree(run, copy)
        damage(copy)
        before = _tree(copy)
        assert main(["train-sae", "--resume", str(copy), *extra]) == 2, needle
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert needle in err, err
        assert _tree(copy) == before, needle
