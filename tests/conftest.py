"""Shared test set-up: everything offline, small thread counts, a private cache directory."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest
import torch
from tiny_models import tiny_model

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _private_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keep tests away from the user's cache of trained default SAEs and downloads."""
    monkeypatch.setenv("PIVOTAL_SAE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    from pivotal_sae.lm.defaults import default_model_path

    return AutoTokenizer.from_pretrained(default_model_path())


@pytest.fixture(scope="session")
def tiny_lm(minilm_tokenizer):
    """`tiny_lm(family)` → a LanguageModel over a tiny random model (cached per family)."""
    from pivotal_sae.lm.model import LanguageModel

    cache: dict[str, LanguageModel] = {}

    def make(family: str) -> LanguageModel:
        if family not in cache:
            cache[family] = LanguageModel(tiny_model(family), minilm_tokenizer, f"tiny-{family}")
        return cache[family]

    return make


@pytest.fixture(scope="session")
def minilm():
    from pivotal_sae.lm.model import LanguageModel

    return LanguageModel.load(None, device="cpu")
