"""TopK sparse autoencoder (Gao et al. 2024), as trained in the toy lab.

Weights use SAELens names and layouts (`W_enc` (M, E), `b_enc` (E), `W_dec` (E, M), `b_dec`
(M)) so a trained flat SAE saves as an ordinary SAELens TopK directory (see `toy_io`).

Two sets of rules live side by side, chosen by the constructor:
- `relu=False` with `init="linear"` is the original research code: `torch.nn.Linear` default
  initialisation, and the k largest pre-activations are kept as they are, negative ones included.
- `relu=True` with `init="tied"` is the usual modern recipe: ReLU on the kept values, decoder
  rows random unit vectors and the encoder initialised to the decoder's transpose, biases zero.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

Init = Literal["linear", "tied"]


class ToySaeOutput(NamedTuple):
    """What a toy SAE's forward pass returns; top-k values and indices travel together.

    Dense pre-activations are kept because the toy lab's widths are tens of latents and the
    auxiliary-k revival needs them; nothing here is meant for language-model widths.
    """

    recon_BM: Float[Tensor, "B M"]
    """Reconstruction of the input."""
    values_BK: Float[Tensor, "B K"]
    """Activations of the k selected (parent) latents of each row; 0 where ReLU silenced one."""
    indices_BK: Int[Tensor, "B K"]
    """Which latents were selected."""
    pre_acts_BE: Float[Tensor, "B E"]
    """Encoder pre-activations of every (parent) latent."""
    child_values_BK: Float[Tensor, "B K"] | None = None
    """Hierarchical only: activation of the winning child under each selected parent."""
    child_slots_BK: Int[Tensor, "B K"] | None = None
    """Hierarchical only: which of the parent's children won (0..n_children-1)."""
    child_pre_acts_BH: Float[Tensor, "B H"] | None = None
    """Hierarchical only: pre-activations of every child latent (parent-major)."""


def linear_uniform_(tensor: Tensor, fan_in: int, generator: torch.Generator) -> Tensor:
    """`torch.nn.Linear`'s default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases."""
    bound = 1 / math.sqrt(fan_in)
    with torch.no_grad():
        return tensor.uniform_(-bound, bound, generator=generator)


def random_unit_rows(n_rows: int, dim: int, generator: torch.Generator) -> Tensor:
    rows = torch.randn(n_rows, dim, generator=generator)
    return rows / rows.norm(dim=-1, keepdim=True)


def scatter_dense(
    values_BK: Float[Tensor, "B K"], indices_BK: Int[Tensor, "B K"], width: int
) -> Float[Tensor, "B D"]:
    dense = values_BK.new_zeros(values_BK.shape[0], width)
    return dense.scatter(1, indices_BK, values_BK)


def fired_latents(
    values_BK: Float[Tensor, "B K"], indices_BK: Int[Tensor, "B K"], width: int
) -> torch.Tensor:
    """Bool (width,): which latents were non-zero on at least one row."""
    counts = torch.zeros(width, device=values_BK.device)
    counts.index_add_(0, indices_BK.flatten(), (values_BK != 0).flatten().float())
    return counts > 0


