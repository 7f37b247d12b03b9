"""Results files of the absorption search and `load_results`, their reader for notebooks.

Three safetensors files (each optionally zstd-compressed as `NAME.safetensors.zst`):

- `cooccurrences.safetensors`: `cooccurrences_ee_packed` (upper triangle with the diagonal,
  row by row) or, for very wide SAEs, `cooccurrences_ee_keys` (i·E + j, i < j, sorted) with
  `cooccurrences_ee_counts`; and `firing_counts_e`.
- `effects.safetensors`: `effects_eE`, `how_often_activated_e`.
- `top_examples.safetensors`: `max_acts_EK`, `context_ids_EK`, `positions_EK`, `token_ids_EKW`,
  `acts_EKW`, `example_sizes`.

Every metadata value is JSON text; `format` names the kind of file, the counters (`d_sae`,
`tokens_counted`, `contexts_processed`) sit beside whatever the caller passed (model, SAEs,
hook names, corpus, code version). Files are written whole or not at all (temporary file, then
rename). Anything unreadable or inconsistent is a `UserError` with one line saying what is wrong.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pivotal_sae.absorption.cooccurrence import (
    DenseCooccurrence,
    SparseCooccurrence,
    packed_size,
)
from pivotal_sae.absorption.examples import TopExamples
from pivotal_sae.errors import UserError
from pivotal_sae.runs import default_file_mode

COOCCURRENCES = "cooccurrences"
EFFECTS = "effects"
TOP_EXAMPLES = "top_examples"
FORMATS = {kind: f"pivotal-sae/{kind}" for kind in (COOCCURRENCES, EFFECTS, TOP_EXAMPLES)}
FORMAT_VERSION = 1
#: Metadata keys that identify an SAE; two files agree on an SAE if these agree where both say.
SAE_IDENTITY_KEYS = ("release", "sae_id", "path", "neuronpedia_id", "hook_name", "d_sae")


def _encode(metadata: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): json.dumps(v) for k, v in metadata.items()}


def _decode(metadata: Mapping[str, str] | None) -> dict[str, Any]:
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
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp:
        raw = Path(tmp) / "raw.safetensors"
        save_safetensors(
            {k: v.detach().contiguous().cpu() for k, v in tensors.items()},
            str(raw),
            metadata=_encode(metadata),
        )
        final = raw
        if path.name.endswith(".zst"):
            import zstandard

            final = Path(tmp) / "compressed.zst"
            with open(raw, "rb") as src, open(final, "wb") as dst:
                zstandard.ZstdCompressor(level=3, threads=-1).copy_stream(src, dst)
                dst.flush()
                os.fsync(dst.fileno())
            raw.unlink()
        os.chmod(final, default_file_mode())  # safetensors writes 0600
        os.replace(final, path)


def read_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and decoded metadata of a (possibly .zst) safetensors file, or a UserError."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
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
                metadata = _decode(handle.metadata())
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


def _require(tensors: Mapping[str, torch.Tensor], names: tuple[str, ...], path: Path) -> None:
    missing = [n for n in names if n not in tensors]
    if missing:
        raise UserError(f"{path} lacks the tensor(s) {', '.join(missing)}")


def _check_shape(tensor: torch.Tensor, shape: tuple[int, ...], name: str, path: Path) -> None:
    if tuple(tensor.shape) != shape:
        raise UserError(f"{path}: {name} has shape {tuple(tensor.shape)}, expected {shape}")


def save_cooccurrences(
    path: Path,
    counter: DenseCooccurrence | SparseCooccurrence,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Save a counter (also a valid checkpoint: `load_cooccurrence_counter` resumes it)."""
    state = counter.state_dict()
    tensors = {k: v for k, v in state.items() if v.ndim > 0}
    meta = {
        **dict(metadata or {}),
        "format": FORMATS[COOCCURRENCES],
        "format_version": FORMAT_VERSION,
        "layout": counter.layout,
        "d_sae": counter.d_sae,
        "tokens_counted": counter.tokens_counted,
        "contexts_processed": counter.contexts_processed,
    }
    save_file(path, tensors, meta)


def load_cooccurrence_counter(
    path: Path, device: torch.device | str = "cpu"
) -> DenseCooccurrence | SparseCooccurrence:
    """The counter saved at `path`, on `device`, ready to resume or to look pairs up."""
    tensors, metadata = read_file(Path(path))
    return _counter_from(tensors, metadata, Path(path), device)


