"""Each vectorized metric against a plain-loop reference, on fresh random SAEs and data."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pivotal_sae.saes.hierarchical import HierarchicalSae
from pivotal_sae.saes.topk import TopKSae
from pivotal_sae.toy.data import make_features, sample_batch
from pivotal_sae.toy.metrics import (
    absorption_rate,
    activation_metrics,
    latent_directions,
    latent_firing,
    weight_metrics,
)


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a, b, dim=0).item()


def nearest(direction: torch.Tensor, children: torch.Tensor) -> int:
    best, best_sim = -1, -math.inf
    for c in range(children.shape[0]):
        sim = cos(direction, children[c])
        if sim > best_sim:
            best, best_sim = c, sim
    return best


def detection_reference(sae: HierarchicalSae, children: torch.Tensor, adjusted: bool):
    n = sae.n_children
    pairs = singles = 0
    for e in range(sae.d_sae):
        found = []
        for slot in range(n):
            h = e * n + slot
            ratio = sae.child_ratio_H[h].item() if adjusted else 1.0
            found.append(nearest(sae.W_dec[e] + ratio * sae.W_dec_child[h], children))
        same_parent = len({f // n for f in found}) == 1
        pairs += same_parent and len(set(found)) == n
        singles += len(set(found)) == 1
    return pairs / sae.d_sae, singles / sae.d_sae


def mmcs_reference(directions: torch.Tensor, children: torch.Tensor) -> tuple[float, float]:
    best = [max(cos(d, c) for d in directions) for c in children]
    return min(best), sum(best) / len(best)


def random_hierarchical(n_children: int, seed: int) -> HierarchicalSae:
    sae = HierarchicalSae(9, 6, 2, n_children, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        sae.child_ratio_H.uniform_(0.1, 2.0)
    return sae


@pytest.mark.parametrize("n_children", [2, 3])
def test_weight_metrics_match_plain_loops(n_children):
    seed = torch.seed() % 2**31
    features = make_features(6, n_children, 9, 0.6, torch.Generator().manual_seed(seed))
    sae = random_hierarchical(n_children, seed)
    # Plant some exact successes and failures so both branches are exercised.
    with torch.no_grad():
        units = features.perturbations_ANM / features.perturbations_ANM.norm(dim=-1, keepdim=True)
        sae.W_dec[0] = features.parents_AM[3]
        sae.W_dec_child.view(6, n_children, 9)[0] = units[3]
        sae.child_ratio_H[:n_children] = 1.0
        sae.W_dec_child.view(6, n_children, 9)[1] = 0.0
    metrics = weight_metrics(sae, features)
    children = features.children_CM
    for prefix, adjusted in (("", False), ("adjusted_", True)):
        pair, single = detection_reference(sae, children, adjusted)
        assert metrics[f"{prefix}pair_detection_rate"] == pytest.approx(pair)
        assert metrics[f"{prefix}single_detection_rate"] == pytest.approx(single)
        directions = [
            sae.W_dec[e] + (sae.child_ratio_H[h].item() if adjusted else 1.0) * sae.W_dec_child[h]
            for e in range(6)
            for h in range(e * n_children, (e + 1) * n_children)
        ]
        low, mean = mmcs_reference(torch.stack(directions), children)
        assert metrics[f"{prefix}mmcs_min"] == pytest.approx(low, abs=1e-5)
        assert metrics[f"{prefix}mmcs_mean"] == pytest.approx(mean, abs=1e-5)
    assert metrics["pair_detection_rate"] >= 1 / 6  # latent 0 was set to the ground truth
    assert metrics["single_detection_rate"] >= 1 / 6  # latent 1's children coincide


def test_flat_sae_metrics_use_decoder_rows():
    features = make_features(5, 2, 8, 0.4, torch.Generator().manual_seed(torch.seed() % 2**31))
    sae = TopKSae(8, 7, 2, generator=torch.Generator().manual_seed(1))
    metrics = weight_metrics(sae, features)
    low, mean = mmcs_reference(sae.W_dec, features.children_CM)
    assert metrics["mmcs_min"] == pytest.approx(low, abs=1e-5)
    assert metrics["mmcs_mean"] == pytest.approx(mean, abs=1e-5)
    assert metrics["pair_detection_rate"] is None and metrics["adjusted_mmcs_mean"] is None


def firing_reference(sae, out, batch_size):
    """Dense (B, L) firing table built one selected latent at a time."""
    n = getattr(sae, "n_children", 0)
    width = sae.d_sae * (1 + n)
    fires = [[False] * width for _ in range(batch_size)]
    for b in range(batch_size):
        for j in range(out.indices_BK.shape[1]):
            e = int(out.indices_BK[b, j])
            if out.values_BK[b, j] != 0:
                fires[b][e] = True
            if n and out.child_values_BK[b, j] != 0:
                fires[b][sae.d_sae + e * n + int(out.child_slots_BK[b, j])] = True
    return fires


def absorption_reference(directions, fires, features, child_on):
    def best_latent(target):
        sims = [cos(d, target) for d in directions]
        return max(range(len(sims)), key=lambda i: (sims[i], -i))

    n = features.n_children
    parent_latent = [best_latent(p) for p in features.parents_AM]
    child_latent = [best_latent(c) for c in features.children_CM]
    events = absorbed = 0
    for b in range(len(fires)):
        for c in range(features.children_CM.shape[0]):
            if child_on[b, c] and fires[b][child_latent[c]]:
                events += 1
                absorbed += not fires[b][parent_latent[c // n]]
    return absorbed / events if events else None


@pytest.mark.parametrize("arch", ["topk", "hierarchical"])
def test_activation_metrics_match_plain_loops(arch):
    seed = torch.seed() % 2**31
    rng = torch.Generator().manual_seed(seed)
    features = make_features(5, 2, 8, 0.5, rng)
    batch = sample_batch(features, 300, 2, 0.3, rng)
    if arch == "topk":
        sae = TopKSae(8, 12, 3, generator=rng)
    else:
        sae = HierarchicalSae(8, 5, 2, 2, generator=rng)
    with torch.no_grad():
        out = sae(batch.x_BM)
        metrics = activation_metrics(sae, out, batch, features)
        fires = firing_reference(sae, out, 300)
        assert latent_firing(sae, out).tolist() == fires
        directions = latent_directions(sae)
    expected = absorption_reference(directions, fires, features, batch.child_on_BC)
    assert metrics["absorption_rate"] == pytest.approx(expected)
    assert absorption_rate(directions, latent_firing(sae, out), features, batch.child_on_BC) == (
        pytest.approx(expected)
    )
    dead = [not any(row[i] for row in fires) for i in range(len(fires[0]))]
    if arch == "topk":
        assert metrics["dead_latents_by_kind"] == {"latent": sum(dead)}
    else:
        child_dead = dead[5:]
        assert metrics["dead_latents_by_kind"] == {
            "parent": sum(dead[:5]),
            "child_0": sum(child_dead[0::2]),
            "child_1": sum(child_dead[1::2]),
        }
    mse = sum(
        (out.recon_BM[b, m] - batch.x_BM[b, m]).item() ** 2 for b in range(300) for m in range(8)
    ) / (300 * 8)
    assert metrics["val_reconstruction_mse"] == pytest.approx(mse, rel=1e-4)


def test_absorption_counts_a_silent_parent_latent():
    """Two latents: one exactly the parent, one exactly a child; the parent one never fires."""
    features = make_features(1, 2, 4, 0.5, torch.Generator().manual_seed(0))
    directions = torch.stack([features.parents_AM[0], features.children_CM[1]])
    child_on = torch.tensor([[False, True], [False, True], [True, False]])
    fires = torch.tensor([[False, True], [True, True], [False, False]])
    # Child 1's latent fired on rows 0 and 1; the parent's latent was silent on row 0 only.
    assert absorption_rate(directions, fires, features, child_on) == pytest.approx(0.5)
