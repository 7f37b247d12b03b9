"""An inference-only SAE with SAELens's weights and arithmetic, built without importing SAELens.

`Sae` holds `W_enc` (M, E), `b_enc` (E), `W_dec` (E, M), `b_dec` (M), and `threshold` (E) for
JumpReLU or `k` for TopK, and computes exactly what SAELens 6's `JumpReLUSAE`, `TopKSAE` and
`StandardSAE` compute (tests compare the two on saved random SAEs). Importing SAELens costs ~10 s
and it is absent on lean GPU machines, so it is only used, lazily, by `saes.loading` to fetch
pretrained releases and to read formats this class does not cover.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import torch
from torch import nn

from pivotal_sae.errors import UserError
from pivotal_sae.runs import parse_dtype

NATIVE_ARCHITECTURES = ("jumprelu", "topk", "standard")
CFG = "cfg.json"
WEIGHTS = "sae_weights.safetensors"
_NATIVE_KEYS = {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"}
_INFO_KEYS = ("model_name", "neuronpedia_id", "hf_hook_name")

#: Architecture name (`cfg.json`'s `architecture`) → the class that reads and computes it, as
#: SAELens registers its architectures. Names not here are read through SAELens.
ARCHITECTURES: dict[str, type[Sae]] = {}

SaeClass = TypeVar("SaeClass", bound="type[Sae]")


def register_architecture(*names: str) -> Callable[[SaeClass], SaeClass]:
    """Class decorator: `cfg.json` files with these architecture names load as this class."""

    def register(cls: SaeClass) -> SaeClass:
        for name in names:
            ARCHITECTURES[name] = cls
        return cls

    return register


@dataclass
class SaeInfo:
    """What an SAE is and where it came from (SAELens `cfg.json` fields plus provenance)."""

    architecture: str
    d_in: int
    d_sae: int
    hook_name: str
    k: int | None = None
    """TopK only: latents kept per token."""
    apply_b_dec_to_input: bool = True
    rescale_acts_by_decoder_norm: bool = False
    """TopK only: rank pre-activations scaled by decoder row norms (SAELens option)."""
    model_name: str | None = None
    neuronpedia_id: str | None = None
    hf_hook_name: str | None = None
    release: str | None = None
    sae_id: str | None = None
    path: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    """Every other metadata field of the SAELens config, kept for saving."""

    @property
    def label(self) -> str:
        if self.release:
            return f"{self.release}/{self.sae_id}"
        if self.path:
            return self.path
        return f"{self.architecture} SAE at {self.hook_name}"


class SparseActs(NamedTuple):
    """The latents that can fire on each token, as top-k values with their indices."""

    values_NK: torch.Tensor
    """Activations (non-negative; zero where a kept slot did not fire)."""
    indices_NK: torch.Tensor
    """Latent index of each value."""


class SaeOutput(NamedTuple):
    latent_acts: torch.Tensor
    """Dense latent activations `acts_...E` (non-negative; zero where a latent is off)."""
    reconstruction: torch.Tensor
    """Decoded activations `x_...M`."""


@register_architecture(*NATIVE_ARCHITECTURES)
class Sae(nn.Module):
    """Encode `x_...M` into dense non-negative `acts_...E`, decode back, as SAELens does.

    The interface every architecture offers: `encode` (dense), `encode_sparse` (top-k values and
    indices, where the architecture keeps a fixed number per token), `decode`, `from_saved`
    (read a directory's config and weights) and `save` (write one).
    """

    threshold: torch.Tensor | None

    def __init__(
        self,
        info: SaeInfo,
        W_enc: torch.Tensor,
        b_enc: torch.Tensor,
        W_dec: torch.Tensor,
        b_dec: torch.Tensor,
        threshold: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if info.architecture not in NATIVE_ARCHITECTURES:
            raise ValueError(f"Sae computes {NATIVE_ARCHITECTURES}, not {info.architecture!r}")
        if info.architecture == "jumprelu" and threshold is None:
            raise ValueError("a JumpReLU SAE needs thresholds")
        if info.architecture == "topk" and not info.k:
            raise ValueError("a TopK SAE needs k")
        self.info = info
        self.W_enc = nn.Parameter(W_enc, requires_grad=False)
        self.b_enc = nn.Parameter(b_enc, requires_grad=False)
        self.W_dec = nn.Parameter(W_dec, requires_grad=False)
        self.b_dec = nn.Parameter(b_dec, requires_grad=False)
        if threshold is not None:
            self.threshold = nn.Parameter(threshold, requires_grad=False)
        else:
            self.threshold = None

    # ------------------------------------------------------------------ metadata
    @property
    def hook_name(self) -> str:
        return self.info.hook_name

    @property
    def hf_hook_name(self) -> str | None:
        return self.info.hf_hook_name

    @property
    def d_in(self) -> int:
        return self.info.d_in

    @property
    def d_sae(self) -> int:
        return self.info.d_sae

    @property
    def architecture(self) -> str:
        return self.info.architecture

    @property
    def label(self) -> str:
        return self.info.label

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    # ------------------------------------------------------------------ arithmetic
    def pre_acts(self, x_NM: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations (`hidden_pre` in SAELens), `..., E`."""
        sae_in = x_NM.to(self.dtype)
        if self.info.apply_b_dec_to_input:
            sae_in = sae_in - self.b_dec
        hidden_pre = sae_in @ self.W_enc + self.b_enc
        if self.info.architecture == "topk" and self.info.rescale_acts_by_decoder_norm:
            hidden_pre = hidden_pre * self.W_dec.norm(dim=-1)
        return hidden_pre

    def encode(self, x_NM: torch.Tensor) -> torch.Tensor:
        hidden_pre = self.pre_acts(x_NM)
        if self.info.architecture == "topk":
            values, indices = torch.topk(hidden_pre, k=int(self.info.k or 0), dim=-1, sorted=False)
            return torch.zeros_like(hidden_pre).scatter_(-1, indices, values.relu())
        acts = hidden_pre.relu()
        if self.info.architecture == "jumprelu":
            assert self.threshold is not None
            acts = acts * (hidden_pre > self.threshold).to(acts.dtype)
        return acts

    def encode_sparse(self, x_NM: torch.Tensor) -> SparseActs | None:
        """TopK: the k kept latents of each token (values ReLU'd, as `encode` has them); other
        architectures fire a varying number per token and return None (use `encode`)."""
        if self.info.architecture != "topk":
            return None
        k = int(self.info.k or 0)
        values, indices = torch.topk(self.pre_acts(x_NM), k=k, dim=-1, sorted=False)
        return SparseActs(values.relu(), indices)

    def decode(self, acts_NE: torch.Tensor) -> torch.Tensor:
        if self.info.architecture == "topk" and self.info.rescale_acts_by_decoder_norm:
            acts_NE = acts_NE * (1 / self.W_dec.norm(dim=-1))
        return acts_NE @ self.W_dec + self.b_dec

    def forward(self, x_NM: torch.Tensor) -> SaeOutput:
        acts = self.encode(x_NM)
        return SaeOutput(acts, self.decode(acts))

    # ------------------------------------------------------------------ directories
    @classmethod
    def from_saved(
        cls, cfg: dict[str, Any], state: Mapping[str, torch.Tensor], option: str
    ) -> Sae | None:
        """The SAE of a directory's `cfg.json` and weights, or None where SAELens must read it
        (options this class does not compute)."""
        return sae_from_cfg(cfg, state, option)

    def state_to_save(self) -> dict[str, torch.Tensor]:
        return {name: p.detach() for name, p in self.named_parameters() if p is not None}

    def cfg_to_save(self) -> dict[str, Any]:
        return sae_cfg_dict(self)

    def save(self, directory: Path) -> Path:
        """Write `cfg.json` + `sae_weights.safetensors` (each atomically) into `directory`."""
        from pivotal_sae.runs import atomic_save_safetensors, atomic_write_json

        directory.mkdir(parents=True, exist_ok=True)
        atomic_save_safetensors(directory / WEIGHTS, self.state_to_save())
        atomic_write_json(directory / CFG, self.cfg_to_save())
        return directory

    # ------------------------------------------------------------------ construction
    @classmethod
    def random(
        cls,
        d_in: int,
        d_sae: int,
        *,
        architecture: str = "jumprelu",
        k: int | None = None,
        hook_name: str = "blocks.0.hook_resid_post",
        model_name: str | None = None,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> Sae:
        """Random unit decoder rows, encoder = decoder transposed, zero biases and thresholds.

        For JumpReLU, call `calibrate_thresholds_` on real activations to reach a target L0.
        """
        g = torch.Generator().manual_seed(seed)
        W_dec = torch.randn(d_sae, d_in, generator=g)
        W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True)
        info = SaeInfo(
            architecture=architecture,
            d_in=d_in,
            d_sae=d_sae,
            hook_name=hook_name,
            k=k if architecture == "topk" else None,
            apply_b_dec_to_input=architecture != "jumprelu",
            model_name=model_name,
        )
        threshold = torch.zeros(d_sae) if architecture == "jumprelu" else None
        sae = cls(
            info, W_dec.T.contiguous(), torch.zeros(d_sae), W_dec, torch.zeros(d_in), threshold
        )
        return sae.to(device=device, dtype=dtype)

    @torch.no_grad()
    def calibrate_thresholds_(self, acts_NM: torch.Tensor, target_l0: float) -> Sae:
        """Set each JumpReLU threshold so the latent fires on `target_l0 / d_sae` of `acts_NM`.

        Per-latent quantiles (not one global threshold) keep firing rates even when the
        activations are anisotropic, as real residual streams are.
        """
        if self.threshold is None:
            raise ValueError("only a JumpReLU SAE has thresholds to calibrate")
        n = acts_NM.shape[0]
        fires = min(max(round(n * target_l0 / self.d_sae), 1), n - 1)
        chunk = max(1, (1 << 26) // max(n, 1))
        for start in range(0, self.d_sae, chunk):
            stop = min(start + chunk, self.d_sae)
            sae_in = acts_NM.to(self.device, self.dtype)
            if self.info.apply_b_dec_to_input:
                sae_in = sae_in - self.b_dec
            pre_NE = (sae_in @ self.W_enc[:, start:stop] + self.b_enc[start:stop]).float()
            kth = torch.kthvalue(pre_NE, n - fires, dim=0).values
            self.threshold[start:stop] = kth.clamp_min(0).to(self.dtype)
        return self

    def replace_info(self, **changes: Any) -> Sae:
        self.info = dataclasses.replace(self.info, **changes)
        return self


# ---------------------------------------------------------------------- SAELens format
def _metadata(cfg: dict[str, Any]) -> dict[str, Any]:
    metadata = dict(cfg.get("metadata") or {})
    for key in ("hook_name", *_INFO_KEYS):  # SAELens < 6 kept these at the top level
        if key not in metadata and key in cfg:
            metadata[key] = cfg[key]
    if "hook_name" not in metadata and "hook_point" in cfg:
        metadata["hook_name"] = cfg["hook_point"]
    return metadata


def _is_v6(cfg: dict[str, Any]) -> bool:
    from packaging.version import InvalidVersion, Version

    version = cfg.get("sae_lens_version") or (cfg.get("metadata") or {}).get("sae_lens_version")
    try:
        return bool(version) and Version(str(version)) >= Version("6.0.0rc0")
    except InvalidVersion:
        return False


def sae_from_cfg(cfg: dict[str, Any], state: Mapping[str, torch.Tensor], option: str) -> Sae | None:
    """A native `Sae` from a SAELens 6 config and weights, or None where SAELens must do it."""
    architecture = cfg.get("architecture", "standard")
    if (
        not _is_v6(cfg)
        or architecture not in NATIVE_ARCHITECTURES
        or cfg.get("normalize_activations", "none") not in ("none", "expected_average_only_in")
        or cfg.get("reshape_activations", "none") != "none"
        or not set(state) <= _NATIVE_KEYS
    ):
        return None
    d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    expected = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    if architecture == "jumprelu":
        expected["threshold"] = (d_sae,)
    for name, shape in expected.items():
        if name not in state or tuple(state[name].shape) != shape:
            got = tuple(state[name].shape) if name in state else "missing"
            raise UserError(
                f"{option}: weight {name} is {got}, but {CFG} (d_in {d_in}, d_sae {d_sae}) "
                f"needs {shape}"
            )
    metadata = _metadata(cfg)
    info = SaeInfo(
        architecture=architecture,
        d_in=d_in,
        d_sae=d_sae,
        hook_name=str(metadata.get("hook_name") or ""),
        k=int(cfg["k"]) if architecture == "topk" else None,
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
        rescale_acts_by_decoder_norm=bool(cfg.get("rescale_acts_by_decoder_norm", False)),
        metadata=metadata,
        **{key: metadata.get(key) for key in _INFO_KEYS},
    )
    dtype = parse_dtype(str(cfg.get("dtype") or "float32").removeprefix("torch."))
    weights = {name: state[name].to(dtype) for name in expected}
    return Sae(info, **weights)


def sae_cfg_dict(sae: Sae | SaeInfo, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """The SAELens 6 `cfg.json` of a native SAE (loadable by `sae_lens.SAE.load_from_disk`)."""
    info = sae if isinstance(sae, SaeInfo) else sae.info
    dtype = dtype if isinstance(sae, SaeInfo) else sae.dtype
    try:
        version = importlib.metadata.version("sae-lens")
    except importlib.metadata.PackageNotFoundError:
        version = "6.0.0"
    metadata = {
        "sae_lens_version": version,
        "sae_lens_training_version": version,
        "hook_head_index": None,
        "prepend_bos": True,
        **info.metadata,
        "hook_name": info.hook_name,
        **{key: getattr(info, key) for key in _INFO_KEYS if getattr(info, key) is not None},
    }
    cfg: dict[str, Any] = {
        "d_in": info.d_in,
        "d_sae": info.d_sae,
        "dtype": str(dtype).removeprefix("torch."),
        "device": "cpu",
        "apply_b_dec_to_input": info.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": metadata,
        "architecture": info.architecture,
    }
    if info.architecture == "topk":
        cfg["k"] = info.k
        cfg["rescale_acts_by_decoder_norm"] = info.rescale_acts_by_decoder_norm
    return cfg


class SaeLensBacked(Sae):
    """An SAE whose arithmetic SAELens does (architectures or options `Sae` does not cover)."""

    inner: Any
    """The SAELens SAE (typed loosely: SAELens is imported only when one is loaded)."""

    def __init__(self, info: SaeInfo, inner: Any) -> None:
        nn.Module.__init__(self)
        self.info = info
        self.inner = inner

    @classmethod
    def wrap(cls, inner: Any, path: str | None = None) -> SaeLensBacked:
        cfg = inner.cfg
        metadata = cfg.metadata.to_dict() if hasattr(cfg.metadata, "to_dict") else {}
        info = SaeInfo(
            architecture=f"sae_lens:{cfg.architecture()}",
            d_in=int(cfg.d_in),
            d_sae=int(cfg.d_sae),
            hook_name=str(metadata.get("hook_name") or ""),
            k=getattr(cfg, "k", None),
            apply_b_dec_to_input=bool(cfg.apply_b_dec_to_input),
            model_name=metadata.get("model_name"),
            neuronpedia_id=metadata.get("neuronpedia_id"),
            hf_hook_name=metadata.get("hf_hook_name"),
            path=path,
            metadata=metadata,
        )
        return cls(info, inner.eval())

    # SAELens keeps the weights; expose them under the same names as a native Sae.
    @property
    def W_enc(self) -> torch.Tensor:  # type: ignore[override]
        return self.inner.W_enc

    @property
    def W_dec(self) -> torch.Tensor:  # type: ignore[override]
        return self.inner.W_dec

    @property
    def b_enc(self) -> torch.Tensor:  # type: ignore[override]
        return self.inner.b_enc

    @property
    def b_dec(self) -> torch.Tensor:  # type: ignore[override]
        return self.inner.b_dec

    @property
    def threshold(self) -> torch.Tensor | None:  # type: ignore[override]
        return getattr(self.inner, "threshold", None)

    def pre_acts(self, x_NM: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{self.architecture} exposes only encode and decode")

    def encode(self, x_NM: torch.Tensor) -> torch.Tensor:
        return self.inner.encode(x_NM)

    def decode(self, acts_NE: torch.Tensor) -> torch.Tensor:
        return self.inner.decode(acts_NE)

    def save(self, directory: Path) -> Path:
        """SAELens writes its own format (`save_model`)."""
        directory.mkdir(parents=True, exist_ok=True)
        self.inner.save_model(str(directory))
        return directory