def _counter_from(
    tensors: dict[str, torch.Tensor],
    metadata: Mapping[str, Any],
    path: Path,
    device: torch.device | str,
) -> DenseCooccurrence | SparseCooccurrence:
    if kind_of(tensors, metadata, path) != COOCCURRENCES:
        raise UserError(f"{path} holds no co-occurrence counts")
    try:
        d_sae = int(metadata["d_sae"])
        scalars = {
            k: torch.tensor(int(metadata[k]))
            for k in ("d_sae", "tokens_counted", "contexts_processed")
        }
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{path} lacks d_sae/tokens_counted/contexts_processed metadata") from None
    _require(tensors, ("firing_counts_e",), path)
    _check_shape(tensors["firing_counts_e"], (d_sae,), "firing_counts_e", path)
    if metadata.get("layout") == "packed":
        _require(tensors, ("cooccurrences_ee_packed",), path)
        packed = tensors["cooccurrences_ee_packed"]
        _check_shape(packed, (packed_size(d_sae),), "cooccurrences_ee_packed", path)
        counter: DenseCooccurrence | SparseCooccurrence = DenseCooccurrence(
            d_sae, device, count_dtype=packed.dtype
        )
    elif metadata.get("layout") == "sparse":
        _require(tensors, ("cooccurrences_ee_keys", "cooccurrences_ee_counts"), path)
        counter = SparseCooccurrence(d_sae, device)
    else:
        raise UserError(f"{path} has unknown co-occurrence layout {metadata.get('layout')!r}")
    counter.load_state_dict({**tensors, **scalars})
    diagonal = counter.lookup(torch.arange(d_sae), torch.arange(d_sae))
    if counter.layout == "packed" and not torch.equal(diagonal, counter.firing_counts_e.cpu()):
        raise UserError(f"{path} is inconsistent: the diagonal differs from firing_counts_e")
    return counter


def save_effects(
    path: Path,
    effects_eE: torch.Tensor,
    how_often_activated_e: torch.Tensor,
    metadata: Mapping[str, Any] | None = None,
    *,
    row_ids_R: torch.Tensor | None = None,
) -> None:
    """Save summed ablation effects (ablator latents × reader latents) and ablation counts.

    With `row_ids_R` (ascending), `effects_eE` holds only those rows, (R, E): the 'rows'
    layout, `effects_eE_rows` + `effects_eE_row_ids`, for when most latents were never ablated.
    """
    meta = {
        **dict(metadata or {}),
        "format": FORMATS[EFFECTS],
        "format_version": FORMAT_VERSION,
        "d_sae": effects_eE.shape[0] if row_ids_R is None else how_often_activated_e.shape[0],
        "reader_d_sae": effects_eE.shape[1],
    }
    tensors = {"how_often_activated_e": how_often_activated_e.to(torch.int64)}
    if row_ids_R is None:
        tensors["effects_eE"] = effects_eE.float()
    else:
        meta["layout"] = "rows"
        tensors["effects_eE_rows"] = effects_eE.float()
        tensors["effects_eE_row_ids"] = row_ids_R.to(torch.int64)
    save_file(path, tensors, meta)


