"""BatchTopK SAE (Bussmann et al. 2024) and its Matryoshka form, as trained on synthetic worlds.

Training keeps the `k * B` largest ReLU'd pre-activations of the whole batch rather than `k` per
row, so rows that hold more features may use more latents. Inference cannot see a batch, so a
threshold (an exponential moving average, coefficient 0.01, of the smallest kept activation of
each training batch, as SAELens computes it, started at the first batch's) replaces the
selection: a latent fires where its pre-activation exceeds it. (SAELens's training SAE keeps the
batch selection when evaluated; the benchmark's L0 column shows the difference.)

Selections stay sparse: each row's kept latents are its `K` largest pre-activations, `K` being
the most any row keeps in this batch; slots below the batch's cut hold 0 (not firing), as a
ReLU'd TopK value of 0 does.

With `rank_by_norm` (a `TopKSae` option) the selection ranks pre-activations times decoder row
norms, each latent's contribution, and the cut and the threshold are in those units, as
SAELens's `rescale_acts_by_decoder_norm` does; values and the reconstruction stay raw.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pivotal_sae.saes.matryoshka import MatryoshkaSae
from pivotal_sae.saes.topk import TopKSae

THRESHOLD_EMA_COEFF = 0.01


def keep_above(
    pre_acts_BE: Tensor, cut: Tensor | float, keys_BE: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Each row's latents whose key (`keys_BE`, default the pre-activations) is >= `cut` (and
    > 0) as (values, indices) of the row's top K by key, K the largest count of any row (at
    least 1); values are the ReLU'd pre-activations, and the other slots hold 0."""
    keys_BE = pre_acts_BE if keys_BE is None else keys_BE
    width = int((keys_BE >= cut).sum(dim=1).max().clamp(1, keys_BE.shape[1]).item())
    top_keys_BK, indices_BK = keys_BE.topk(width, dim=-1)
    values_BK = top_keys_BK if keys_BE is pre_acts_BE else pre_acts_BE.gather(1, indices_BK)
    return torch.where(top_keys_BK >= cut, values_BK.relu(), 0.0), indices_BK


class BatchTopKSae(TopKSae):
    """TopK over the whole batch while training; a learned global threshold at inference."""

    architecture = "batchtopk"
    threshold: Tensor

    def __init__(self, d_in: int, d_sae: int, k: int, **options: Any) -> None:
        super().__init__(d_in, d_sae, k, **options)
        self.register_buffer("threshold", torch.zeros(()))

    def batch_k(self) -> float:
        """Latents kept per row, on average over the batch, by the training selection."""
        return float(self.k)

    def select(self, pre_acts_BE: Tensor) -> tuple[Tensor, Tensor]:
        # With `rank_by_norm` the keys, the cut and the threshold are in contribution units.
        keys_BE = self.selection_keys(pre_acts_BE)
        if not self.training:
            # Strictly above: a threshold of 0 (never trained) must not let zeros fire.
            above = torch.nextafter(self.threshold, self.threshold + 1)
            return keep_above(pre_acts_BE, above, keys_BE)
        relu_BE = keys_BE.relu()
        kept = min(max(1, round(self.batch_k() * pre_acts_BE.shape[0])), relu_BE.numel())
        cut = relu_BE.flatten().topk(kept, sorted=False).values.min()
        cut = cut.clamp_min(torch.finfo(cut.dtype).tiny)
        values_BK, indices_BK = keep_above(pre_acts_BE, cut, keys_BE)
        with torch.no_grad():
            kept_keys_BK = values_BK if keys_BE is pre_acts_BE else keys_BE.gather(1, indices_BK)
            positive = kept_keys_BK[values_BK > 0]
            if positive.numel():
                # The first batch sets the threshold (0 means never trained), so that short
                # runs do not infer with a threshold still climbing from 0.
                weight = torch.where(self.threshold > 0, THRESHOLD_EMA_COEFF, 1.0)
                self.threshold.lerp_(positive.min(), weight)
        return values_BK, indices_BK


class MatryoshkaBatchTopKSae(BatchTopKSae, MatryoshkaSae):
    """Matryoshka's nested-prefix loss over a BatchTopK selection (the published Matryoshka)."""

    architecture = "matryoshka-batchtopk"
    own_options: tuple[str, ...] = ("prefixes",)
