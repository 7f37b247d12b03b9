"""Matryoshka TopK SAE (Bussmann et al. 2025): nested prefixes of latents each reconstruct alone.

One TopK selection over all latents; the training loss is the mean, over the nested prefix sizes
`m_1 < m_2 < ... < E`, of the reconstruction error using only the selected latents below `m_i`.
The early latents are thereby pushed to carry general (parent) directions by themselves, which
is what the paper proposes against feature absorption. We keep per-row TopK (the paper uses
BatchTopK) so that it meets the other two architectures on equal sparsity terms.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pivotal_sae.saes.topk import Init, TopKSae, ToySaeOutput, scatter_dense


def default_prefixes(d_sae: int, smallest: int = 8) -> tuple[int, ...]:
    """Halve the width until below `smallest`: 90 -> (11, 22, 45, 90)."""
    sizes = [d_sae]
    while sizes[-1] // 2 >= smallest:
        sizes.append(sizes[-1] // 2)
    return tuple(reversed(sizes))


class MatryoshkaSae(TopKSae):
    architecture = "matryoshka"
    #: Constructor options of this architecture beyond the common ones (`toy_io.build_toy_sae`).
    own_options: tuple[str, ...] = ("prefixes",)

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        k: int,
        prefixes: tuple[int, ...] | None = None,
        *,
        relu: bool = True,
        init: Init = "tied",
        balance: bool = False,
        generator: torch.Generator | None = None,
        **flat_options: Any,
    ) -> None:
        super().__init__(
            d_in, d_sae, k, relu=relu, init=init, balance=balance, generator=generator,
            **flat_options,
        )  # fmt: skip
        sizes = sorted(set(prefixes or default_prefixes(d_sae)) | {d_sae})
        if sizes[0] < 1 or sizes[-1] > d_sae:
            raise ValueError(f"Matryoshka prefixes must lie in 1..{d_sae}, got {sizes}")
        self.prefixes = tuple(sizes)

    def prefix_reconstruction(self, acts_BE: Tensor, m: int) -> Tensor:
        """The reconstruction by the first `m` latents alone (one Matryoshka level)."""
        return torch.addmm(self.b_dec, acts_BE[:, :m], self.W_dec[:m])

    def reconstruction_loss(self, x_BM: Tensor, out: ToySaeOutput) -> Tensor:
        acts_BE = scatter_dense(out.values_BK, out.indices_BK, self.d_sae)
        losses = [F.mse_loss(self.prefix_reconstruction(acts_BE, m), x_BM) for m in self.prefixes]
        return torch.stack(losses).mean()

    def config_dict(self) -> dict[str, object]:
        return {**super().config_dict(), "prefixes": list(self.prefixes)}
