"""The category absorption score against a planted answer, and its pieces against plain loops.

The planted-answer test builds activations with a known hierarchy (a category direction on
every category word, a child direction on a few of them), an SAE whose latent 0 reads the
category and latent 1 the child, plants absorption of 0 into 1 with `plant_absorption`, and
checks that the score finds exactly the child's test words, absorbed by latent 1 — and finds
nothing on the unedited SAE.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pivotal_sae.absorption.category_score import (
    ScoreSettings,
    absorption_records,
    f1_precision_recall,
    mean_scores,
    score_categories,
    word_absorption,
)
from pivotal_sae.absorption.planting import plant_absorption
from pivotal_sae.saes.sae import Sae

M, E = 32, 64
N_CATEGORY, N_CHILD, N_BACKGROUND = 300, 8, 600


def hierarchy(seed: int = 0):
    """Activations, words, labels, split and the child's item ids."""
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(M, M, generator=g))
    parent_M, child_M = basis[:, 0], basis[:, 1]
    n = N_CATEGORY + N_BACKGROUND
    noise_NM = 0.3 * torch.randn(n, M, generator=g)
    # Noise orthogonal to the child direction: the child's latent reads exactly 0 off its words.
    noise_NM -= (noise_NM @ child_M)[:, None] * child_M
    acts_NM = noise_NM.clone()
    acts_NM[:N_CATEGORY] += 3 * parent_M
    child_ids = torch.arange(N_CHILD)
    acts_NM[child_ids] += 3 * child_M
    labels_NC = torch.zeros(n, 1, dtype=torch.bool)
    labels_NC[:N_CATEGORY, 0] = True
    train_N = torch.rand(n, generator=g) < 0.5
    train_N[child_ids] = torch.arange(N_CHILD) % 2 == 0  # 4 child words in each split
    words = [f"child{i}" if i < N_CHILD else f"word{i}" for i in range(n)]
    return acts_NM, words, labels_NC, train_N, child_ids, parent_M, child_M


def hierarchy_sae(parent_M: torch.Tensor, child_M: torch.Tensor) -> Sae:
    sae = Sae.random(M, E, architecture="jumprelu", seed=3)
    W_dec = sae.W_dec.data
    # The other latents are orthogonal to both features: nothing else reads the category.
    W_dec -= (W_dec @ parent_M)[:, None] * parent_M + (W_dec @ child_M)[:, None] * child_M
    W_dec /= W_dec.norm(dim=-1, keepdim=True)
    W_dec[0], W_dec[1] = parent_M, child_M
    sae.W_enc.data = W_dec.T.contiguous()
    assert sae.threshold is not None
    sae.threshold.data.fill_(1.0)
    return sae


def test_planted_absorption_is_found_and_the_unedited_sae_shows_none():
    acts_NM, words, labels_NC, train_N, child_ids, parent_M, child_M = hierarchy()
    sae = hierarchy_sae(parent_M, child_M)
    settings = ScoreSettings()
    child_test = {words[i] for i in child_ids.tolist() if not train_N[i]}

    [plain] = score_categories(["cat"], words, labels_NC, train_N, acts_NM, sae, settings)
    assert plain.kept and plain.probe_f1 > 0.95
    assert plain.main_latents == [0]
    assert not any(w.full_absorption for w in plain.words)
    assert all(w.absorption_fraction == 0 for w in plain.words)
    assert absorption_records([plain]) == []

    edited, planted, check = plant_absorption(
        sae, acts_NM, [(0, 1)], rate=1.0, direction="child-encoder"
    )
    assert planted[0].achieved_rate == 1.0
    assert {words[i] for i in planted[0].absorbed_token_ids} == {words[i] for i in child_ids}
    assert check["other_tokens_changed"] == 0.0

    [scored] = score_categories(["cat"], words, labels_NC, train_N, acts_NM, edited, settings)
    assert scored.main_latents == [0]
    absorbed = {w.word for w in scored.words if w.full_absorption}
    assert absorbed == child_test
    assert all(w.top_latents[0] == 1 for w in scored.words if w.full_absorption)
    fractions = {w.word: w.absorption_fraction for w in scored.words}
    assert all(fractions[word] == 1.0 for word in child_test)
    assert all(f == 0.0 for word, f in fractions.items() if word not in child_test)
    [record] = absorption_records([scored])
    assert (record["main_latents"], record["absorbing_latent"]) == ([0], 1)
    assert set(record["tokens"]) == child_test
    assert scored.full_absorption_rate == pytest.approx(len(child_test) / len(scored.words))


