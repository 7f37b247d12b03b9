"""Run-directory files: atomic writes leave files with the user's usual permissions."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from pivotal_sae import runs
from pivotal_sae.absorption.results import save_file


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