def _expand_effect_rows(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Turn the 'rows' layout into a full `effects_eE` (zeros for latents never ablated)."""
    if "effects_eE_rows" not in tensors:
        return
    _require(tensors, ("effects_eE_row_ids", "how_often_activated_e"), path)
    rows, ids = tensors.pop("effects_eE_rows"), tensors.pop("effects_eE_row_ids")
    e = tensors["how_often_activated_e"].shape[0] if tensors["how_often_activated_e"].ndim else 0
    if rows.ndim != 2 or ids.shape != rows.shape[:1]:
        raise UserError(
            f"{path}: effects_eE_rows {tuple(rows.shape)} and effects_eE_row_ids "
            f"{tuple(ids.shape)} do not match"
        )
    if ids.numel() and (
        int(ids.min()) < 0 or int(ids.max()) >= e or ids.unique().numel() < ids.numel()
    ):
        raise UserError(f"{path}: effects_eE_row_ids are not distinct latents below {e}")
    full = torch.zeros(e, rows.shape[1], dtype=torch.float32)
    full[ids.to(torch.int64)] = rows.float()
    tensors["effects_eE"] = full


def _check_effects(tensors: dict[str, torch.Tensor], metadata: Mapping[str, Any], path: Path):
    _expand_effect_rows(tensors, path)
    _require(tensors, ("effects_eE", "how_often_activated_e"), path)
    effects = tensors["effects_eE"]
    if effects.ndim != 2:
        raise UserError(f"{path}: effects_eE must be 2-D, not of shape {tuple(effects.shape)}")
    e, reader = effects.shape
    _check_shape(tensors["how_often_activated_e"], (e,), "how_often_activated_e", path)
    for key, size in (("d_sae", e), ("reader_d_sae", reader)):
        if key in metadata and int(metadata[key]) != size:
            raise UserError(
                f"{path}: metadata says {key}={metadata[key]} but effects_eE is {e}×{reader}"
            )
    tensors["how_often_activated_e"] = tensors["how_often_activated_e"].to(torch.int64)


def save_top_examples(
    path: Path, examples: TopExamples, metadata: Mapping[str, Any] | None = None
) -> None:
    meta = {
        **dict(metadata or {}),
        "format": FORMATS[TOP_EXAMPLES],
        "format_version": FORMAT_VERSION,
        "d_sae": examples.d_sae,
    }
    save_file(path, examples.state_dict(), meta)


def load_top_examples(path: Path, device: torch.device | str = "cpu") -> TopExamples:
    tensors, metadata = read_file(Path(path))
    if kind_of(tensors, metadata, Path(path)) != TOP_EXAMPLES:
        raise UserError(f"{path} holds no top examples")
    return TopExamples.from_state_dict(tensors, device)


def _examples_from(tensors: dict[str, torch.Tensor], path: Path) -> TopExamples:
    try:
        return TopExamples.from_state_dict(tensors)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None


def check_same_sae(
    cooccurrence_meta: Mapping[str, Any],
    effects_meta: Mapping[str, Any],
    cooccurrence_path: Path | str = "co-occurrence file",
    effects_path: Path | str = "effects file",
) -> None:
    """A UserError if the co-occurrence counts and the effects describe different ablator SAEs.

    Both files carry their SAE as a dict (co-occurrence: `sae`; effects: `ablator_sae`); the
    keys of SAE_IDENTITY_KEYS that both name must agree, and so must `d_sae`.
    """
    mine = cooccurrence_meta.get("sae") or cooccurrence_meta.get("ablator_sae") or {}
    theirs = effects_meta.get("ablator_sae") or {}
    for key in SAE_IDENTITY_KEYS:
        a, b = mine.get(key), theirs.get(key)
        if a is not None and b is not None and a != b:
            raise UserError(
                f"{effects_path} and {cooccurrence_path} come from different SAEs "
                f"({key} {b!r} vs {a!r})"
            )
    d_a, d_b = cooccurrence_meta.get("d_sae"), effects_meta.get("d_sae")
    if d_a is not None and d_b is not None and int(d_a) != int(d_b):
        raise UserError(
            f"{effects_path} has {d_b} ablator latents but {cooccurrence_path} counts {d_a}; "
            "they come from different SAEs"
        )


@dataclass
class Results(Mapping[str, torch.Tensor]):
    """What `load_results` found: named tensors (a read-only mapping) and metadata per file.

    Tensors, where their file was present: `cooccurrences_ee` (E, E) int64 symmetric, diagonal
    = `firing_counts_e`; `effects_eE` (e, E) float32; `how_often_activated_e` (e,) int64; the
    top examples `max_acts_EK`, `context_ids_EK`, `positions_EK`, `token_ids_EKW`, `acts_EKW`.
    """

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Decoded metadata by file kind: 'cooccurrences', 'effects', 'top_examples'."""
    paths: dict[str, Path] = field(default_factory=dict)

    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return self.tensors[name]
        except KeyError:
            have = ", ".join(self.tensors) or "nothing"
            raise KeyError(f"{name!r} was not loaded (have: {have})") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    @property
    def tokens_counted(self) -> int | None:
        value = self.metadata.get(COOCCURRENCES, {}).get("tokens_counted")
        return None if value is None else int(value)

    def top_examples(self) -> TopExamples | None:
        if "max_acts_EK" not in self.tensors:
            return None
        return _examples_from(self.tensors, self.paths.get(TOP_EXAMPLES, Path("?")))


def results_file(run_dir: Path, kind: str) -> Path | None:
    """`run_dir/KIND.safetensors` or, failing that, `KIND.safetensors.zst`."""
    for name in (f"{kind}.safetensors", f"{kind}.safetensors.zst"):
        if (run_dir / name).is_file():
            return run_dir / name
    return None


def _load_legacy(tensors: dict[str, torch.Tensor], path: Path, results: Results) -> None:
    if "cooccurrences_ee" in tensors:
        counts = tensors["cooccurrences_ee"]
        if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
            raise UserError(f"{path}: cooccurrences_ee must be square, not {tuple(counts.shape)}")
        if counts.is_floating_point() and not torch.equal(counts, counts.round()):
            raise UserError(f"{path}: cooccurrences_ee holds non-integer counts")
        results.tensors["cooccurrences_ee"] = counts.to(torch.int64)
        results.tensors["firing_counts_e"] = results.tensors["cooccurrences_ee"].diagonal().clone()
        results.metadata[COOCCURRENCES] = {"format": "legacy", "d_sae": counts.shape[0]}
        results.paths[COOCCURRENCES] = path
    if "effects_eE" in tensors:
        _check_effects(tensors, {}, path)
        results.tensors["effects_eE"] = tensors["effects_eE"].float()
        results.tensors["how_often_activated_e"] = tensors["how_often_activated_e"]
        results.metadata[EFFECTS] = {"format": "legacy", "d_sae": tensors["effects_eE"].shape[0]}
        results.paths[EFFECTS] = path


def _load_into(results: Results, path: Path) -> None:
    tensors, metadata = read_file(path)
    kind = kind_of(tensors, metadata, path)
    if kind == "legacy":
        _load_legacy(tensors, path, results)
        return
    if kind in results.paths:
        raise UserError(f"both {results.paths[kind]} and {path} hold {kind}; pass one of them")
    results.metadata[kind], results.paths[kind] = metadata, path
    if kind == COOCCURRENCES:
        counter = _counter_from(tensors, metadata, path, "cpu")
        results.tensors["cooccurrences_ee"] = counter.to_dense()
        results.tensors["firing_counts_e"] = counter.firing_counts_e
    elif kind == EFFECTS:
        _check_effects(tensors, metadata, path)
        results.tensors["effects_eE"] = tensors["effects_eE"].float()
        results.tensors["how_often_activated_e"] = tensors["how_often_activated_e"]
    else:
        examples = _examples_from(tensors, path)
        results.tensors.update(
            {k: v for k, v in examples.state_dict().items() if k != "example_sizes"}
        )
        results.tensors["example_sizes"] = examples.state_dict()["example_sizes"]


def load_results(*paths: Path | str) -> Results:
    """Load results for analysis: a run directory, or one or more results files.

    >>> results = pivotal_sae.load_results("runs/my-absorb-run")
    >>> results["cooccurrences_ee"][i, j], results.tokens_counted, results.metadata["effects"]

    Compressed (`.zst`) files and the original research scripts' files are read too. A file
    that is truncated, corrupted, of an unknown format or with tensors of the wrong shape, or
    effects and co-occurrences from different SAEs, raise a UserError saying which.
    """
    if not paths:
        raise UserError("load_results needs a run directory or a results file")
    results = Results()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = [p for k in FORMATS if (p := results_file(path, k)) is not None]
            if not found:
                raise UserError(
                    f"{path} holds no results files (cooccurrences/effects/top_examples"
                    ".safetensors[.zst])"
                )
            for file in found:
                _load_into(results, file)
        else:
            _load_into(results, path)
    if COOCCURRENCES in results.metadata and EFFECTS in results.metadata:
        check_same_sae(
            results.metadata[COOCCURRENCES],
            results.metadata[EFFECTS],
            results.paths[COOCCURRENCES],
            results.paths[EFFECTS],
        )
        d_cooc = results.tensors["cooccurrences_ee"].shape[0]
        d_effects = results.tensors["effects_eE"].shape[0]
        if d_cooc != d_effects:
            raise UserError(
                f"{results.paths[EFFECTS]} has {d_effects} ablator latents but "
                f"{results.paths[COOCCURRENCES]} counts {d_cooc}; they come from different SAEs"
            )
    return results
