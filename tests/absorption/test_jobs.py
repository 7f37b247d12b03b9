"""Pieces of the jobs that need no model: checkpoint sets, the save schedule, the exclusion
rule, and row-sparse effects standing in for the full matrix in the pair search."""

from __future__ import annotations

import json

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


def test_default_schedule_spaces_costly_checkpoints_by_their_cost():
    now = [0.0]
    schedule = SaveSchedule(every=None, start=0, every_at_least=10, max_share=0.05,
                            clock=lambda: now[0])  # fmt: skip

    def write(cost: float):
        def save(done: int) -> None:
            now[0] += cost
            saved.append(done)

        return save

    saved: list[int] = []
    for done in range(4, 101, 4):  # 1 s of work per batch of 4 contexts; a save costs 0.1 s
        now[0] += 1.0
        if schedule.due(done):
            schedule.save(done, write(0.1))
    assert saved == [12, 24, 36, 48, 60, 72, 84, 96]  # cheap: every 10 contexts (next boundary)
    saved.clear()
    for done in range(104, 301, 4):  # now a save costs 2 s: at most one per 40 s of work
        now[0] += 1.0
        if schedule.due(done):
            schedule.save(done, write(2.0))
    assert saved == [108, 268]  # the second waits 40 s of work: 40 batches of 4 contexts


def test_expected_cost_spaces_the_first_checkpoint_too():
    now = [0.0]
    schedule = SaveSchedule(every=None, start=0, every_at_least=10, max_share=0.05,
                            clock=lambda: now[0], expected_cost=1.0)  # fmt: skip
    due = []
    for done in range(4, 101, 4):  # 1 s per batch: the first save waits for 20 s of work
        now[0] += 1.0
        if schedule.due(done):
            due.append(done)
            break
    assert due == [80]


def test_checkpoints_point_at_complete_sets_and_drop_old_ones(tmp_path):
    checkpoints = Checkpoints(tmp_path)
    assert checkpoints.latest("ablate") is None
    for done in (8, 16):
        checkpoints.save("ablate", done, {"effects": lambda p, d=done: p.write_text(str(d))})
    latest = checkpoints.latest("ablate")
    assert latest is not None and latest.contexts_done == 16
    assert latest.files["effects"].read_text() == "16"
    assert sorted(p.name for p in checkpoints.dir.iterdir()) == [
        "ablate-0000000016",
        "latest.json",
    ]
    assert checkpoints.latest("cooccur") is None
    checkpoints.clear("cooccur")  # another stage's checkpoints stay
    assert checkpoints.latest("ablate") is not None
    checkpoints.clear("ablate")
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


def test_the_report_and_summary_name_the_saes_training_scores(tmp_path, generator):
    from pivotal_sae.absorption.jobs.pairs import report_summary
    from pivotal_sae.absorption.report import write_report

    scores = {"fvu": 0.2134, "l0": 31.7, "dead_fraction": 0.0123}
    effects_meta = {"ablator_sae": {"label": "a", "training_scores": scores},
                    "reader_sae": {"label": "r", "training_scores": None}}  # fmt: skip
    summary = report_summary(effects_meta, {})
    assert summary["ablator_sae_scores"] == "held-out FVU 0.213, L0 31.7, dead latents 1.2 %"
    assert summary["reader_sae_scores"] is None
    counter = DenseCooccurrence(6)
    counter.update(torch.rand(30, 6, generator=generator), contexts=3)
    search = find_effect_pairs(torch.randn(6, 4, generator=generator), torch.ones(6), counter,
                               cooccurrence_threshold=100, cosine_sim_threshold=-1)  # fmt: skip
    paths = write_report(tmp_path, search, summary=summary)
    assert json.loads(paths["pairs.json"].read_text())["meta"]["ablator_sae_scores"]
    assert "held-out FVU 0.213, L0 31.7, dead latents 1.2 %" in paths["report.html"].read_text()
