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

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pivotal_sae.errors import UserError
from pivotal_sae.saes.sae import Sae, SaeInfo

_TENSORS = ("W_enc", "b_enc", "W_dec", "b_dec", "W_enc_child", "b_enc_child", "W_dec_child",
            "child_ratio_H")  # fmt: skip


class HierarchicalLmSae(Sae):
    """Inference view: encode to E parent + H child activations; decode their sum."""

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

    def encode(self, x_NM: torch.Tensor) -> torch.Tensor:
        x = x_NM.to(self.dtype)
        e, n = self.n_parents, self.n_children
        values, indices = torch.topk(x @ self.W_enc + self.b_enc, self.info.k or 1, dim=-1)
        if self.relu:
            values = values.relu()
        child_pre = (x @ self.W_enc_child + self.b_enc_child).unflatten(-1, (e, n))
        under_parent = child_pre.gather(-2, indices[..., None].expand(*indices.shape, n))
        child_values, slots = under_parent.max(dim=-1)
        if self.relu:
            child_values = child_values.relu()
        child_values = torch.where(values != 0, child_values, 0.0)
        acts = x.new_zeros(*x.shape[:-1], e * (1 + n))
        acts.scatter_(-1, indices, values)
        return acts.scatter_(-1, e + indices * n + slots, child_values)

    def decode(self, acts_NE: torch.Tensor) -> torch.Tensor:
        return acts_NE @ self.W_dec + self.b_dec

    def pre_acts(self, x_NM: torch.Tensor) -> torch.Tensor:
        return x_NM.to(self.dtype) @ self.W_enc + self.b_enc


def read_hierarchical_dir(
    path: Path, cfg: dict[str, Any], *, device: Any = "cpu", dtype: torch.dtype | None = None
) -> HierarchicalLmSae:
    from safetensors.torch import load_file

    try:
        state = load_file(str(path / "sae_weights.safetensors"))
    except Exception as exc:  # safetensors raises its own types for damaged files
        raise UserError(f"--sae-path {path}: cannot read sae_weights.safetensors ({exc})") from None
    missing = [name for name in _TENSORS if name not in state]
    if missing:
        raise UserError(f"--sae-path {path}: hierarchical SAE lacks tensors {', '.join(missing)}")
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
        path=str(path),
        metadata=metadata,
    )
    sae = HierarchicalLmSae(info, n_children, bool(cfg.get("relu", True)), **state)
    return sae.to(device=device, dtype=dtype or sae.dtype)
