"""Shared test set-up: everything offline, small thread counts, a private cache directory."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest


@pytest.fixture(autouse=True)
def _private_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keep tests away from the user's cache of trained default SAEs and downloads."""
    monkeypatch.setenv("PIVOTAL_SAE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
