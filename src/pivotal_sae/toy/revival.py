"""Auxiliary-k revival of dead latents (Gao et al. 2024, section A.2), for every latent kind.

The auxiliary loss asks the `aux_k` dead latents with the largest pre-activations on each row to
reconstruct what the live ones left over, which gives dead latents gradient again. Two changes
fit it to the toy lab:
- "dead" is a firing rate (moving average over about 100 steps) below `dead_share` of the fair
  rate (k/E for parents and flat latents; 1/n_children of its parent's rows for a child), so a
  child that fires on a sliver of its parent's rows counts too; Gao et al.'s "no firing for T
  tokens" misses those;
- the ReLU on revived activations passes gradient straight through, so a dead latent whose
  pre-activations are all negative still learns to rise where its decoder row would help (with
  a plain ReLU it would get no gradient, and in this toy most dead latents are such).
For the hierarchical SAE a dead child may only be used where its parent fires, and dead parents
explain what the parents alone leave over when they are trained to reconstruct alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pivotal_sae.saes.topk import TopKSae, ToySaeOutput

RATE_EMA_COEFF = 0.01


class DeadLatentTracker:
    """Moving-average firing rate of each latent, per kind; part of the state saved for resume."""

    def __init__(self, sae: TopKSae, dead_share: float) -> None:
        self.fair = sae.fair_shares()
        self.dead_share = dead_share
        self.rates = {
            kind: torch.full((rows.shape[0],), self.fair[kind], device=rows.device)
            for kind, rows in sae.decoder_rows().items()
        }

    @torch.no_grad()
    def update(self, counts: dict[str, tuple[Tensor, Tensor]]) -> None:
        for kind, (fires_D, chances_D) in counts.items():
            # A latent with no chance to fire (a child whose parent was silent) keeps its rate.
            weight_D = (chances_D > 0) * RATE_EMA_COEFF
            self.rates[kind].lerp_(fires_D / chances_D.clamp_min(1), weight_D)

    def dead(self) -> dict[str, Tensor]:
        return {kind: rate < self.dead_share * self.fair[kind] for kind, rate in self.rates.items()}

    def state_dict(self) -> dict[str, Tensor]:
        return {kind: rate.clone() for kind, rate in self.rates.items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for kind, rate in state.items():
            self.rates[kind].copy_(rate)


def aux_k_loss(
    sae: TopKSae, x_BM: Tensor, out: ToySaeOutput, dead: dict[str, Tensor], aux_k: int
) -> Tensor:
    """Per latent kind, normalised MSE between its residual and the dead latents' reconstruction."""
    candidates = sae.dead_latent_candidates(out)
    targets = sae.revival_targets(x_BM, out)
    rows = sae.decoder_rows()
    loss = x_BM.new_zeros(())
    for kind, pre_acts_BD in candidates.items():
        dead_D = dead[kind]
        n_dead = int(dead_D.sum())
        if n_dead == 0:
            continue
        residual_BM = targets[kind].detach()
        masked_BD = torch.where(dead_D, pre_acts_BD, float("-inf"))
        values_BK, indices_BK = masked_BD.topk(min(aux_k, n_dead), dim=-1)
        # -inf marks latents barred on this row (a child whose parent is silent): no value.
        finite_BK = torch.isfinite(values_BK)
        values_BK = torch.where(finite_BK, values_BK, 0.0)
        rows_BKM = rows[kind][indices_BK]
        scale = residual_BM.pow(2).mean().clamp_min(1e-12)
        # Decoder rows learn from positive (softplus) activations, which exist even while the
        # pre-activations are negative ...
        soft_BK = torch.where(finite_BK, F.softplus(values_BK), 0.0).detach()
        recon_BM = torch.einsum("bk,bkm->bm", soft_BK, rows_BKM)
        loss = loss + (recon_BM - residual_BM).pow(2).mean() / scale
        # ... and encoders learn through a straight-through ReLU, so pre-activations rise above
        # zero exactly where their decoder row helps (softplus alone settles them below zero).
        ste_BK = values_BK + (values_BK.relu() - values_BK).detach()
        recon_BM = torch.einsum("bk,bkm->bm", ste_BK, rows_BKM.detach())
        loss = loss + (recon_BM - residual_BM).pow(2).mean() / scale
    return loss


@torch.no_grad()
def resample_dead_children_(
    sae: TopKSae,
    x_BM: Tensor,
    out: ToySaeOutput,
    tracker: DeadLatentTracker,
    optimizer: torch.optim.Optimizer,
) -> int:
    """Point each dead child at what its parent's silent rows leave unexplained (resampling, after
    Bricken et al. 2023); returns how many were resampled.

    A dead child's new decoder row is the mean residual over this batch's rows where its parent
    fires but no child of that parent does; its encoder is that row scaled to the mean norm of
    the live child encoders, its bias 0, and its optimizer moments are cleared.
    """
    from pivotal_sae.saes.hierarchical import HierarchicalSae

    if not isinstance(sae, HierarchicalSae) or out.child_values_BK is None:
        return 0
    dead_H = tracker.dead()["child"]
    if not bool(dead_H.any()):
        return 0
    n = sae.n_children
    silent_BK = (out.values_BK != 0) & (out.child_values_BK == 0)
    residual_BM = x_BM - out.recon_BM
    sums_EM = torch.zeros(sae.d_sae, x_BM.shape[1], device=x_BM.device)
    sums_EM.index_add_(
        0, out.indices_BK.flatten(), (residual_BM[:, None, :] * silent_BK[..., None]).flatten(0, 1)
    )
    counts_E = torch.zeros(sae.d_sae, device=x_BM.device).index_add_(
        0, out.indices_BK.flatten(), silent_BK.flatten().float()
    )
    targets_H = dead_H & (counts_E > 0).repeat_interleave(n)
    if not bool(targets_H.any()):
        return 0
    directions_HM = (sums_EM / counts_E.clamp_min(1)[:, None]).repeat_interleave(n, dim=0)
    directions_HM = directions_HM / directions_HM.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    live_norm = sae.W_enc_child[:, ~dead_H].norm(dim=0).mean() if bool((~dead_H).any()) else 1.0
    sae.W_dec_child[targets_H] = directions_HM[targets_H]
    sae.W_enc_child[:, targets_H] = directions_HM[targets_H].T * live_norm
    sae.b_enc_child[targets_H] = 0.0
    for param, index in (
        (sae.W_dec_child, (targets_H,)),
        (sae.W_enc_child, (slice(None), targets_H)),
        (sae.b_enc_child, (targets_H,)),
    ):
        for moment in optimizer.state.get(param, {}).values():
            if isinstance(moment, Tensor) and moment.shape == param.shape:
                moment[index] = 0.0
    tracker.rates["child"][targets_H] = tracker.fair["child"]
    return int(targets_H.sum())
