"""Plots reuse their figures between rounds; a reused figure must draw what a fresh one draws."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from pivotal_sae.saes.toy_io import build_toy_sae
from pivotal_sae.toy.data import make_features
from pivotal_sae.toy.plots import RunPlots


@pytest.mark.parametrize("arch", ["hierarchical", "topk"])
def test_a_reused_figure_draws_what_a_fresh_one_draws(arch, tmp_path):
    features = make_features(6, 2, 10, 0.4, torch.Generator().manual_seed(0))
    first, second = (
        build_toy_sae(arch, 10, 6, 2, n_children=2, generator=torch.Generator().manual_seed(s))
        for s in (1, 2)
    )
    reused = RunPlots(tmp_path / "reused")
    reused.round(5, first, features)
    reused.round(7, second, features)
    fresh = RunPlots(tmp_path / "fresh")
    fresh.round(7, second, features)
    names = sorted(p.name for p in (tmp_path / "fresh").glob("step_0000007_*.png"))
    assert len(names) == 4
    for name in names:
        pixels = [np.asarray(Image.open(tmp_path / d / name)) for d in ("reused", "fresh")]
        assert np.array_equal(*pixels), name
    before = np.asarray(Image.open(tmp_path / "reused" / "step_0000005_decoder_vs_features.png"))
    after = np.asarray(Image.open(tmp_path / "reused" / "step_0000007_decoder_vs_features.png"))
    assert not np.array_equal(before, after), "the second round must show the second SAE"


# Symbols of the code (d_e, d_en, r d_en), bracketed groups, "x2" counts, "consecutive".
JARGON = re.compile(r"\bd_e|\br d_|\[|\bx\d|consecutive")


@pytest.mark.parametrize("arch", ["hierarchical", "topk"])
def test_plot_labels_are_plain_words(arch, tmp_path):
    features = make_features(6, 2, 10, 0.4, torch.Generator().manual_seed(0))
    sae = build_toy_sae(arch, 10, 6, 2, n_children=2, generator=torch.Generator().manual_seed(1))
    plots = RunPlots(tmp_path)
    plots.feature_similarity(features)
    plots.round(5, sae, features)
    labels = []
    for _, ax, _ in plots._figures.values():
        labels += [ax.get_xlabel(), ax.get_ylabel(), ax.get_title()]
    assert len(labels) == 15 and all(labels)
    for label in labels:
        assert not JARGON.search(label), label
    norms_ax = plots._figures["decoder_norms"][1]
    if arch == "hierarchical":
        assert "blue = its children found both siblings" in norms_ax.get_xlabel()
    assert norms_ax.get_ylabel() == "direction length (norm)"
