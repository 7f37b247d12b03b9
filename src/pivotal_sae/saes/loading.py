"""SAEs from SAELens-format directories and SAELens pretrained releases, and saving them back.

Common architectures (JumpReLU, TopK, standard) are read natively into `Sae`; anything else
goes through `sae_lens.SAE.load_from_disk` and is wrapped. Pretrained releases are fetched by
SAELens (imported only then) and converted. Every failure a user can fix is a `UserError`.
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import Any

import torch

from pivotal_sae import hub
from pivotal_sae.errors import UserError
from pivotal_sae.saes.sae import NATIVE_ARCHITECTURES, Sae, SaeInfo

CFG = "cfg.json"
WEIGHTS = "sae_weights.safetensors"
_NATIVE_KEYS = {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"}
_INFO_KEYS = ("model_name", "neuronpedia_id", "hf_hook_name")


def _dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    from pivotal_sae.runs import parse_dtype

    return parse_dtype(dtype.removeprefix("torch."))


def load_sae(
    *,
    path: str | Path | None = None,
    release: str | None = None,
    sae_id: str | None = None,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    option: str = "--sae",
) -> Sae:
    """An SAE named by `path`, or by SAELens `release` + `sae_id`; `option` prefixes messages."""
    if path is not None and release is not None:
        raise UserError(f"give either {option}-path or {option}-release, not both")
    if path is not None:
        return read_sae_dir(Path(path), device=device, dtype=dtype, option=f"{option}-path")
    if release is not None:
        return load_pretrained(release, sae_id, device=device, dtype=dtype, option=option)
    if sae_id is not None:
        raise UserError(f"{option}-id needs {option}-release")
    raise UserError(f"name an SAE with {option}-path DIR or {option}-release R {option}-id I")


# ---------------------------------------------------------------------- directories
def read_sae_dir(
    path: Path,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    option: str = "--sae-path",
) -> Sae:
    path = path.expanduser()
    if not path.exists():
        raise UserError(f"{option} {path}: no such directory")
    if not path.is_dir() or not (path / CFG).is_file() or not (path / WEIGHTS).is_file():
        raise UserError(
            f"{option} {path} is not an SAE directory in SAELens format "
            f"(it needs {CFG} and {WEIGHTS})"
        )
    try:
        cfg = json.loads((path / CFG).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{option} {path}: {CFG} is not valid JSON ({exc})") from None
    if not isinstance(cfg, dict) or "d_in" not in cfg or "d_sae" not in cfg:
        raise UserError(f"{option} {path}: {CFG} is not an SAELens config (no d_in / d_sae)")
    if cfg.get("architecture") == "hierarchical":
        from pivotal_sae.saes.hierarchical_lm import read_hierarchical_dir

        return read_hierarchical_dir(path, cfg, device=device, dtype=_dtype(dtype))
    try:
        from safetensors.torch import load_file

        state = load_file(str(path / WEIGHTS), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise UserError(f"{option} {path}: cannot read {WEIGHTS} ({exc})") from None
    sae = sae_from_cfg(cfg, state, option=f"{option} {path}")
    if sae is None:
        sae = _via_sae_lens_disk(path, device)
    sae.info.path = str(path)
    return sae.to(device=device, dtype=_dtype(dtype) or sae.dtype)


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


def sae_from_cfg(cfg: dict[str, Any], state: dict[str, torch.Tensor], option: str) -> Sae | None:
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
    dtype = _dtype(str(cfg.get("dtype") or "float32")) or torch.float32
    weights = {name: state[name].to(dtype) for name in expected}
    return Sae(info, **weights)


def _via_sae_lens_disk(path: Path, device: str | torch.device) -> Sae:
    from sae_lens import SAE  # ~10 s, only for architectures we do not read ourselves

    from pivotal_sae.saes.sae import SaeLensBacked

    try:
        inner = SAE.load_from_disk(str(path), device=str(device))
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"--sae-path {path}: SAELens cannot load it ({exc})") from None
    return SaeLensBacked.wrap(inner, path=str(path))


# ---------------------------------------------------------------------- saving
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


def save_sae(sae: Sae, directory: Path) -> Path:
    """Write `cfg.json` + `sae_weights.safetensors` (each atomically) into `directory`."""
    from pivotal_sae.runs import atomic_save_safetensors, atomic_write_json

    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: p.detach() for name, p in sae.named_parameters() if p is not None}
    atomic_save_safetensors(directory / WEIGHTS, tensors)
    atomic_write_json(directory / CFG, sae_cfg_dict(sae))
    return directory


# ---------------------------------------------------------------------- pretrained releases
def _offline_message(release: str, sae_id: str, reason: str) -> str:
    return (
        f"cannot fetch SAE {release}/{sae_id}: {reason}; run once online to cache it, "
        "or download its weights and pass --sae-path DIR"
    )


def load_pretrained(
    release: str,
    sae_id: str | None,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    option: str = "--sae",
) -> Sae:
    repo_id = hub.release_repo_id(release, sae_id, option=option)
    if hub.offline_by_env() and not hub.repo_cached(repo_id):
        raise UserError(
            _offline_message(
                release,
                sae_id,
                "the hub is switched off (HF_HUB_OFFLINE) and "
                f"{repo_id} is not in the local Hugging Face cache",
            )
        )
    return _fetch_with_sae_lens(release, sae_id, device, _dtype(dtype) or torch.float32)


def _fetch_with_sae_lens(release: str, sae_id: str, device: Any, dtype: torch.dtype) -> Sae:
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled
    from sae_lens import SAE

    from pivotal_sae.saes.sae import SaeLensBacked

    try:
        inner = SAE.from_pretrained(
            release, sae_id, device=str(device), dtype=str(dtype).removeprefix("torch.")
        )
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        reason = "its weights are not in the local cache and the hub cannot be reached"
        raise UserError(
            _offline_message(release, sae_id, reason) + f" ({type(exc).__name__})"
        ) from None
    except OSError as exc:  # network failures surface as requests/httpx OSErrors
        raise UserError(_offline_message(release, sae_id, f"download failed ({exc})")) from None
    cfg = inner.cfg.to_dict()
    state = {k: v.detach() for k, v in inner.state_dict().items()}
    sae = sae_from_cfg(cfg, state, option=f"{release}/{sae_id}")
    if sae is None:
        sae = SaeLensBacked.wrap(inner)
    sae.info.release, sae.info.sae_id = release, sae_id
    return sae.to(device=device, dtype=dtype)
