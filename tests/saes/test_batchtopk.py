"""BatchTopK and Matryoshka-BatchTopK against plain references."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pivotal_sae.saes.batchtopk import BatchTopKSae, MatryoshkaBatchTopKSae
from pivotal_sae.saes.topk import scatter_dense


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
