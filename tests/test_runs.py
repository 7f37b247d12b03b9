"""Run-directory files: atomic writes leave files with the user's usual permissions."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from pivotal_sae import runs
from pivotal_sae.absorption.results import save_file
from pivotal_sae.errors import UserError


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_writes_follow_the_umask(tmp_path, umask):
    before = os.umask(umask)
    runs.default_file_mode.cache_clear()
    try:
        runs.atomic_write_text(tmp_path / "report.html", "<p>hi</p>")
        runs.atomic_write_json(tmp_path / "summary.json", {"a": 1})
        runs.atomic_save_safetensors(tmp_path / "w.safetensors", {"x": torch.zeros(2)})
        runs.atomic_save_torch(tmp_path / "state.pt", {"step": 1})
        for name in ("effects.safetensors", "effects.safetensors.zst"):
            save_file(tmp_path / name, {"x": torch.zeros(2)}, {"format": "test"})
    finally:
        os.umask(before)
        runs.default_file_mode.cache_clear()
    for path in tmp_path.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path.name


def test_memory_checks_use_available_memory_not_total(tmp_path, monkeypatch):
    """Issue 13 follow-up: memory taken by other processes counts against a job."""
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 67108864 kB\nMemFree: 100 kB\nMemAvailable: 1048576 kB\n")
    assert runs.available_memory_bytes(meminfo) == 2**30
    meminfo.write_text("MemTotal:       67108864 kB\n")  # an old kernel: no MemAvailable
    assert runs.available_memory_bytes(meminfo) is None
    assert runs.available_memory_bytes(tmp_path / "missing") is None
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < runs.memory_bytes("cpu") <= physical
    monkeypatch.setattr(runs, "available_memory_bytes", lambda: 2**30)
    runs.check_fits(2**29, "half a GiB")
    with pytest.raises(UserError, match=r"memory available here is 1\.0 GiB"):
        runs.check_fits(2**31, "two GiB")  # less than this machine has, more than is free


def test_a_run_killed_while_writing_its_manifest_can_start_again(tmp_path):
    """A SIGKILL during the manifest's write leaves only its temporary file: `--resume` finds no
    manifest, so `--out` must accept the folder again (else the run is a dead end)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / ".manifest.json.k2j4.tmp").write_text('{"job": ')
    runs.check_new_run_dir(run)
    runs.prepare_new_run_dir(run)
    assert list(run.iterdir()) == []
    (run / "mine.txt").write_text("the user's")
    with pytest.raises(UserError, match="already holds files"):
        runs.check_new_run_dir(run)
