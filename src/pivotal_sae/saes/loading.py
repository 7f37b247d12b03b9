"""SAEs from SAELens-format directories and SAELens pretrained releases, and saving them back.

Common architectures (JumpReLU, TopK, standard) are read natively into `Sae`; anything else
goes through `sae_lens.SAE.load_from_disk` and is wrapped. Pretrained releases are fetched by
SAELens (imported only then) and converted. Every failure a user can fix is a `UserError`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from pivotal_sae import hub
from pivotal_sae.errors import UserError
from pivotal_sae.saes import hierarchical_lm  # noqa: F401  (registers "hierarchical")
from pivotal_sae.saes.sae import (
    ARCHITECTURES,
    CFG,
    WEIGHTS,
    Sae,
    sae_cfg_dict,
    sae_from_cfg,
)

__all__ = ["CFG", "WEIGHTS", "load_sae", "read_sae_dir", "sae_cfg_dict", "sae_from_cfg", "save_sae"]


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
    try:
        from safetensors.torch import load_file

        state = load_file(str(path / WEIGHTS), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise UserError(f"{option} {path}: cannot read {WEIGHTS} ({exc})") from None
    architecture = ARCHITECTURES.get(str(cfg.get("architecture", "standard")))
    sae = architecture.from_saved(cfg, state, option=f"{option} {path}") if architecture else None
    if sae is None:
        sae = _via_sae_lens_disk(path, device)
    sae.info.path = str(path)
    return sae.to(device=device, dtype=_dtype(dtype) or sae.dtype)


def _via_sae_lens_disk(path: Path, device: str | torch.device) -> Sae:
    from sae_lens import SAE  # ~10 s, only for architectures we do not read ourselves

    from pivotal_sae.saes.sae import SaeLensBacked

    try:
        inner = SAE.load_from_disk(str(path), device=str(device))
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"--sae-path {path}: SAELens cannot load it ({exc})") from None
    return SaeLensBacked.wrap(inner, path=str(path))


# ---------------------------------------------------------------------- saving
def save_sae(sae: Sae, directory: Path) -> Path:
    """Write `cfg.json` + `sae_weights.safetensors` (each atomically) into `directory`."""
    return sae.save(directory)


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
    if sae_id is None:
        raise UserError(f"{option}-release {release} needs {option}-id")
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