class TopKSae(nn.Module):
    """Linear encoder with bias, keep the k largest pre-activations per row, linear decoder."""

    architecture = "topk"
    selection_bias_E: Tensor
    #: Constructor options of this architecture beyond the common ones (`toy_io.build_toy_sae`).
    own_options: tuple[str, ...] = ()

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        k: int,
        *,
        relu: bool = True,
        init: Init = "tied",
        balance: bool = False,
        generator: torch.Generator | None = None,
        rank_by_norm: bool = False,
        decoder_init_norm: float = 1.0,
    ) -> None:
        super().__init__()
        self.d_in, self.d_sae, self.k, self.relu, self.balance = d_in, d_sae, k, relu, balance
        # Rank latents by pre-activation times decoder row norm (the size of each latent's
        # contribution, as SAELens's `rescale_acts_by_decoder_norm`); values stay raw.
        self.rank_by_norm = rank_by_norm
        self.decoder_init_norm = decoder_init_norm
        # Added to pre-activations only to choose the top k (load balancing); values stay raw.
        self.register_buffer("selection_bias_E", torch.zeros(d_sae))
        generator = generator or torch.Generator().manual_seed(0)
        self.W_enc = nn.Parameter(torch.empty(d_in, d_sae))
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.W_dec = nn.Parameter(torch.empty(d_sae, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        if init == "linear":
            linear_uniform_(self.W_enc, d_in, generator)
            linear_uniform_(self.b_enc, d_in, generator)
            linear_uniform_(self.W_dec, d_sae, generator)
            linear_uniform_(self.b_dec, d_sae, generator)
        else:
            with torch.no_grad():
                self.W_dec.copy_(random_unit_rows(d_sae, d_in, generator) * decoder_init_norm)
                self.W_enc.copy_(self.W_dec.T)

    def selection_keys(self, pre_acts_BE: Float[Tensor, "B E"]) -> Tensor:
        """What the selection ranks: the pre-activations, or with `rank_by_norm` the pre-
        activations times decoder row norms (the same sign, so a key is positive where its
        pre-activation is). Only indices come from keys, so they carry no gradient."""
        if not self.rank_by_norm:
            return pre_acts_BE
        with torch.no_grad():
            return pre_acts_BE * torch.linalg.vector_norm(self.W_dec, dim=-1)

    def select(self, pre_acts_BE: Float[Tensor, "B E"]) -> tuple[Tensor, Tensor]:
        keys_BE = self.selection_keys(pre_acts_BE)
        if self.balance:
            keys_BE = keys_BE + self.selection_bias_E
        top_keys_BK, indices_BK = keys_BE.topk(self.k, dim=-1)
        values_BK = top_keys_BK if keys_BE is pre_acts_BE else pre_acts_BE.gather(1, indices_BK)
        return (values_BK.relu() if self.relu else values_BK), indices_BK

    @torch.no_grad()
    def update_balance_(self, fires_E: Tensor, rows: int, rate: float) -> None:
        """Nudge selection biases towards equal firing rates (k/E per latent); `fires_E` counts
        the rows each (parent or flat) latent fired on, out of `rows`."""
        target = rows * self.k / self.d_sae
        self.selection_bias_E.add_(torch.sign(target - fires_E), alpha=rate)

    def forward(self, x_BM: Float[Tensor, "B M"]) -> ToySaeOutput:
        pre_acts_BE = torch.addmm(self.b_enc, x_BM, self.W_enc)
        values_BK, indices_BK = self.select(pre_acts_BE)
        acts_BE = scatter_dense(values_BK, indices_BK, self.d_sae)
        recon_BM = torch.addmm(self.b_dec, acts_BE, self.W_dec)
        return ToySaeOutput(recon_BM, values_BK, indices_BK, pre_acts_BE)

    def reconstruction_loss(self, x_BM: Tensor, out: ToySaeOutput) -> Tensor:
        """The loss the SAE trains on (mean squared error over rows and dimensions)."""
        return F.mse_loss(out.recon_BM, x_BM)

    def decoder_rows(self) -> dict[str, Tensor]:
        """Decoder matrices whose rows are latent directions, by latent kind."""
        return {"latent": self.W_dec}

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        for rows in self.decoder_rows().values():
            rows.div_(torch.linalg.vector_norm(rows, dim=-1, keepdim=True).clamp_min_(1e-8))

    def dead_latent_candidates(self, out: ToySaeOutput) -> dict[str, Tensor]:
        """Pre-activations per latent kind that the auxiliary-k loss may revive, -inf if barred."""
        return {"latent": out.pre_acts_BE}

    def revival_targets(self, x_BM: Tensor, out: ToySaeOutput) -> dict[str, Tensor]:
        """Per latent kind, the residual that revived latents of that kind should explain."""
        return {"latent": x_BM - out.recon_BM}

    def fired(self, out: ToySaeOutput) -> dict[str, Tensor]:
        """Bool per latent kind: fired on at least one row of this batch."""
        return {"latent": fired_latents(out.values_BK, out.indices_BK, self.d_sae)}

    def firing_counts(self, out: ToySaeOutput) -> dict[str, tuple[Tensor, Tensor]]:
        """Per latent kind: rows where each latent fired, and rows where it could have."""
        fires_E = torch.zeros(self.d_sae, device=out.values_BK.device).index_add_(
            0, out.indices_BK.flatten(), (out.values_BK != 0).flatten().float()
        )
        return {"latent": (fires_E, torch.full_like(fires_E, out.values_BK.shape[0]))}

    def fair_shares(self) -> dict[str, float]:
        """Per latent kind: the firing rate each latent would have if all fired equally often."""
        return {"latent": self.k / self.d_sae}

    def config_dict(self) -> dict[str, object]:
        return {
            "architecture": self.architecture,
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            "k": self.k,
            "relu": self.relu,
            "balance": self.balance,
            **({"rank_by_norm": True} if self.rank_by_norm else {}),
            **(
                {"decoder_init_norm": self.decoder_init_norm} if self.decoder_init_norm != 1 else {}
            ),
        }
