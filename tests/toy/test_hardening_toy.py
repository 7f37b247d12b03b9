"""Issue 13 on `toy train`: a run killed anywhere resumes (even before its first checkpoint) to
the same weights and the same metrics.jsonl; a damaged run directory is one line, not a
traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from pivotal_sae.cli import main
from pivotal_sae.toy import checkpoint

ARGS = ["toy", "train", "--max-step", "30", "--eval-every", "10", "--log-every", "7",
        "--no-plots", "--device", "cpu", "--batch-size", "20"]  # fmt: skip


class Killed(BaseException):
    """Stands in for SIGKILL: not an Exception, so nothing on the way out handles it."""


def kill_after_checkpoint(monkeypatch, at_step: int) -> None:
    save = checkpoint.save_checkpoint

    def save_then_die(run_dir, step, *args, **kwargs):
        if at_step == -1:
            raise Killed  # before the first checkpoint is complete
        directory = save(run_dir, step, *args, **kwargs)
        if step == at_step:
            raise Killed
        return directory

    monkeypatch.setattr(checkpoint, "save_checkpoint", save_then_die)


def weights(run: Path) -> dict:
    _, directory = checkpoint.latest_checkpoint(run)
    return load_file(str(directory / "sae_weights.safetensors"))


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("toy") / "straight"
    assert main([*ARGS, "--out", str(run)]) == 0
    return run


@pytest.mark.parametrize("at_step", [-1, 10, 20])
def test_killed_run_resumes_to_the_same_weights_and_metrics(
    tmp_path, monkeypatch, straight, at_step
):
    """Defect 6 (killed before the first checkpoint: resume from step 0) and defect 17 (the
    first log record after a resume averages the same steps as without the kill)."""
    run = tmp_path / "killed"
    with monkeypatch.context() as patch:
        kill_after_checkpoint(patch, at_step)
        with pytest.raises(Killed):
            main([*ARGS, "--out", str(run)])
    assert main(["toy", "train", "--resume", str(run)]) == 0
    for key, value in weights(straight).items():
        assert value.equal(weights(run)[key]), key
    assert metrics(run) == metrics(straight)


def _damage(run: Path, what: str) -> None:
    _, directory = checkpoint.latest_checkpoint(run)
    if what == "manifest []":
        (run / "manifest.json").write_text("[]")
    elif what == "manifest null":
        (run / "manifest.json").write_text("null")
    elif what == "config string":
        manifest = json.loads((run / "manifest.json").read_text())
        manifest["config"]["batch_size"] = "many"
        (run / "manifest.json").write_text(json.dumps(manifest))
    elif what == "latest [1]":
        (run / "checkpoints" / "latest.json").write_text("[1]")
    elif what == "truncated state":
        state = directory / checkpoint.STATE
        state.write_bytes(state.read_bytes()[:100])
    elif what == "truncated weights":
        weights_file = directory / "sae_weights.safetensors"
        weights_file.write_bytes(weights_file.read_bytes()[:100])


@pytest.mark.parametrize(
    ("what", "needle"),
    [
        ("manifest []", "manifest.json is damaged"),
        ("manifest null", "manifest.json is damaged"),
        ("config string", "manifest.json is damaged"),
        ("latest [1]", "latest.json is damaged"),
        ("truncated state", "training_state.pt is damaged"),
        ("truncated weights", "sae_weights.safetensors is damaged"),
    ],
)
def test_damaged_run_directory_is_one_line_on_resume(tmp_path, monkeypatch, capsys, what, needle):
    """Defect 9 (toy): each damaged file is named in one line, exit 2."""
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        kill_after_checkpoint(patch, 10)
        with pytest.raises(Killed):
            main([*ARGS, "--out", str(run)])
    _damage(run, what)
    capsys.readouterr()
    assert main(["toy", "train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err, err


def test_a_stray_line_in_metrics_jsonl_does_not_stop_a_resume(tmp_path, monkeypatch, straight):
    """Defect 9 (toy): a list line in metrics.jsonl is dropped, the run resumes."""
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        kill_after_checkpoint(patch, 10)
        with pytest.raises(Killed):
            main([*ARGS, "--out", str(run)])
    with open(run / "metrics.jsonl", "a") as log:
        log.write('[1, 2]\n"text"\n{"step": "x"}\n')
    (run / "checkpoints" / ".latest.json.k3.tmp").write_text("{")
    assert main(["toy", "train", "--resume", str(run)]) == 0
    assert metrics(run) == metrics(straight)
    assert not list(run.rglob("*.tmp"))  # defect 5: debris of interrupted writes is removed
