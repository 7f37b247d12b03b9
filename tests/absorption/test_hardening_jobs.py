"""Issue 13 on the absorption jobs: a resumed run finishes what a kill left undone, and no
debris of an interrupted write survives or breaks a later save."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pivotal_sae.absorption.jobs.checkpoints import Checkpoints
from pivotal_sae.cli import main

from .test_cli_absorb import SIZES, models, tiny  # noqa: F401 - `tiny` is a fixture


def _debris(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob(".*") if p.name.endswith(".tmp"))


def test_resume_after_a_kill_between_final_file_and_summary_finishes_the_run(
    tmp_path,
    tiny,  # noqa: F811 - the fixture
    capsys,
):
    """Defects 2, 3 and 5: killed after effects.safetensors but before the summary."""
    run = tmp_path / "run"
    argv = ["absorb", *models(tiny), *SIZES, "--n-prompts", "8", "--cooccurrence-prompts", "8"]
    assert main([*argv, "--out", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    finished = summary["ablate"]["latents_ablated"]
    # The state such a kill leaves: no 'ablate' (nor 'absorb') entry, the last checkpoint,
    # temporary files of writes in progress.
    (run / "summary.json").write_text(json.dumps({"cooccur": summary["cooccur"]}))
    Checkpoints(run).save("ablate", 4, {"effects": lambda p: p.write_bytes(b"x")})
    partial = run / "checkpoints" / ".cooccur-cooccurrences.safetensors.ab12.tmp"
    partial.mkdir()
    (partial / "raw.safetensors").write_bytes(b"\0" * 100)
    (run / ".summary.json.xyz.tmp").write_text("{")
    (run / "checkpoints" / "ablate-0000000004" / ".effects.safetensors.q1.tmp").write_bytes(b"")
    capsys.readouterr()

    assert main(["absorb", "--resume", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["ablate"]["latents_ablated"] == finished
    assert summary["absorb"]["resumed"] is True
    assert not (run / "checkpoints").exists()
    assert _debris(run) == []


def test_cooccur_resume_with_the_final_file_in_place_writes_the_summary(
    tmp_path,
    tiny,  # noqa: F811 - the fixture
):
    """Defect 3 for `cooccur`: the summary is written and the checkpoints removed."""
    run = tmp_path / "run"
    argv = ["cooccur", "--model", str(tiny["model"]), "--corpus", str(tiny["corpus"]),
            "--ablator-sae-path", str(tiny["ablator"]), "--max-tokens-in-prompt", "24",
            "--batch-size", "4", "--device", "cpu", "--n-prompts", "8"]  # fmt: skip
    assert main([*argv, "--out", str(run)]) == 0
    # the summary sizes the per-token-id firing store, as it does the pairs
    from safetensors.torch import load_file

    stored = load_file(run / "cooccurrences.safetensors")["token_firing_keys"].numel()
    assert (
        json.loads((run / "summary.json").read_text())["cooccur"]["token_firing_entries"] == stored
    )
    assert stored > 0
    (run / "summary.json").unlink()
    Checkpoints(run).save("cooccur", 4, {"cooccurrences": lambda p: p.write_bytes(b"x")})
    assert main(["cooccur", "--resume", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["cooccur"]["contexts_processed"] == 8
    assert not (run / "checkpoints").exists()


def test_a_leftover_temporary_folder_does_not_break_the_next_checkpoint(tmp_path):
    """Defect 4: a write's temporary folder (an interrupted `.zst` or an older version's) in
    checkpoints/ is removed, not unlinked as if a file."""
    checkpoints = Checkpoints(tmp_path)
    checkpoints.save("cooccur", 8, {"cooccurrences": lambda p: p.write_bytes(b"8")})
    for stray in (".cooccur-cooccurrences-0000000008.safetensors.k2j4", ".x.safetensors.a.tmp"):
        (checkpoints.dir / stray).mkdir()
        (checkpoints.dir / stray / "raw.safetensors").write_bytes(b"\0")
    checkpoints.save("cooccur", 16, {"cooccurrences": lambda p: p.write_bytes(b"16")})
    latest = checkpoints.latest("cooccur")
    assert latest is not None and latest.files["cooccurrences"].read_bytes() == b"16"
    assert sorted(p.name for p in checkpoints.dir.iterdir()) == ["cooccur-0000000016",
                                                                 "latest.json"]  # fmt: skip


def test_damaged_checkpoint_pointer_is_one_line(tmp_path):
    """Defect 9 (jobs): latest.json holding `[1]` names the file instead of crashing."""
    import pytest

    from pivotal_sae.errors import UserError

    checkpoints = Checkpoints(tmp_path)
    checkpoints.dir.mkdir()
    for text in ("[1]", "null", '{"dir": "../.."}', "{", '{"dir": "gone", "stage": "ablate"}'):
        (checkpoints.dir / "latest.json").write_text(text)
        with pytest.raises(UserError, match=r"latest\.json"):
            checkpoints.latest("ablate")


def test_interrupted_zst_write_leaves_nothing_behind(tmp_path, monkeypatch):
    """Defect 5: a failed write removes its temporary files (raw and compressed)."""
    import pytest

    from pivotal_sae.absorption import results

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("zstandard.ZstdCompressor.copy_stream", boom)
    with pytest.raises(RuntimeError):
        results.save_file(tmp_path / "x.safetensors.zst", {"a": torch.zeros(3)}, {})
    assert list(tmp_path.iterdir()) == []
