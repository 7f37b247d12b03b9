"""Hierarchical TopK SAE: TopK parent latents, each with `n_children` winner-take-all children.

SPEC §1: a child can be non-zero only where its parent is among the top k; among a parent's
children only the one with the largest pre-activation survives. The reconstruction is the parent
decoder output plus the surviving children's decoder outputs. Child latents are numbered
parent-major (`h = e * N + n`), so `W_dec_child` (H, M) viewed as (E, N, M) groups siblings.

During training an exponential moving average (coefficient 0.01, starting at 1) of each child's
activation divided by its parent's, over the rows where both fire, gives the child's effective
direction `d_e + r_en * d_en` that the metrics score.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from pivotal_sae.saes.topk import (
    Init,
    TopKSae,
    ToySaeOutput,
    fired_latents,
    linear_uniform_,
    random_unit_rows,
    scatter_dense,
)

RATIO_EMA_COEFF = 0.01


def centered_sibling_rows(
    d_sae: int, n_children: int, d_in: int, generator: torch.Generator
) -> Float[Tensor, "H M"]:
    """Random unit rows whose siblings sum to zero (two children: opposite directions).

    With tied encoders and zero biases, some sibling then always has a non-negative
    pre-activation, so every parent row starts with a firing child: both children learn from the
    first step, splitting their parent's rows like 2-means, instead of one child winning rows
    it cannot use while the other, silenced by ReLU, never gets a gradient.
    """
    rows_ENM = random_unit_rows(d_sae * n_children, d_in, generator).view(d_sae, n_children, -1)
    rows_ENM = rows_ENM - rows_ENM.mean(dim=1, keepdim=True)
    return (rows_ENM / rows_ENM.norm(dim=-1, keepdim=True).clamp_min(1e-8)).flatten(0, 1)


def winning_children(
    child_pre_acts_XH: Tensor, values_XK: Tensor, indices_XK: Tensor, n_children: int, relu: bool
) -> tuple[Tensor, Tensor]:
    """SPEC §1's child rule, for any leading dimensions X: under each kept parent only the
    sibling with the largest pre-activation survives, and only where the parent fires.

    Returns the winners' values and their slots among the siblings (child latent
    `parent * n_children + slot`). The toy SAE and the language-model view both encode with it.
    """
    # `view`, not `unflatten` (a Python wrapper that costs more than the op at toy sizes).
    under_parent_XKN = child_pre_acts_XH.view(*child_pre_acts_XH.shape[:-1], -1, n_children).gather(
        -2, indices_XK[..., None].expand(*indices_XK.shape, n_children)
    )
    child_values_XK, child_slots_XK = under_parent_XKN.max(dim=-1)
    if relu:
        child_values_XK = child_values_XK.relu()
    # A child fires only where its parent does (a ReLU'd parent of 0 does not fire).
    return torch.where(values_XK != 0, child_values_XK, 0.0), child_slots_XK


class HierarchicalSae(TopKSae):
    architecture = "hierarchical"
    child_ratio_H: Tensor
    #: Constructor options of this architecture beyond the common ones (`toy_io.build_toy_sae`).
    own_options: tuple[str, ...] = ("n_children", "parent_recon_coeff")

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        k: int,
        n_children: int = 2,
        *,
        relu: bool = True,
        init: Init = "tied",
        balance: bool = False,
        parent_recon_coeff: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        generator = generator or torch.Generator().manual_seed(0)
        super().__init__(d_in, d_sae, k, relu=relu, init=init, balance=balance, generator=generator)
        self.n_children = n_children
        self.parent_recon_coeff = parent_recon_coeff
        d_child = d_sae * n_children
        self.W_enc_child = nn.Parameter(torch.empty(d_in, d_child))
        self.b_enc_child = nn.Parameter(torch.zeros(d_child))
        self.W_dec_child = nn.Parameter(torch.empty(d_child, d_in))
        self.register_buffer("child_ratio_H", torch.ones(d_child))
        if init == "linear":
            # The original built one nn.Linear pair per child slot, so fans are per slot.
            linear_uniform_(self.W_enc_child, d_in, generator)
            linear_uniform_(self.b_enc_child, d_in, generator)
            linear_uniform_(self.W_dec_child, d_sae, generator)
        else:
            with torch.no_grad():
                self.W_dec_child.copy_(centered_sibling_rows(d_sae, n_children, d_in, generator))
                self.W_enc_child.copy_(self.W_dec_child.T)

    def forward(self, x_BM: Float[Tensor, "B M"]) -> ToySaeOutput:
        return self._forward_parts(x_BM)[0]

    def _forward_parts(self, x_BM: Tensor) -> tuple[ToySaeOutput, Tensor, Tensor, Tensor]:
        """The output, plus the dense parent and child activations and the parents-only
        reconstruction, which the hand-written gradients reuse rather than recompute."""
        pre_acts_BE = torch.addmm(self.b_enc, x_BM, self.W_enc)
        values_BK, indices_BK = self.select(pre_acts_BE)
        n = self.n_children
        child_pre_acts_BH = torch.addmm(self.b_enc_child, x_BM, self.W_enc_child)
        child_values_BK, child_slots_BK = winning_children(
            child_pre_acts_BH, values_BK, indices_BK, n, self.relu
        )
        child_acts_BH = scatter_dense(
            child_values_BK, indices_BK * n + child_slots_BK, self.d_sae * n
        )
        parent_acts_BE = scatter_dense(values_BK, indices_BK, self.d_sae)
        parent_recon_BM = torch.addmm(self.b_dec, parent_acts_BE, self.W_dec)
        recon_BM = torch.addmm(parent_recon_BM, child_acts_BH, self.W_dec_child)
        out = ToySaeOutput(
            recon_BM,
            values_BK,
            indices_BK,
            pre_acts_BE,
            child_values_BK,
            child_slots_BK,
            child_pre_acts_BH,
        )
        return out, parent_acts_BE, child_acts_BH, parent_recon_BM

    def reconstruction_loss(self, x_BM: Tensor, out: ToySaeOutput) -> Tensor:
        """MSE of the full reconstruction, plus (if `parent_recon_coeff`) that of the parents alone.

        The second term is the Matryoshka idea applied to the hierarchy: parents must reconstruct
        well without their children, so a parent latent cannot settle between two ground-truth
        parents and leave its children to tell them apart.
        """
        loss = F.mse_loss(out.recon_BM, x_BM)
        if self.parent_recon_coeff:
            parent_recon_BM = self.parent_reconstruction(out)
            loss = loss + self.parent_recon_coeff * F.mse_loss(parent_recon_BM, x_BM)
        return loss

    @torch.no_grad()
    def reconstruction_loss_and_grads(
        self, x_BM: Float[Tensor, "B M"]
    ) -> tuple[Tensor, ToySaeOutput, dict[str, Tensor]]:
        """`reconstruction_loss(x, self(x))`, the forward's output, and the loss's gradient for
        each parameter by name, written out by hand with no autograd graph.

        At the toy lab's sizes a step costs PyTorch's per-call bookkeeping rather than
        arithmetic, and autograd's graph was about half of it. Tested equal to autograd in
        tests/saes/test_toy_saes.py.
        """
        out, parent_acts_BE, child_acts_BH, parent_recon_BM = self._forward_parts(x_BM)
        assert out.child_values_BK is not None and out.child_slots_BK is not None
        scale = 2.0 / x_BM.numel()  # d(mean of squares)/d(error) = 2 error / numel
        error_BM = out.recon_BM - x_BM
        loss = error_BM.pow(2).mean()
        g_recon_BM = error_BM * scale
        g_parent_recon_BM = g_recon_BM  # the parents' part of the reconstruction
        if self.parent_recon_coeff:
            parent_error_BM = parent_recon_BM - x_BM
            loss = loss + self.parent_recon_coeff * parent_error_BM.pow(2).mean()
            g_parent_recon_BM = g_recon_BM + parent_error_BM * (scale * self.parent_recon_coeff)
        # Where a value's gradient reaches its pre-activation: ReLU'd values only when > 0, raw
        # top-k values always; a child only where it is non-zero (its parent fired).
        child_index_BK = out.indices_BK * self.n_children + out.child_slots_BK
        g_values_BK = (g_parent_recon_BM @ self.W_dec.T).gather(1, out.indices_BK)
        if self.relu:
            g_values_BK = g_values_BK * (out.values_BK > 0)
        child_pass_BK = out.child_values_BK > 0 if self.relu else out.values_BK != 0
        g_child_BK = (g_recon_BM @ self.W_dec_child.T).gather(1, child_index_BK) * child_pass_BK
        g_pre_BE = scatter_dense(g_values_BK, out.indices_BK, self.d_sae)
        g_child_pre_BH = scatter_dense(g_child_BK, child_index_BK, self.d_sae * self.n_children)
        grads = {
            "W_enc": x_BM.T @ g_pre_BE,
            "b_enc": g_pre_BE.sum(0),
            "W_dec": parent_acts_BE.T @ g_parent_recon_BM,
            "b_dec": g_parent_recon_BM.sum(0),
            "W_enc_child": x_BM.T @ g_child_pre_BH,
            "b_enc_child": g_child_pre_BH.sum(0),
            "W_dec_child": child_acts_BH.T @ g_recon_BM,
        }
        return loss, out, grads

    def alignment_loss(self, out: ToySaeOutput) -> Tensor:
        """SPEC's auxiliary loss: minus cos(a_p d_p, a_p d_p + a_c d_c) per active parent, / B.

        Activations are detached (as in the original), so only decoder directions move.
        """
        assert out.child_values_BK is not None and out.child_slots_BK is not None
        parent_BKM = out.values_BK.detach()[..., None] * self.W_dec[out.indices_BK]
        child_index_BK = out.indices_BK * self.n_children + out.child_slots_BK
        child_BKM = out.child_values_BK.detach()[..., None] * self.W_dec_child[child_index_BK]
        cos_BK = F.cosine_similarity(parent_BKM, parent_BKM + child_BKM, dim=-1)
        active_BK = out.values_BK.detach() > 0
        return -(cos_BK * active_BK).sum() / out.values_BK.shape[0]

    @torch.no_grad()
    def update_child_ratios_(self, out: ToySaeOutput) -> Tensor:
        """EMA of child/parent activation per child latent, over rows where both fire; returns
        how many rows each child fired on (a by-product `firing_counts` can reuse)."""
        assert out.child_values_BK is not None and out.child_slots_BK is not None
        # A child fires only where its parent does, so "both fire" is "the child fires".
        fires_BK = out.child_values_BK != 0
        ratio_BK = torch.where(fires_BK, out.child_values_BK / out.values_BK, 0.0)
        child_index = (out.indices_BK * self.n_children + out.child_slots_BK).flatten()
        # Sums and counts in one scatter: at these sizes each op costs more than its arithmetic.
        sums_counts_H2 = self.child_ratio_H.new_zeros(self.child_ratio_H.shape[0], 2).index_add_(
            0, child_index, torch.stack([ratio_BK, fires_BK.float()], dim=-1).flatten(0, 1)
        )
        sums_H, counts_H = sums_counts_H2.unbind(1)
        # Children that did not fire keep their ratio (a weight of 0).
        weight_H = (counts_H > 0) * RATIO_EMA_COEFF
        self.child_ratio_H.lerp_(sums_H / counts_H.clamp_min(1), weight_H)
        return counts_H

    def child_directions_ENM(self, adjusted: bool = True) -> Float[Tensor, "E N M"]:
        """Effective child directions `d_e + r_en d_en` (r = 1 when not `adjusted`)."""
        child_HM: Tensor = self.W_dec_child
        if adjusted:
            child_HM = child_HM * self.child_ratio_H[:, None]
        return self.W_dec[:, None, :] + child_HM.view(self.d_sae, self.n_children, -1)

    def decoder_rows(self) -> dict[str, Tensor]:
        return {"parent": self.W_dec, "child": self.W_dec_child}

    def dead_latent_candidates(self, out: ToySaeOutput) -> dict[str, Tensor]:
        assert out.child_pre_acts_BH is not None
        batch = out.pre_acts_BE.shape[0]
        # A child may only be revived on rows where its parent fires, as it may only fire there.
        parent_fires_BE = scatter_dense((out.values_BK != 0).float(), out.indices_BK, self.d_sae)
        allowed_BH = parent_fires_BE.bool().repeat_interleave(self.n_children, dim=1)
        child_BH = torch.where(allowed_BH, out.child_pre_acts_BH, float("-inf"))
        return {"parent": out.pre_acts_BE, "child": child_BH.view(batch, -1)}

    def revival_targets(self, x_BM: Tensor, out: ToySaeOutput) -> dict[str, Tensor]:
        """Dead parents explain what the parents alone leave over when they are trained to
        reconstruct alone; otherwise, like dead children, what the whole SAE leaves over."""
        residual_BM = x_BM - out.recon_BM
        if not self.parent_recon_coeff:
            return {"parent": residual_BM, "child": residual_BM}
        return {"parent": x_BM - self.parent_reconstruction(out), "child": residual_BM}

    def parent_reconstruction(self, out: ToySaeOutput) -> Tensor:
        parent_acts_BE = scatter_dense(out.values_BK, out.indices_BK, self.d_sae)
        return torch.addmm(self.b_dec, parent_acts_BE, self.W_dec)

    def fired(self, out: ToySaeOutput) -> dict[str, Tensor]:
        assert out.child_values_BK is not None and out.child_slots_BK is not None
        child_index_BK = out.indices_BK * self.n_children + out.child_slots_BK
        return {
            "parent": fired_latents(out.values_BK, out.indices_BK, self.d_sae),
            "child": fired_latents(
                out.child_values_BK, child_index_BK, self.d_sae * self.n_children
            ),
        }

    def firing_counts(
        self, out: ToySaeOutput, child_fires_H: Tensor | None = None
    ) -> dict[str, tuple[Tensor, Tensor]]:
        """As for flat SAEs; `child_fires_H`, if given, is what `update_child_ratios_` returned
        for this `out`, saving a scatter."""
        assert out.child_values_BK is not None and out.child_slots_BK is not None
        parent_fires_E, rows_E = super().firing_counts(out)["latent"]
        if child_fires_H is None:
            child_fires_H = torch.zeros_like(self.child_ratio_H).index_add_(
                0,
                (out.indices_BK * self.n_children + out.child_slots_BK).flatten(),
                (out.child_values_BK != 0).flatten().float(),
            )
        # A child can only fire on its parent's rows (repeated per child; `repeat_interleave`
        # costs four times this copy).
        chances_H = parent_fires_E[:, None].expand(-1, self.n_children).reshape(-1)
        return {"parent": (parent_fires_E, rows_E), "child": (child_fires_H, chances_H)}

    def fair_shares(self) -> dict[str, float]:
        return {"parent": self.k / self.d_sae, "child": 1 / self.n_children}

    def config_dict(self) -> dict[str, object]:
        return {
            **super().config_dict(),
            "n_children": self.n_children,
            "parent_recon_coeff": self.parent_recon_coeff,
        }

    @torch.no_grad()
    def set_to_ground_truth_(self, parents_AM: Tensor, perturbations_ANM: Tensor) -> None:
        """Parent encoder/decoder = parent directions, children = unit perturbations, biases 0."""
        units_HM = (perturbations_ANM / perturbations_ANM.norm(dim=-1, keepdim=True)).flatten(0, 1)
        for param, value in [
            (self.W_enc, parents_AM.T),
            (self.W_dec, parents_AM),
            (self.W_enc_child, units_HM.T),
            (self.W_dec_child, units_HM),
        ]:
            param.copy_(value)
        for bias in (self.b_enc, self.b_dec, self.b_enc_child):
            bias.zero_()
        self.child_ratio_H.fill_(1.0)
