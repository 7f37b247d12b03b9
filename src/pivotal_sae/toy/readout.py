"""Reading a trained toy SAE out with thresholds instead of the selection it trained with.

A TopK SAE keeps exactly k latents on every row, so a row with fewer ground-truth features than
k gets spurious latents and a row with more loses some. A threshold readout (JumpReLU-style
inference) keeps every latent whose pre-activation clears its threshold, so the count follows
the row. The thresholds are calibrated on fresh draws from the world, using nothing of its
ground truth, so that the mean L0 stays the SAE's k:

- `global`: one threshold for all latents (the inference BatchTopK SAEs use).
- `latent`: one per latent, in proportion to that latent's mean activation where a per-row TopK
  (k) keeps it, so a latent whose activations run small is not held to the others'.
- `trained`: the SAE as trained (no calibration).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from pivotal_sae.saes.topk import TopKSae

if TYPE_CHECKING:
    from sae_lens.synthetic import SyntheticModel

READOUTS = ("trained", "global", "latent")


class ThresholdView(nn.Module):
    """A TopK-family SAE as a flat dictionary that fires latent e where its pre-activation is
    positive and at least `thresholds_E[e]`."""

    thresholds_E: Tensor

    def __init__(self, sae: TopKSae, thresholds_E: Tensor) -> None:
        super().__init__()
        self.sae = sae
        self.register_buffer("thresholds_E", thresholds_E)

    @property
    def W_dec(self) -> Tensor:
        return self.sae.W_dec

    def encode(self, x_BM: Tensor) -> Tensor:
        pre_BE = torch.addmm(self.sae.b_enc, x_BM, self.sae.W_enc)
        return torch.where((pre_BE >= self.thresholds_E) & (pre_BE > 0), pre_BE, 0.0)

    def decode(self, acts_BE: Tensor) -> Tensor:
        return torch.addmm(self.sae.b_dec, acts_BE, self.sae.W_dec)


@torch.no_grad()
def calibrate_thresholds(
    sae: TopKSae, world: SyntheticModel, readout: str, samples: int = 20_000, chunk: int = 5_000
) -> Tensor:
    """Thresholds (E) for `readout` ("global" or "latent") that keep `sae.k` latents per row on
    average over `samples` fresh rows of `world`."""
    if readout not in ("global", "latent"):
        raise ValueError(f"no thresholds to calibrate for readout {readout!r}")
    pre_chunks, kept_sum_E, kept_count_E = [], None, None
    for start in range(0, samples, chunk):
        x_BM = world.sample(min(chunk, samples - start))
        pre_BE = torch.addmm(sae.b_enc, x_BM, sae.W_enc).relu_()
        pre_chunks.append(pre_BE)
        values_BK, indices_BK = pre_BE.topk(sae.k, dim=-1)
        sums_E = values_BK.new_zeros(sae.d_sae).index_add_(
            0, indices_BK.flatten(), values_BK.flatten()
        )
        counts_E = values_BK.new_zeros(sae.d_sae).index_add_(
            0, indices_BK.flatten(), (values_BK > 0).flatten().to(values_BK.dtype)
        )
        kept_sum_E = sums_E if kept_sum_E is None else kept_sum_E + sums_E
        kept_count_E = counts_E if kept_count_E is None else kept_count_E + counts_E
    assert kept_sum_E is not None and kept_count_E is not None
    pre_NE = torch.cat(pre_chunks)
    if readout == "global":
        scale_E = torch.ones(sae.d_sae, device=pre_NE.device)
    else:
        # A latent the selection never kept has no scale: it stays silent.
        scale_E = torch.where(kept_count_E > 0, kept_sum_E / kept_count_E.clamp_min(1), torch.inf)
    ratios = (pre_NE if readout == "global" else pre_NE / scale_E).flatten()
    keep = min(sae.k * pre_NE.shape[0], ratios.numel())
    # The keep-th largest ratio: rows keep on average k latents at or above it.
    alpha = ratios.kthvalue(ratios.numel() - keep + 1).values
    alpha = alpha.clamp_min(torch.finfo(alpha.dtype).tiny)
    return alpha * scale_E


def readout_view(
    sae: TopKSae, world: SyntheticModel, readout: str, samples: int = 20_000
) -> ThresholdView | None:
    """The flat dictionary `score_on_world` reads for `readout`; `None` for "trained"."""
    if readout == "trained":
        return None
    return ThresholdView(sae, calibrate_thresholds(sae, world, readout, samples))
