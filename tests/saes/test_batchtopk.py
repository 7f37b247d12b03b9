"""BatchTopK and Matryoshka-BatchTopK against plain references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pivotal_sae.saes.batchtopk import BatchTopKSae, MatryoshkaBatchTopKSae
from pivotal_sae.saes.topk import TopKSae, scatter_dense


def reference_batch_topk(pre_acts_BE: torch.Tensor, k: int) -> torch.Tensor:
    """The k * B largest ReLU'd pre-activations of the batch, by sorting, as a dense tensor."""
    flat = pre_acts_BE.relu().flatten().tolist()
    order = sorted(range(len(flat)), key=lambda i: -flat[i])[: k * pre_acts_BE.shape[0]]
    dense = [0.0] * len(flat)
    for i in order:
        dense[i] = flat[i]
    return torch.tensor(dense).view_as(pre_acts_BE)


def test_training_keeps_the_batchs_top_k_and_inference_uses_the_threshold():
    torch.manual_seed(0)
    sae = BatchTopKSae(12, 40, 3)
    x_BM = torch.randn(16, 12)
    out = sae(x_BM)
    dense_BE = scatter_dense(out.values_BK, out.indices_BK, 40)
    assert torch.equal(dense_BE, reference_batch_topk(out.pre_acts_BE, 3))
    assert (dense_BE != 0).sum() == 3 * 16
    # Rows may hold different numbers of latents; the first batch sets the threshold.
    assert len(set((dense_BE != 0).sum(1).tolist())) > 1
    assert sae.threshold == dense_BE[dense_BE > 0].min()
    sae.eval()
    out = sae(x_BM)
    dense_BE = scatter_dense(out.values_BK, out.indices_BK, 40)
    expected = torch.where(out.pre_acts_BE > sae.threshold, out.pre_acts_BE, 0.0)
    assert torch.equal(dense_BE, expected)


def test_threshold_is_a_moving_average_after_the_first_batch():
    torch.manual_seed(1)
    sae = BatchTopKSae(12, 40, 3)
    sae(torch.randn(16, 12))
    first = sae.threshold.clone()
    out = sae(torch.randn(16, 12))
    kept = out.values_BK[out.values_BK > 0].min()
    assert torch.allclose(sae.threshold, first + 0.01 * (kept - first))


def test_matryoshka_batchtopk_loss_is_the_mean_over_prefixes():
    torch.manual_seed(2)
    sae = MatryoshkaBatchTopKSae(10, 32, 2, prefixes=(4, 16))
    assert sae.prefixes == (4, 16, 32) and sae.architecture == "matryoshka-batchtopk"
    x_BM = torch.randn(8, 10)
    out = sae(x_BM)
    acts_BE = scatter_dense(out.values_BK, out.indices_BK, 32)
    expected = (
        sum(F.mse_loss(acts_BE[:, :m] @ sae.W_dec[:m] + sae.b_dec, x_BM) for m in (4, 16, 32)) / 3
    )
    assert torch.allclose(sae.reconstruction_loss(x_BM, out), expected)
    assert (acts_BE != 0).sum() == 2 * 8


def reference_rank_by_norm(pre_acts_BE: torch.Tensor, norms_E: torch.Tensor, kept: int):
    """Loops: the `kept` largest keys pre-activation x decoder norm of the batch (positive only),
    their ReLU'd pre-activations as a dense tensor, and the smallest kept key."""
    B, E = pre_acts_BE.shape
    keyed = [(float(pre_acts_BE[b, e] * norms_E[e]), b, e) for b in range(B) for e in range(E)]
    keyed = [t for t in sorted(keyed, reverse=True)[:kept] if t[0] > 0]
    dense = torch.zeros(B, E)
    for _, b, e in keyed:
        dense[b, e] = pre_acts_BE[b, e]
    return dense, min(t[0] for t in keyed)


def with_random_decoder_norms(sae, seed: int):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(sae.d_sae, 1, generator=generator) * 3 + 0.1)
        sae.b_enc.copy_(torch.randn(sae.d_sae, generator=generator) * 0.1)
    return sae


