"""Pieces of the jobs that need no model: checkpoint sets, the save schedule, the exclusion
rule, and row-sparse effects standing in for the full matrix in the pair search."""

from __future__ import annotations

import torch

from pivotal_sae.absorption.ablation import AblationEffects
from pivotal_sae.absorption.cooccurrence import DenseCooccurrence
from pivotal_sae.absorption.jobs.ablate import excluded_latents
from pivotal_sae.absorption.jobs.checkpoints import Checkpoints, SaveSchedule
from pivotal_sae.absorption.pairs import find_effect_pairs


def test_save_schedule_fires_at_the_first_batch_boundary_past_each_multiple():
    schedule = SaveSchedule(every=10, start=0)
    fired = [done for done in range(4, 41, 4) if schedule.due(done)]
    assert fired == [12, 20, 32, 40]
    resumed = SaveSchedule(every=10, start=20)
    assert [d for d in (24, 28, 32) if resumed.due(d)] == [32]


def test_checkpoints_point_at_complete_sets_and_drop_old_ones(tmp_path):
    checkpoints = Checkpoints(tmp_path)
    assert checkpoints.latest("ablate") is None
    for done in (8, 16):
        checkpoints.save("ablate", done, {"effects": lambda p, d=done: p.write_text(str(d))})
    latest = checkpoints.latest("ablate")
    assert latest is not None and latest.contexts_done == 16
    assert latest.files["effects"].read_text() == "16"
    assert sorted(p.name for p in checkpoints.dir.iterdir()) == [
        "ablate-effects-0000000016.safetensors",
        "latest.json",
    ]
    assert checkpoints.latest("cooccur") is None
    checkpoints.clear()
    assert not checkpoints.dir.exists()


def test_exclusion_is_more_than_the_threshold_and_spares_selected_features():
    firing_e = torch.tensor([0, 10, 11, 50, 100])
    assert excluded_latents(firing_e, 100, 0.1, None) == [2, 3, 4]
    assert excluded_latents(firing_e, 100, 0.1, [3]) == [2, 4]
    assert excluded_latents(firing_e, 100, 1.0, None) == []


def test_row_sparse_effects_give_the_same_pairs_as_the_full_matrix():
    g = torch.Generator().manual_seed(3)
    e, reader = 300, 40
    effects = AblationEffects(e, reader, initial_rows=8)
    for _ in range(25):
        latents = torch.randperm(e, generator=g)[:6]
        effects.reserve(latents)
        effects.add(latents, torch.randn(6, reader, generator=g))
    counter = DenseCooccurrence(e)
    counter.update(torch.rand(500, e, generator=g) * (torch.rand(500, e, generator=g) < 0.02))
    sparse = find_effect_pairs(effects, effects.how_often_activated_e, counter, max_pairs=None)
    full = find_effect_pairs(effects.dense(), effects.how_often_activated_e, counter,
                             max_pairs=None)  # fmt: skip
    assert sparse.pairs == full.pairs and sparse.n_matching == full.n_matching > 0
