"""SAELens's per-level auxiliary loss for dead latents of a Matryoshka SAE, on our loss's scale.

SAELens's Matryoshka BatchTopK (`use_matryoshka_aux_loss=True`, as the SynthSAEBench experiments
train it) calls a latent dead when it has not fired for more than a window of training steps
(1,000 there). For each Matryoshka level, the latents it adds (those between the previous prefix
and its own) that are dead take part: on each row the `k_aux` dead ones with the largest
pre-activations (no ReLU; `k_aux` = half the input width, at most the level's dead count) are
asked to reconstruct what that level's prefix reconstruction left over (detached). Each level's
term is weighted by min(dead / k_aux, 1), and the terms are summed.

SAELens sums squared errors over dimensions and sums its Matryoshka levels; our loss takes the
mean over both (`MatryoshkaSae.reconstruction_loss`). So that a weight of 1 here is SAELens's
weight of 1 relative to the reconstruction, each term is divided by the input width and the
number of levels. With `rank_by_norm` the ranking and decoding follow SAELens's rescaled path
(pre-activations times decoder norms, decoded by unit rows); either way a selected latent adds
its pre-activation times its decoder row.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pivotal_sae.saes.matryoshka import MatryoshkaSae
from pivotal_sae.saes.topk import ToySaeOutput, scatter_dense

#: SAELens's default dead-feature window, in training steps.
DEAD_WINDOW = 1000
#: The architectures the loss applies to (those whose `prefixes` are Matryoshka levels).
MATRYOSHKA_ARCHITECTURES = ("matryoshka", "matryoshka-batchtopk")


class StepsSinceFired:
    """Training steps since each latent last fired; dead after more than `window`."""

    def __init__(self, d_sae: int, device: torch.device, window: int = DEAD_WINDOW) -> None:
        self.window = window
        self.since_E = torch.zeros(d_sae, dtype=torch.long, device=device)

    def dead(self) -> Tensor:
        return self.since_E > self.window

    @torch.no_grad()
    def update(self, fired_E: Tensor) -> None:
        self.since_E.add_(1).masked_fill_(fired_E, 0)

    def state_dict(self) -> dict[str, Tensor]:
        return {"since_E": self.since_E.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.since_E.copy_(state["since_E"])


def level_aux_loss(sae: MatryoshkaSae, x_BM: Tensor, out: ToySaeOutput, dead_E: Tensor) -> Tensor:
    """The per-level auxiliary loss of a batch, given which latents are dead (before this step)."""
    n_dead_E = dead_E.cumsum(0)
    k_aux = sae.d_in // 2
    if sae.rank_by_norm:
        norms_E = torch.linalg.vector_norm(sae.W_dec, dim=-1)
        hidden_BE = out.pre_acts_BE * norms_E
        rows_EM = sae.W_dec / norms_E[:, None]
    else:
        hidden_BE, rows_EM = out.pre_acts_BE, sae.W_dec
    acts_BE = scatter_dense(out.values_BK, out.indices_BK, sae.d_sae)
    total = x_BM.new_zeros(())
    start = 0
    for end in sae.prefixes:
        dead = int(n_dead_E[end - 1]) - (int(n_dead_E[start - 1]) if start else 0)
        if dead:
            k = min(k_aux, dead)
            residual_BM = (x_BM - sae.prefix_reconstruction(acts_BE, end)).detach()
            masked_BL = hidden_BE[:, start:end].masked_fill(~dead_E[start:end], -torch.inf)
            values_BK, indices_BK = masked_BL.topk(k, dim=-1, sorted=False)
            aux_BL = scatter_dense(values_BK, indices_BK, end - start)
            recon_BM = aux_BL @ rows_EM[start:end]
            total = total + min(dead / k_aux, 1.0) * F.mse_loss(recon_BM, residual_BM)
        start = end
    return total / len(sae.prefixes)
