"""SAELens's per-level auxiliary loss against a loop over levels, rows and latents."""

from __future__ import annotations

import pytest
import torch

from pivotal_sae.saes.batchtopk import MatryoshkaBatchTopKSae
from pivotal_sae.saes.toy_io import build_toy_sae
from pivotal_sae.toy.level_aux import StepsSinceFired, level_aux_loss


def reference(sae, x_BM, out, dead_E) -> float:
    """SAELens's form written out: per level, per row, its k_aux largest-ranked dead latents
    (pre-activation times decoder norm with rank_by_norm) add pre-activation x decoder row; the
    squared error to the level's residual, summed over dimensions, averaged over rows, weighted
    by min(dead / k_aux, 1) and summed over levels; then put on our scale (/ width / levels)."""
    B, M = x_BM.shape
    pre, W = out.pre_acts_BE.detach().double(), sae.W_dec.detach().double()
    acts = torch.zeros(B, sae.d_sae, dtype=torch.float64)
    for b in range(B):
        for slot in range(out.indices_BK.shape[1]):
            acts[b, out.indices_BK[b, slot]] = float(out.values_BK[b, slot].detach())
    norms = W.norm(dim=1)
    k_aux, total, start = M // 2, 0.0, 0
    for end in sae.prefixes:
        dead = [e for e in range(start, end) if dead_E[e]]
        if dead:
            k, level = min(k_aux, len(dead)), 0.0
            for b in range(B):
                keys = pre[b] * norms if sae.rank_by_norm else pre[b]
                chosen = sorted(dead, key=lambda e: float(keys[e]), reverse=True)[:k]
                residual = x_BM[b].double() - sae.b_dec.detach().double() - acts[b, :end] @ W[:end]
                recon = sum(pre[b, e] * W[e] for e in chosen)
                level += float(((recon - residual) ** 2).sum()) / B
            total += min(len(dead) / k_aux, 1.0) * level
        start = end
    return total / M / len(sae.prefixes)


@pytest.mark.parametrize("rank_by_norm", [False, True])
def test_level_aux_loss_against_a_loop(rank_by_norm):
    for seed in range(3):
        generator = torch.Generator().manual_seed(seed)
        sae = build_toy_sae("matryoshka-batchtopk", 10, 32, 2, prefixes=(4, 16),
                            rank_by_norm=rank_by_norm, generator=generator)  # fmt: skip
        assert isinstance(sae, MatryoshkaBatchTopKSae)
        with torch.no_grad():
            sae.W_dec.mul_(torch.rand(32, 1, generator=generator) * 2 + 0.2)
            sae.b_dec.copy_(torch.randn(10, generator=generator))
        x_BM = torch.randn(12, 10, generator=generator)
        out = sae(x_BM)
        dead_E = torch.rand(32, generator=generator) < 0.4
        dead_E[:4] = torch.tensor([True, False, True, True])  # level 1: 3 dead, k_aux 5
        loss = level_aux_loss(sae, x_BM, out, dead_E)
        assert float(loss.detach()) == pytest.approx(reference(sae, x_BM, out, dead_E), rel=1e-5)
        loss.backward()  # dead latents get gradient through their encoder columns
        assert sae.W_enc.grad is not None and sae.W_enc.grad[:, dead_E].abs().sum() > 0
        assert float(level_aux_loss(sae, x_BM, out, torch.zeros(32, dtype=torch.bool))) == 0


def test_steps_since_fired_marks_dead_after_the_window():
    tracker = StepsSinceFired(4, torch.device("cpu"), window=2)
    fired = torch.tensor([True, False, False, False])
    for _ in range(3):
        assert not tracker.dead().any()
        tracker.update(fired)
    assert tracker.dead().tolist() == [False, True, True, True]
    tracker.update(torch.tensor([False, True, False, False]))
    assert tracker.dead().tolist() == [False, False, True, True]
    again = StepsSinceFired(4, torch.device("cpu"), window=2)
    again.load_state_dict(tracker.state_dict())
    assert torch.equal(again.since_E, tracker.since_E)
