"""The toy lab's hierarchical SAE on language-model activations: training, saving, inference.

SAELens has no class for it, so the directory is SAELens-shaped (`cfg.json` +
`sae_weights.safetensors`, the usual fields and metadata) with `architecture: "hierarchical"`,
the extra fields `k`, `n_children`, `relu`, and the extra tensors `W_enc_child` (M, H),
`b_enc_child` (H), `W_dec_child` (H, M), `child_ratio_H` (H); see docs/models.md. The same
directory loads in the toy lab (`toy_io.load_toy_sae`) and here as `HierarchicalLmSae`, whose
latents are the E parents followed by the H = E·n_children children (parent-major), so every
consumer of `Sae` (co-occurrence, ablation) works on it unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from pivotal_sae.errors import UserError
from pivotal_sae.saes.hierarchical import winning_children
from pivotal_sae.saes.sae import Sae, SaeInfo, SparseActs, register_architecture, sae_cfg_dict

_TENSORS = ("W_enc", "b_enc", "W_dec", "b_dec", "W_enc_child", "b_enc_child", "W_dec_child",
            "child_ratio_H")  # fmt: skip


@register_architecture("hierarchical")
class HierarchicalLmSae(Sae):
    """Inference view: encode to E parent + H child activations; decode their sum."""

    child_ratio_H: torch.Tensor

    def __init__(self, info: SaeInfo, n_children: int, relu: bool, **t: torch.Tensor) -> None:
        nn.Module.__init__(self)
        self.info, self.n_children, self.relu = info, n_children, relu
        self.n_parents = int(t["W_enc"].shape[1])
        self.W_enc = nn.Parameter(t["W_enc"], requires_grad=False)
        self.b_enc = nn.Parameter(t["b_enc"], requires_grad=False)
        self.W_enc_child = nn.Parameter(t["W_enc_child"], requires_grad=False)
        self.b_enc_child = nn.Parameter(t["b_enc_child"], requires_grad=False)
        # Parents then children, so `W_dec[i]` is latent i's direction whatever its kind.
        self.W_dec = nn.Parameter(torch.cat([t["W_dec"], t["W_dec_child"]]), requires_grad=False)
        self.b_dec = nn.Parameter(t["b_dec"], requires_grad=False)
        self.register_buffer("child_ratio_H", t["child_ratio_H"])
        self.threshold = None

    def encode_sparse(self, x_NM: torch.Tensor) -> SparseActs:
        """The k parents and their k winning children: 2k values with their latent indices."""
        x = x_NM.to(self.dtype)
        values, indices = torch.topk(x @ self.W_enc + self.b_enc, self.info.k or 1, dim=-1)
        if self.relu:
            values = values.relu()
        child_pre = x @ self.W_enc_child + self.b_enc_child
        child_values, slots = winning_children(
            child_pre, values, indices, self.n_children, self.relu
        )
        child_indices = self.n_parents + indices * self.n_children + slots
        return SparseActs(
            torch.cat([values, child_values], dim=-1), torch.cat([indices, child_indices], dim=-1)
        )

    def encode(self, x_NM: torch.Tensor) -> torch.Tensor:
        sparse = self.encode_sparse(x_NM)
        acts = sparse.values_NK.new_zeros(*x_NM.shape[:-1], self.d_sae)
        return acts.scatter_(-1, sparse.indices_NK, sparse.values_NK)

    def decode(self, acts_NE: torch.Tensor) -> torch.Tensor:
        return acts_NE @ self.W_dec + self.b_dec

    def pre_acts(self, x_NM: torch.Tensor) -> torch.Tensor:
        return x_NM.to(self.dtype) @ self.W_enc + self.b_enc

    @classmethod
    def from_saved(
        cls, cfg: dict[str, Any], state: Mapping[str, torch.Tensor], option: str
    ) -> HierarchicalLmSae:
        missing = [name for name in _TENSORS if name not in state]
        if missing:
            raise UserError(f"{option}: hierarchical SAE lacks tensors {', '.join(missing)}")
        metadata = dict(cfg.get("metadata") or {})
        n_children = int(cfg.get("n_children", 2))
        info = SaeInfo(
            architecture="hierarchical",
            d_in=int(cfg["d_in"]),
            d_sae=int(cfg["d_sae"]) * (1 + n_children),
            hook_name=str(metadata.get("hook_name") or ""),
            k=int(cfg["k"]),
            apply_b_dec_to_input=False,
            model_name=metadata.get("model_name"),
            neuronpedia_id=metadata.get("neuronpedia_id"),
            hf_hook_name=metadata.get("hf_hook_name"),
            metadata=metadata,
        )
        tensors = {name: state[name] for name in _TENSORS}
        return cls(info, n_children, bool(cfg.get("relu", True)), **tensors)

    def state_to_save(self) -> dict[str, torch.Tensor]:
        return {
            "W_enc": self.W_enc.detach(),
            "b_enc": self.b_enc.detach(),
            "W_dec": self.W_dec[: self.n_parents].detach(),
            "b_dec": self.b_dec.detach(),
            "W_enc_child": self.W_enc_child.detach(),
            "b_enc_child": self.b_enc_child.detach(),
            "W_dec_child": self.W_dec[self.n_parents :].detach(),
            "child_ratio_H": self.child_ratio_H,
        }

    def cfg_to_save(self) -> dict[str, Any]:
        cfg = sae_cfg_dict(self)
        cfg.update(d_sae=self.n_parents, k=self.info.k, n_children=self.n_children, relu=self.relu)
        return cfg
