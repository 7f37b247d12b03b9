"""Must-show 4: SIGKILL a training process mid-run, resume it, get the uninterrupted weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pivotal_sae.cli import main
from pivotal_sae.toy import checkpoint

ARGS = ["--max-step", "1500", "--eval-every", "100", "--no-plots", "--device", "cpu", "--seed", "4"]
# The CLI, pausing 0.1 s after each checkpoint so that a busy machine cannot hide the whole run
# from the watching test; the SIGKILL still lands wherever training is at that moment.
LAUNCH = """import sys, time
from pivotal_sae.toy import checkpoint
save = checkpoint.save_checkpoint
def paced(*args, **kwargs):
    save(*args, **kwargs)
    time.sleep(0.1)
checkpoint.save_checkpoint = paced
from pivotal_sae.cli import main
sys.exit(main(sys.argv[1:]))
"""


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    step, directory = checkpoint.latest_checkpoint(run_dir)
    assert step == 1500
    return load_file(str(directory / "sae_weights.safetensors"))


def latest_step(run_dir: Path) -> int:
    try:
        return json.loads((run_dir / "checkpoints" / "latest.json").read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError):
        return -1


@pytest.mark.timeout(240)
def test_sigkill_then_resume_gives_bit_identical_weights(tmp_path, tmp_path_factory):
    env = dict(os.environ)
    # Cache compiled modules for the child (this sandbox sets PYTHONDONTWRITEBYTECODE).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(tmp_path_factory.getbasetemp() / "pycache")
    killed = tmp_path / "killed"
    child = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "toy", "train", *ARGS, "--out", str(killed)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 180
        while latest_step(killed) < 100:
            assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert latest_step(killed) < 1500 and not (killed / "summary.json").exists()

    assert main(["toy", "train", "--resume", str(killed)]) == 0
    assert main(["toy", "train", *ARGS, "--out", str(tmp_path / "straight")]) == 0
    resumed, straight = final_weights(killed), final_weights(tmp_path / "straight")
    assert resumed.keys() == straight.keys()
    for name, tensor in straight.items():
        assert torch.equal(resumed[name], tensor), name