def test_rank_by_norm_selects_by_contribution_against_loops():
    for seed in range(3):
        torch.manual_seed(seed)
        sae = with_random_decoder_norms(BatchTopKSae(12, 40, 3, rank_by_norm=True), seed)
        x_BM = torch.randn(16, 12)
        out = sae(x_BM)
        norms_E = sae.W_dec.detach().norm(dim=1)
        expected, smallest = reference_rank_by_norm(out.pre_acts_BE.detach(), norms_E, 3 * 16)
        dense_BE = scatter_dense(out.values_BK, out.indices_BK, 40)
        assert torch.equal(dense_BE, expected)
        # Raw ranking would have kept other latents: the norms changed the choice.
        assert not torch.equal(dense_BE, reference_batch_topk(out.pre_acts_BE, 3))
        assert torch.allclose(sae.threshold, torch.tensor(smallest))  # in contribution units
        sae.eval()
        out = sae(x_BM)
        keys_BE = out.pre_acts_BE * norms_E
        expected = torch.where(keys_BE > sae.threshold, out.pre_acts_BE, 0.0)
        assert torch.equal(scatter_dense(out.values_BK, out.indices_BK, 40), expected)
        # Per-row TopK: each row's k largest keys.
        topk = TopKSae(12, 40, 3, rank_by_norm=True)
        with torch.no_grad():
            topk.W_dec.copy_(sae.W_dec)
            topk.W_enc.copy_(sae.W_enc)
            topk.b_enc.copy_(sae.b_enc)
        out = topk(x_BM)
        keys_BE = out.pre_acts_BE.detach() * norms_E
        for b in range(16):
            chosen = sorted(range(40), key=lambda e: -float(keys_BE[b, e]))[:3]
            assert sorted(out.indices_BK[b].tolist()) == sorted(chosen)
            for slot, e in enumerate(out.indices_BK[b].tolist()):
                assert out.values_BK[b, slot] == out.pre_acts_BE[b, e].clamp(min=0)


def test_rank_by_norm_is_blind_to_moving_scale_between_encoder_and_decoder():
    """Scaling a latent's encoder (and bias) by c and its decoder by 1/c keeps its contribution:
    the selection by contribution and the reconstruction stay; a raw ranking's need not."""
    torch.manual_seed(4)
    x_BM = torch.randn(32, 12)
    for rank_by_norm in (True, False):
        sae = BatchTopKSae(12, 40, 3, rank_by_norm=rank_by_norm)
        before = scatter_dense(*sae(x_BM)[1:3], 40)
        with torch.no_grad():
            sae.W_enc[:, :20] *= 4.0
            sae.b_enc[:20] *= 4.0
            sae.W_dec[:20] /= 4.0
        sae.threshold.zero_()  # each batch starts afresh, the first sets the threshold
        out = sae(x_BM)
        after = scatter_dense(out.values_BK, out.indices_BK, 40)
        same_choice = torch.equal(before != 0, after != 0)
        assert same_choice == rank_by_norm
        if rank_by_norm:
            assert torch.allclose(after @ sae.W_dec, before @ (sae.W_dec * torch.where(
                torch.arange(40) < 20, 4.0, 1.0)[:, None]), atol=1e-5)  # fmt: skip


def test_decoder_init_norm_and_the_options_survive_saving(tmp_path):
    from pivotal_sae.saes.toy_io import build_toy_sae, load_toy_sae, save_toy_sae

    sae = build_toy_sae("matryoshka-batchtopk", 12, 32, 2, prefixes=(8, 16),
                        rank_by_norm=True, decoder_init_norm=0.1)  # fmt: skip
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.full((32,), 0.1))
    assert torch.equal(sae.W_enc, sae.W_dec.T)
    save_toy_sae(sae, tmp_path / "sae")
    again = load_toy_sae(tmp_path / "sae")
    assert again.rank_by_norm and again.decoder_init_norm == 0.1
    x_BM = torch.randn(8, 12)
    assert torch.equal(sae(x_BM).indices_BK, again(x_BM).indices_BK)
    # Unset, the config is what it was before the options existed.
    assert "rank_by_norm" not in build_toy_sae("topk", 12, 32, 2).config_dict()
    with pytest.raises(ValueError, match="applies to"):
        build_toy_sae("hierarchical", 12, 30, 2, rank_by_norm=True)
    with pytest.raises(ValueError, match="must be > 0"):
        build_toy_sae("topk", 12, 32, 2, decoder_init_norm=0.0)
