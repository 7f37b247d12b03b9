"""The tree SAE against a plain per-row reference of its rule."""

from __future__ import annotations

import pytest
import torch

from pivotal_sae.saes.topk import scatter_dense
from pivotal_sae.saes.tree import TreeSae, forest_parents, level_slices, tree_parents


def test_forest_layout():
    assert tree_parents(3, 1, 2, 2) == (-1, -1, -1, 0, 0, 3, 3, 4, 4)
    parents = forest_parents(12, 1, 2, 2)  # 7 tree latents, 5 flat beside the root
    assert parents[:6] == (-1,) * 6 and len(parents) == 12
    assert level_slices(parents) == [(0, 6), (6, 8), (8, 12)]
    with pytest.raises(ValueError, match="more than the width"):
        forest_parents(6, 1, 2, 2)
    with pytest.raises(ValueError, match="level by level"):
        level_slices((-1, 0, -1))


def reference_tree_acts(pre_BL: torch.Tensor, top_BL: torch.Tensor, parents, cut: float):
    """Row by row, latent by latent: top-level activations as selected; a child keeps its
    pre-activation if its parent fired, it is the largest among its siblings and above `cut`
    (0, training or not)."""
    acts = top_BL.clone()
    for row in range(pre_BL.shape[0]):
        for latent, parent in enumerate(parents):
            if parent < 0:
                continue
            siblings = [s for s, p in enumerate(parents) if p == parent]
            best = max(pre_BL[row, s].item() for s in siblings)
            value = pre_BL[row, latent].item()
            fires = acts[row, parent] > 0 and value >= best and value > cut
            acts[row, latent] = value if fires else 0.0
    return acts


@pytest.mark.parametrize("training", [True, False])
def test_tree_rule_matches_the_reference(training):
    torch.manual_seed(0)
    parents = forest_parents(30, 2, 3, 2)
    sae = TreeSae(10, 30, 2, parents=parents)
    with torch.no_grad():
        sae.b_enc.add_(0.3)  # more children above zero
    sae(torch.randn(32, 10))  # sets the threshold
    sae.train(training)
    x_BM = torch.randn(16, 10)
    k_before, rate_before = sae.batch_k(), sae.child_rate.clone()
    assert k_before == max(1.0, 2 - rate_before.item())
    out = sae(x_BM)
    top = level_slices(parents)[0][1]
    got = scatter_dense(out.values_BK, out.indices_BK, 30)
    top_BL = got.clone()
    top_BL[:, top:] = 0
    expected = reference_tree_acts(out.pre_acts_BE, top_BL, parents, 0.0)
    assert torch.equal(got, expected)
    children_fired = (got[:, top:] != 0).sum()
    assert children_fired > 0
    if training:
        # The top level keeps k per row minus the children's moving rate; the rate moves.
        assert (got[:, :top] != 0).sum() == round(k_before * 16)
        assert torch.allclose(
            sae.child_rate, rate_before + 0.1 * (children_fired / 16 - rate_before)
        )
    else:
        assert torch.equal(sae.child_rate, rate_before)
        assert torch.equal(got[:, :top] != 0, out.pre_acts_BE[:, :top] > sae.threshold)
    assert torch.allclose(out.recon_BM, got @ sae.W_dec + sae.b_dec, atol=1e-6)


@pytest.mark.parametrize("arch", ["batchtopk", "matryoshka-batchtopk", "tree"])
def test_new_architectures_round_trip_through_directories(arch, tmp_path):
    from pivotal_sae.saes.toy_io import build_toy_sae, load_toy_sae, save_toy_sae

    parents = forest_parents(21, 1, 2, 2) if arch == "tree" else None
    sae = build_toy_sae(arch, 7, 21, 2, prefixes=(4, 8), parents=parents)
    sae(torch.randn(32, 7))  # trains the threshold (and the tree's child rate)
    save_toy_sae(sae, tmp_path / "sae")
    loaded = load_toy_sae(tmp_path / "sae").eval()
    sae.eval()
    assert type(loaded) is type(sae) and loaded.threshold == sae.threshold > 0
    assert getattr(loaded, "parents", None) == getattr(sae, "parents", None)
    x = torch.randn(4, 7)
    torch.testing.assert_close(loaded(x).recon_BM, sae(x).recon_BM)


def test_tree_loss_is_matryoshka_over_the_top_level_and_each_level():
    torch.manual_seed(3)
    parents = forest_parents(46, 2, 3, 2)  # top level 22 latents, then 6 children, 18 below
    sae = TreeSae(10, 46, 3, parents=parents)
    assert level_slices(parents) == [(0, 22), (22, 28), (28, 46)]
    assert sae.prefixes == (1, 2, 11, 22, 28, 46)
    x_BM = torch.randn(8, 10)
    out = sae(x_BM)
    acts_BL = scatter_dense(out.values_BK, out.indices_BK, 46)
    expected = torch.stack(
        [((acts_BL[:, :m] @ sae.W_dec[:m] + sae.b_dec - x_BM) ** 2).mean() for m in sae.prefixes]
    ).mean()
    torch.testing.assert_close(sae.reconstruction_loss(x_BM, out), expected)
