"""Toy-lab SAEs against plain-loop references of SPEC §1's rules."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pivotal_sae.saes.hierarchical import RATIO_EMA_COEFF, HierarchicalSae
from pivotal_sae.saes.matryoshka import MatryoshkaSae, default_prefixes
from pivotal_sae.saes.toy_io import build_toy_sae, load_toy_sae, save_toy_sae


def fresh_seed() -> int:
    return torch.seed() % 2**31


def hierarchical_reference(sae: HierarchicalSae, x: torch.Tensor):
    """Row by row: top-k parents, then the strongest child of each selected parent."""
    n = sae.n_children
    recon = torch.zeros_like(x)
    parent_acts = torch.zeros(x.shape[0], sae.d_sae)
    child_acts = torch.zeros(x.shape[0], sae.d_sae * n)
    for b in range(x.shape[0]):
        pre = x[b] @ sae.W_enc + sae.b_enc
        chosen = sorted(range(sae.d_sae), key=lambda e: -pre[e].item())[: sae.k]
        recon[b] = sae.b_dec
        for e in chosen:
            value = max(pre[e].item(), 0.0) if sae.relu else pre[e].item()
            parent_acts[b, e] = value
            recon[b] += value * sae.W_dec[e]
            if value == 0:
                continue  # a child fires only where its parent does
            child_pre = [
                (x[b] @ sae.W_enc_child[:, e * n + s] + sae.b_enc_child[e * n + s]).item()
                for s in range(n)
            ]
            winner = max(range(n), key=lambda s: child_pre[s])
            child_value = max(child_pre[winner], 0.0) if sae.relu else child_pre[winner]
            child_acts[b, e * n + winner] = child_value
            recon[b] += child_value * sae.W_dec_child[e * n + winner]
    return recon, parent_acts, child_acts


@pytest.mark.parametrize(("relu", "n_children"), [(True, 2), (False, 3)])
def test_hierarchical_forward_matches_plain_loop(relu, n_children):
    rng = torch.Generator().manual_seed(fresh_seed())
    init = "tied" if relu else "linear"
    sae = HierarchicalSae(6, 5, 2, n_children, relu=relu, init=init, generator=rng)
    x = torch.randn(40, 6, generator=rng)
    with torch.no_grad():
        out = sae(x)
        recon, parent_acts, child_acts = hierarchical_reference(sae, x)
    torch.testing.assert_close(out.recon_BM, recon, atol=1e-5, rtol=1e-5)
    dense_parent = torch.zeros(40, 5).scatter(1, out.indices_BK, out.values_BK)
    torch.testing.assert_close(dense_parent, parent_acts)
    child_index = out.indices_BK * n_children + out.child_slots_BK
    dense_child = torch.zeros(40, 5 * n_children).scatter(1, child_index, out.child_values_BK)
    torch.testing.assert_close(dense_child, child_acts)


def test_ratio_ema_matches_plain_loop():
    rng = torch.Generator().manual_seed(fresh_seed())
    sae = HierarchicalSae(6, 4, 2, 2, relu=True, generator=rng)
    with torch.no_grad():
        sae.child_ratio_H.uniform_(0.5, 1.5, generator=rng)
        sae.b_enc_child.fill_(-0.05)  # some children stay silent, so some rows don't count
        out = sae(torch.randn(30, 6, generator=rng))
    before = sae.child_ratio_H.clone()
    expected = before.clone()
    for h in range(8):
        e, slot = divmod(h, 2)
        ratios = [
            (out.child_values_BK[b, j] / out.values_BK[b, j]).item()
            for b in range(30)
            for j in range(2)
            if out.indices_BK[b, j] == e
            and out.child_slots_BK[b, j] == slot
            and out.values_BK[b, j] != 0
            and out.child_values_BK[b, j] != 0
        ]
        if ratios:
            mean = sum(ratios) / len(ratios)
            expected[h] = (1 - RATIO_EMA_COEFF) * before[h] + RATIO_EMA_COEFF * mean
    sae.update_child_ratios_(out)
    torch.testing.assert_close(sae.child_ratio_H, expected)
    assert not torch.equal(expected, before), "the batch should have updated some ratio"


def test_alignment_loss_matches_plain_loop_and_moves_only_decoders():
    rng = torch.Generator().manual_seed(fresh_seed())
    sae = HierarchicalSae(6, 5, 3, 2, relu=False, init="linear", generator=rng)
    out = sae(torch.randn(20, 6, generator=rng))
    loss = sae.alignment_loss(out)
    expected = 0.0
    for b in range(20):
        for j in range(3):
            a_p = out.values_BK[b, j].item()
            if a_p <= 0:
                continue
            e = int(out.indices_BK[b, j])
            a_c = out.child_values_BK[b, j].item()
            parent = a_p * sae.W_dec[e]
            child = a_c * sae.W_dec_child[e * 2 + int(out.child_slots_BK[b, j])]
            expected -= F.cosine_similarity(parent, parent + child, dim=0).item()
    assert loss.item() == pytest.approx(expected / 20, abs=1e-5)
    loss.backward()
    assert sae.W_enc.grad is None and sae.W_enc_child.grad is None
    assert sae.W_dec_child.grad is not None and sae.W_dec_child.grad.abs().sum() > 0


def test_matryoshka_loss_is_mean_over_prefixes():
    rng = torch.Generator().manual_seed(fresh_seed())
    sae = MatryoshkaSae(5, 12, 3, prefixes=(3, 6), generator=rng)
    x = torch.randn(16, 5, generator=rng)
    out = sae(x)
    losses = []
    for m in (3, 6, 12):
        recon = torch.zeros_like(x) + sae.b_dec
        for b in range(16):
            for j in range(3):
                e = int(out.indices_BK[b, j])
                if e < m:
                    recon[b] += out.values_BK[b, j] * sae.W_dec[e]
        losses.append(((recon - x) ** 2).mean())
    assert sae.reconstruction_loss(x, out).item() == pytest.approx(
        torch.stack(losses).mean().item(), rel=1e-5
    )
    assert default_prefixes(90) == (11, 22, 45, 90)


@pytest.mark.parametrize("arch", ["topk", "hierarchical", "matryoshka"])
def test_toy_sae_directories_round_trip(arch, tmp_path):
    sae = build_toy_sae(arch, 7, 16, 2, n_children=3, generator=torch.Generator().manual_seed(1))
    if isinstance(sae, HierarchicalSae):
        sae.child_ratio_H.fill_(0.25)
    save_toy_sae(sae, tmp_path / "sae")
    loaded = load_toy_sae(tmp_path / "sae")
    assert type(loaded) is type(sae)
    for name, tensor in sae.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    x = torch.randn(4, 7)
    torch.testing.assert_close(loaded(x).recon_BM, sae(x).recon_BM)


@pytest.mark.parametrize(("relu", "coeff", "balance"), [(True, 1.0, True), (False, 0.0, False)])
def test_hand_written_gradients_match_autograd(relu, coeff, balance):
    rng = torch.Generator().manual_seed(fresh_seed())
    init = "tied" if relu else "linear"
    sae = HierarchicalSae(
        8, 6, 2, 3, relu=relu, init=init, balance=balance, parent_recon_coeff=coeff, generator=rng
    )
    with torch.no_grad():
        sae.selection_bias_E.normal_(0, 0.1, generator=rng)
    x = torch.randn(25, 8, generator=rng)
    expected = sae.reconstruction_loss(x, sae(x))
    expected.backward()
    loss, out, grads = sae.reconstruction_loss_and_grads(x)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(out.recon_BM, sae(x).recon_BM)
    assert sorted(grads) == sorted(name for name, _ in sae.named_parameters())
    for name, p in sae.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)
