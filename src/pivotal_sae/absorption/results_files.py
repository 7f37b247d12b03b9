"""The generic container of the absorption results: safetensors files with JSON metadata.

A results file is a safetensors file (optionally zstd-compressed as `NAME.safetensors.zst`)
whose metadata values are each JSON text; `format` (one of `FORMATS`) names the kind of file and
`format_version` its version. Files are written whole or not at all (temporary file, then
rename). What each kind holds, and `load_results`, live in `results.py`.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pivotal_sae.errors import UserError
from pivotal_sae.runs import atomic_write, temporary_sibling

COOCCURRENCES = "cooccurrences"
EFFECTS = "effects"
TOP_EXAMPLES = "top_examples"
FORMATS = {kind: f"pivotal-sae/{kind}" for kind in (COOCCURRENCES, EFFECTS, TOP_EXAMPLES)}
FORMAT_VERSION = 1
#: Metadata keys that identify an SAE; two files agree on an SAE if these agree where both say.
SAE_IDENTITY_KEYS = ("release", "sae_id", "path", "neuronpedia_id", "hook_name", "d_sae")


def encode_metadata(metadata: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): json.dumps(v) for k, v in metadata.items()}


def decode_metadata(metadata: Mapping[str, str] | None) -> dict[str, Any]:
    decoded: dict[str, Any] = {}
    for key, value in (metadata or {}).items():
        try:
            decoded[key] = json.loads(value)
        except json.JSONDecodeError:
            decoded[key] = value
    return decoded


def save_file(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> None:
    """Write tensors + metadata to `path` atomically; `.zst` compresses with zstandard."""
    from safetensors.torch import save_file as save_safetensors

    path = Path(path)
    encoded = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_write(path) as tmp:
        if not path.name.endswith(".zst"):
            save_safetensors(encoded, str(tmp), metadata=encode_metadata(metadata))
            return
        import zstandard

        raw = temporary_sibling(path, "raw")
        try:
            save_safetensors(encoded, str(raw), metadata=encode_metadata(metadata))
            with open(raw, "rb") as src, open(tmp, "wb") as dst:
                zstandard.ZstdCompressor(level=3, threads=-1).copy_stream(src, dst)
        finally:
            raw.unlink(missing_ok=True)


def read_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and decoded metadata of a (possibly .zst) safetensors file, or a UserError."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if path.is_dir():
        found = [p.name for p in sorted(path.glob("*.safetensors*"))]
        hint = f" (it holds {', '.join(found)})" if found else ""
        raise UserError(f"{path} is a directory; give the results file inside it{hint}")
    if not path.is_file():
        raise UserError(f"results file {path} does not exist")
    with tempfile.TemporaryDirectory(prefix="pivotal-sae-") as tmp:
        source = path
        if path.name.endswith(".zst"):
            import zstandard

            source = Path(tmp) / "raw.safetensors"
            try:
                with open(path, "rb") as src, open(source, "wb") as dst:
                    zstandard.ZstdDecompressor().copy_stream(src, dst)
            except zstandard.ZstdError as exc:
                raise UserError(f"{path} is truncated or corrupted (zstd: {exc})") from None
        try:
            with safe_open(str(source), framework="pt") as handle:
                metadata = decode_metadata(handle.metadata())
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
        except (SafetensorError, OSError, ValueError) as exc:
            what = "truncated or corrupted" if path.stat().st_size else "empty"
            raise UserError(f"{path} is {what} and cannot be read as safetensors ({exc})") from None
    return tensors, metadata


def kind_of(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any], path: Path) -> str:
    for kind, name in FORMATS.items():
        if metadata.get("format") == name:
            return kind
    if set(tensors) & {"cooccurrences_ee", "effects_eE"} and "format" not in metadata:
        return "legacy"  # written by the original research scripts
    raise UserError(f"{path} is not a pivotal-sae results file (format {metadata.get('format')!r})")


def require(tensors: Mapping[str, torch.Tensor], names: tuple[str, ...], path: Path) -> None:
    missing = [n for n in names if n not in tensors]
    if missing:
        raise UserError(f"{path} lacks the tensor(s) {', '.join(missing)}")


def check_shape(tensor: torch.Tensor, shape: tuple[int, ...], name: str, path: Path) -> None:
    if tuple(tensor.shape) != shape:
        raise UserError(f"{path}: {name} has shape {tuple(tensor.shape)}, expected {shape}")


def results_file(run_dir: Path, kind: str) -> Path | None:
    """`run_dir/KIND.safetensors` or, failing that, `KIND.safetensors.zst`."""
    for name in (f"{kind}.safetensors", f"{kind}.safetensors.zst"):
        if (run_dir / name).is_file():
            return run_dir / name
    return None