def test_partial_rate_silences_the_parent_on_that_share_of_child_tokens():
    acts_NM, _, _, _, child_ids, parent_M, child_M = hierarchy(seed=1)
    # Child strengths vary so that a partial rate has strongest-first tokens to pick.
    acts_NM[child_ids] += torch.linspace(0, 2, N_CHILD)[:, None] * child_M
    sae = hierarchy_sae(parent_M, child_M)
    edited, [pair], _ = plant_absorption(sae, acts_NM, [(0, 1)], rate=0.5)
    assert pair.achieved_rate == pytest.approx(0.5)
    assert len(pair.absorbed_token_ids) == N_CHILD // 2
    still = edited.encode(acts_NM[child_ids])[:, 0] > 0
    assert still.sum() == N_CHILD // 2
    assert torch.allclose(edited.W_dec[1], sae.W_dec[1] + pair.beta * sae.W_dec[0])


def _absorption_fraction_reference(proj, main, cos, settings, probe_projection):
    """SAEBench's absorption fraction, written out loop by loop."""
    main_proj = sum(proj[i] for i in main)
    cands = sorted(
        (proj[i] for i in range(len(proj))
         if i not in main and cos[i] >= settings.fraction_cos_threshold and proj[i] > 0),
        reverse=True,
    )[: settings.max_absorbing_latents]  # fmt: skip
    absorbed = sum(cands)
    if (
        main_proj >= probe_projection
        or absorbed / probe_projection < settings.projection_proportion
    ):
        return 0.0
    if main_proj <= 0:
        return 1.0
    share = min(absorbed, probe_projection - main_proj)
    return min(max(share / (share + main_proj), 0.0), 1.0)


def test_word_absorption_matches_a_plain_loop():
    g = torch.Generator().manual_seed(5)
    settings = ScoreSettings()
    for _ in range(200):
        acts_M = torch.randn(M, generator=g)
        probe = torch.nn.functional.normalize(torch.randn(M, generator=g), dim=0)
        sae_acts = torch.rand(E, generator=g) * (torch.rand(E, generator=g) < 0.2)
        cos = torch.rand(E, generator=g) * 0.6 - 0.1
        main = [int(i) for i in torch.randperm(E, generator=g)[:2]]
        result = word_absorption("w", acts_M, sae_acts, probe, cos, main, settings)
        pp = float(acts_M @ probe)
        if pp <= 0:
            continue
        proj = (sae_acts * cos).tolist()
        expected = _absorption_fraction_reference(proj, main, cos.tolist(), settings, pp)
        assert result.absorption_fraction == pytest.approx(expected, abs=1e-6)


def test_f1_and_means():
    y = np.array([1, 1, 0, 0, 1], dtype=bool)
    p = np.array([1, 0, 1, 0, 1], dtype=bool)
    assert f1_precision_recall(y, p) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert mean_scores([])["mean_full_absorption_score"] is None


def test_folding_decoder_norms_keeps_a_rescaling_topk_sae_the_same_function():
    from pivotal_sae.absorption.planting import fold_decoder_norms

    sae = Sae.random(M, E, architecture="topk", k=4, seed=2)
    sae.W_dec.data *= torch.rand(E, 1, generator=torch.Generator().manual_seed(0)) + 0.5
    sae.b_enc.data = torch.randn(E, generator=torch.Generator().manual_seed(1))
    sae.replace_info(rescale_acts_by_decoder_norm=True)
    folded = fold_decoder_norms(sae)
    assert not folded.info.rescale_acts_by_decoder_norm
    x = torch.randn(200, M, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(folded(x).latent_acts, sae(x).latent_acts)
    torch.testing.assert_close(folded(x).reconstruction, sae(x).reconstruction)
