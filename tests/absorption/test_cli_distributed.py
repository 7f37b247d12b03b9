"""`absorb` under torchrun: two gloo ranks on the CPU, on a tiny random model.

Two ranks give what one process gives (counts, examples and ablation counts exactly, effects
within 1e-5 relative); a run stopped after a checkpoint resumes with another number of ranks
(2 → 1 while counting, 1 → 2 while ablating) to the same result; bad --device under torchrun is
one line and exit code 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_llama import save_tiny_llama

from pivotal_sae.absorption.jobs import checkpoints
from pivotal_sae.absorption.results import read_file
from pivotal_sae.cli import main
from pivotal_sae.saes.loading import save_sae
from pivotal_sae.saes.sae import Sae

#: 48 contexts counted and 32 ablated, 4 per batch: whole global steps of 2 × 4 contexts.
SIZES = ["--max-tokens-in-prompt", "24", "--batch-size", "4", "--abridge-ablations-to", "6",
         "--device", "cpu", "--decoder-pairs", "20", "--n-prompts", "32",
         "--cooccurrence-prompts", "48", "--save-frequency", "8"]  # fmt: skip
STOPPER = Path(__file__).with_name("stop_after_checkpoint.py")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks run (torchrun sets OMP_NUM_THREADS=1 too)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> list[str]:
    """Model, SAEs and corpus flags for a tiny random Llama."""
    root = tmp_path_factory.mktemp("tiny")
    model, corpus = save_tiny_llama(root, corpus_chars=30000)
    ablator = Sae.random(64, 96, architecture="topk", k=8, hook_name="blocks.0.hook_resid_post",
                         seed=1)  # fmt: skip
    reader = Sae.random(64, 80, architecture="topk", k=8, hook_name="blocks.2.hook_resid_post",
                        seed=2)  # fmt: skip
    return ["--model", str(model), "--corpus", str(corpus),
            "--ablator-sae-path", str(save_sae(ablator, root / "ablator")),
            "--reader-sae-path", str(save_sae(reader, root / "reader"))]  # fmt: skip


@pytest.fixture(scope="module")
def one_process(tiny, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("one") / "run"
    assert main(["absorb", *tiny, *SIZES, "--out", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Compiled bytecode shared by all launches of the session: saves seconds per rank.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(tmp_path_factory.getbasetemp() / "pycache")
    return env


def torchrun(
    argv: list[str], env: dict[str, str], *, stop_stage: str | None = None
) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node 2 -m pivotal_sae ARGV` (a free port is picked)."""
    env = dict(env)
    launcher = ["-m", "pivotal_sae"]
    if stop_stage is not None:
        env["STOP_STAGE"], launcher = stop_stage, [str(STOPPER)]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", *launcher, *argv]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)


def assert_same_results(expected: Path, got: Path) -> None:
    for name in ("cooccurrences", "top_examples", "effects"):
        want = read_file(expected / f"{name}.safetensors")[0]
        have = read_file(got / f"{name}.safetensors")[0]
        assert want.keys() == have.keys(), name
        for key in want:
            if key == "effects_eE_rows":  # float sums in another order
                torch.testing.assert_close(have[key], want[key], rtol=1e-5, atol=1e-6)
            else:
                assert torch.equal(have[key], want[key]), f"{name}: {key}"
    pairs = [json.loads((run / "pairs.json").read_text())["pairs"] for run in (expected, got)]
    assert [(p["ablator1"]["id"], p["ablator2"]["id"]) for p in pairs[0]] == [
        (p["ablator1"]["id"], p["ablator2"]["id"]) for p in pairs[1]
    ]


def latest(run: Path) -> dict:
    return json.loads((run / "checkpoints" / "latest.json").read_text())


@pytest.mark.timeout(300)
def test_two_ranks_give_what_one_process_gives(tiny, one_process, env, tmp_path):
    run = tmp_path / "two"
    done = torchrun(["absorb", *tiny, *SIZES, "--out", str(run)], env)
    assert done.returncode == 0, done.stderr
    assert_same_results(one_process, run)
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in one_process.iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["cooccur"]["ranks"] == summary["ablate"]["ranks"] == 2
    assert summary["ablate"]["contexts_processed"] == 32
    # Rank 0 alone speaks: one closing line.
    assert sum("report in" in line for line in done.stderr.splitlines()) == 1, done.stderr


@pytest.mark.timeout(300)
def test_ablate_alone_estimates_exclusion_across_ranks(tiny, env, tmp_path):
    # Without co-occurrence counts, `ablate` measures firing rates itself (sharded, then summed):
    # the excluded latents and the effects must be those of one process.
    argv = ["ablate", *tiny, *SIZES[:8], "--n-prompts", "16", "--exclusion-prompts", "12",
            "--exclude-latent-threshold", "0.05", "--save-frequency", "8"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    done = torchrun([*argv, "--out", str(tmp_path / "two")], env)
    assert done.returncode == 0, done.stderr
    one, two = (read_file(tmp_path / run / "effects.safetensors") for run in ("one", "two"))
    assert one[1]["excluded_latents"] == two[1]["excluded_latents"] != []
    assert torch.equal(one[0]["how_often_activated_e"], two[0]["how_often_activated_e"])
    torch.testing.assert_close(two[0]["effects_eE_rows"], one[0]["effects_eE_rows"],
                               rtol=1e-5, atol=1e-6)  # fmt: skip


class _Stop(Exception):
    pass


@pytest.mark.timeout(300)
def test_resume_with_another_number_of_ranks(tiny, one_process, env, tmp_path, monkeypatch):
    run = tmp_path / "resumed"
    # Two ranks stop right after the first checkpoint of the counting stage ...
    stopped = torchrun(["absorb", *tiny, *SIZES, "--out", str(run)], env,
                       stop_stage="cooccur")  # fmt: skip
    assert stopped.returncode != 0
    assert (run / "checkpoints" / "latest.json").is_file(), stopped.stderr
    assert latest(run)["stage"] == "cooccur" and latest(run)["contexts_done"] == 8
    # ... one process resumes it and stops after the first checkpoint of the ablation ...
    save = checkpoints.Checkpoints.save

    def save_then_stop(self, stage, contexts_done, writers):
        save(self, stage, contexts_done, writers)
        if stage == "ablate":
            raise _Stop

    monkeypatch.setattr(checkpoints.Checkpoints, "save", save_then_stop)
    with pytest.raises(_Stop):
        main(["absorb", "--resume", str(run)])
    monkeypatch.undo()
    assert latest(run)["stage"] == "ablate" and latest(run)["contexts_done"] == 8
    # ... and two ranks finish it: the same results as one uninterrupted process.
    done = torchrun(["absorb", "--resume", str(run)], env)
    assert done.returncode == 0, done.stderr
    assert_same_results(one_process, run)
    assert not (run / "checkpoints").exists()


def test_bad_device_under_torchrun_is_one_line_exit_2(tiny, tmp_path, monkeypatch, capsys):
    for name, value in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0",
                        "LOCAL_WORLD_SIZE": "2"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    out = tmp_path / "never"
    base = ["cooccur", *tiny[:6], "--n-prompts", "8", "--out", str(out)]
    for device, needle in [
        ("cuda", "--device cuda with 2 ranks on this node but 1 GPU(s); start torchrun with "
                 "--nproc-per-node 1 or fewer"),
        ("cuda:1", "under torchrun give --device cuda"),
    ]:  # fmt: skip
        assert main([*base, "--device", device]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err, err
        assert not out.exists()
