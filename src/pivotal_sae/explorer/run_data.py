"""What the explorer shows of an `absorb` run directory, read once when the server starts.

It reads the report's `pairs.json` and, of the results files, only what the pages show: the
firing counts and counters of `cooccurrences.safetensors` (not the E×E matrix), the metadata
of `effects.safetensors` (which SAEs were ablated and read), and `top_examples.safetensors`.
Uncompressed files are read tensor by tensor, so a 65,536-latent run costs megabytes here,
not the gigabytes of its co-occurrence matrix. Anything unreadable is a one-line `UserError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pivotal_sae.absorption.examples import TopExamples
from pivotal_sae.absorption.finder import AbsorptionCandidate
from pivotal_sae.absorption.pair_records import PairRecord, PairsDocument
from pivotal_sae.absorption.results_files import (
    COOCCURRENCES,
    EFFECTS,
    FORMATS,
    SAE_IDENTITY_KEYS,
    TOP_EXAMPLES,
    decode_metadata,
    kind_of,
    read_file,
    results_file,
)
from pivotal_sae.errors import UserError

PAIRS_JSON = "pairs.json"
PARTIAL_JSON = "partial_pairs.json"
#: Results files larger than this are not read whole for the dashboard's correlations/effects.
MAX_LAZY_BYTES = 1 << 30
RUN_FILES = (PAIRS_JSON, *(f"{kind}.safetensors[.zst]" for kind in FORMATS))


@dataclass
class RunData:
    """An absorb run as the explorer needs it. Latent ids are the ablator SAE's."""

    path: Path
    pairs: list[PairRecord] = field(default_factory=list)
    """`pairs.json`'s effect pairs, best first."""
    decoder_pairs: list[PairRecord] = field(default_factory=list)
    """`pairs.json`'s decoder-similarity pairs, best first."""
    pairs_meta: dict[str, Any] = field(default_factory=dict)
    has_pairs_file: bool = False
    candidates: list[AbsorptionCandidate] = field(default_factory=list)
    """`partial_pairs.json`'s pairs (the partial method), best first."""
    candidates_meta: dict[str, Any] = field(default_factory=dict)
    """Its settings and counts (`pairs_scored`, `latents_alive`)."""
    summary: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Results-file metadata by kind: 'cooccurrences', 'effects', 'top_examples'."""
    firing_counts_e: torch.Tensor | None = None
    tokens_counted: int | None = None
    contexts_processed: int | None = None
    examples: TopExamples | None = None
    explanations: dict[int, str] = field(default_factory=dict, repr=False)
    """The explanation pairs.json carries for each latent it mentions (first one seen)."""
    files: dict[str, Path | None] = field(default_factory=dict)
    """The results files found, by kind."""
    _pairs_by_latent: dict[int, list[int]] = field(default_factory=dict, repr=False)
    _loaded: dict[str, Any] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ what the run says
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def d_sae(self) -> int | None:
        for kind in (COOCCURRENCES, EFFECTS, TOP_EXAMPLES):
            if "d_sae" in self.metadata.get(kind, {}):
                return int(self.metadata[kind]["d_sae"])
        if self.firing_counts_e is not None:
            return len(self.firing_counts_e)
        return self.examples.d_sae if self.examples is not None else None

    def sae_spec(self, role: str) -> dict[str, Any] | None:
        """Identity of the run's 'ablator' or 'reader' SAE (release/sae_id/path/hook_name/
        d_sae/neuronpedia_id), as the results files' metadata names it, or None."""
        if role == "reader":
            candidates = [self.metadata.get(EFFECTS, {}).get("reader_sae")]
        else:
            candidates = [
                self.metadata.get(COOCCURRENCES, {}).get("sae"),
                self.metadata.get(EFFECTS, {}).get("ablator_sae"),
                self.metadata.get(TOP_EXAMPLES, {}).get("sae"),
            ]
        for spec in candidates:
            if isinstance(spec, dict) and any(spec.get(k) for k in SAE_IDENTITY_KEYS):
                return spec
        return None

    @property
    def model_name(self) -> str | None:
        for source in (*self.metadata.values(), self.summary):
            model = source.get("model")
            if isinstance(model, str) and model:
                return model
        return None

    @property
    def neuronpedia_id(self) -> str | None:
        spec = self.sae_spec("ablator") or {}
        return spec.get("neuronpedia_id") or self.pairs_meta.get("ablator_sae_id")

    def firing(self, latent: int) -> int | None:
        if self.firing_counts_e is None or not 0 <= latent < len(self.firing_counts_e):
            return None
        return int(self.firing_counts_e[latent])

    def pairs_with(self, latent: int) -> list[int]:
        """Indices into `pairs` of the pairs a latent belongs to, best first."""
        return self._pairs_by_latent.get(latent, [])

    # ------------------------------------------------------------------ read on demand
    def counter(self) -> Any:
        """The run's co-occurrence counter (read at first use; None without counts, or when
        the file is over `MAX_LAZY_BYTES`, so a 65k-latent run never loads its E×E here)."""
        if COOCCURRENCES not in self._loaded:
            path = self.files.get(COOCCURRENCES)
            counter = None
            if path is not None and path.stat().st_size <= MAX_LAZY_BYTES:
                from pivotal_sae.absorption.results import load_cooccurrence_counter

                try:
                    counter = load_cooccurrence_counter(path)
                except UserError:  # an original-scripts file: no counter, no correlations
                    counter = None
            self._loaded[COOCCURRENCES] = counter
        return self._loaded[COOCCURRENCES]

    def effects(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(effects_eE, how_often_activated_e), read at first use; None without them."""
        if EFFECTS not in self._loaded:
            path = self.files.get(EFFECTS)
            value = None
            if path is not None and path.stat().st_size <= MAX_LAZY_BYTES:
                from pivotal_sae.absorption.results import load_results

                loaded = load_results(path)
                value = (loaded["effects_eE"], loaded["how_often_activated_e"])
            self._loaded[EFFECTS] = value
        return self._loaded[EFFECTS]

    def describe(self) -> dict[str, Any]:
        settings = self.pairs_meta.get("settings") or {}
        return {
            "name": self.name,
            "model": self.model_name,
            "d_sae": self.d_sae,
            "tokens_counted": self.tokens_counted,
            "contexts_processed": self.contexts_processed,
            "pairs": len(self.pairs),
            "pairs_matching": self.pairs_meta.get("n_matching"),
            "decoder_pairs": len(self.decoder_pairs),
            "candidates": len(self.candidates),
            "candidates_scored": self.candidates_meta.get("pairs_scored"),
            "neighbours_first": _neighbours_first(self.candidates_meta),
            "has_pairs_file": self.has_pairs_file,
            "has_top_examples": self.examples is not None,
            "settings": settings if isinstance(settings, dict) else {},
        }


# ---------------------------------------------------------------------- reading
def _read(path: Path, names: tuple[str, ...]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Metadata and the named tensors (those present) of a results file."""
    if path.name.endswith(".zst"):
        tensors, metadata = read_file(path)
        return {n: t for n, t in tensors.items() if n in names}, metadata
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = decode_metadata(handle.metadata())
            keys = set(handle.keys())
            tensors = {n: handle.get_tensor(n) for n in names if n in keys}
            if not metadata.get("format"):
                # Files of the original scripts carry no metadata; kind_of tells them by tensors.
                tensors.update({n: torch.empty(0) for n in keys if n not in tensors})
    except (SafetensorError, OSError, ValueError) as exc:
        what = "truncated or corrupted" if path.stat().st_size else "empty"
        raise UserError(f"{path} is {what} and cannot be read as safetensors ({exc})") from None
    return tensors, metadata


def _read_cooccurrences(run: RunData, path: Path) -> None:
    tensors, metadata = _read(path, ("firing_counts_e", "cooccurrences_ee"))
    kind = kind_of(tensors, metadata, path)
    if kind == "legacy" and tensors.get("cooccurrences_ee", torch.empty(0)).numel():
        run.firing_counts_e = tensors["cooccurrences_ee"].diagonal().round().to(torch.int64)
        return
    if kind != COOCCURRENCES or "firing_counts_e" not in tensors:
        raise UserError(f"{path} holds no co-occurrence counts")
    run.metadata[COOCCURRENCES] = metadata
    run.firing_counts_e = tensors["firing_counts_e"].to(torch.int64)
    for key in ("tokens_counted", "contexts_processed"):
        if metadata.get(key) is not None:
            setattr(run, key, int(metadata[key]))


def _read_effects_metadata(run: RunData, path: Path) -> None:
    tensors, metadata = _read(path, ())
    if kind_of(tensors, metadata, path) == EFFECTS:
        run.metadata[EFFECTS] = metadata


def _read_examples(run: RunData, path: Path) -> None:
    tensors, metadata = read_file(path)
    if kind_of(tensors, metadata, path) != TOP_EXAMPLES:
        raise UserError(f"{path} holds no top examples")
    try:
        run.examples = TopExamples.from_state_dict(tensors)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    run.metadata[TOP_EXAMPLES] = metadata


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc})") from None


def _read_pairs(run: RunData, path: Path) -> None:
    document = PairsDocument.read(path)
    run.has_pairs_file = True
    run.pairs_meta = document.meta
    run.pairs = document.pairs
    run.decoder_pairs = document.decoder_pairs or []
    for number, pair in enumerate(run.pairs):
        for side in (pair.a, pair.b):
            run._pairs_by_latent.setdefault(side.id, []).append(number)
    for pair in run.pairs + run.decoder_pairs:
        for side in (pair.a, pair.b):
            if side.explanation:
                run.explanations.setdefault(side.id, side.explanation)


def _neighbours_first(meta: dict[str, Any]) -> bool:
    """Whether the run's partial list ranks nearest-neighbour pairs first (older runs: no)."""
    settings = meta.get("settings")
    return isinstance(settings, dict) and settings.get("neighbours_first") is True


def _read_candidates(run: RunData, path: Path) -> None:
    document = _read_json(path)
    # Fields with a default may be missing from runs written before they existed.
    fields = AbsorptionCandidate._fields
    optional = AbsorptionCandidate._field_defaults
    try:
        raw = document["pairs"]
        run.candidates = [
            AbsorptionCandidate(**{f: pair[f] for f in fields if f in pair or f not in optional})
            for pair in raw
        ]
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{path} is damaged (not the partial method's pairs)") from None
    if not all(isinstance(c.parent, int) and isinstance(c.absorber, int) for c in run.candidates):
        raise UserError(f"{path} is damaged (latent ids that are not whole numbers)")
    run.candidates_meta = {k: v for k, v in document.items() if k != "pairs"}


def load_run(path: Path) -> RunData:
    """Read an absorb run directory, or raise a `UserError` saying why it is not one."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise UserError(f"--run {path}: no such directory")
    files = {kind: results_file(path, kind) for kind in FORMATS}
    pairs_path = path / PAIRS_JSON
    if not pairs_path.is_file() and not any(files.values()):
        raise UserError(
            f"--run {path} is not an absorb run directory: it holds none of {', '.join(RUN_FILES)}"
        )
    run = RunData(path=path, files=files)
    if cooccurrences := files[COOCCURRENCES]:
        _read_cooccurrences(run, cooccurrences)
    if effects := files[EFFECTS]:
        _read_effects_metadata(run, effects)
    if examples := files[TOP_EXAMPLES]:
        _read_examples(run, examples)
    if pairs_path.is_file():
        _read_pairs(run, pairs_path)
    if (path / PARTIAL_JSON).is_file():
        _read_candidates(run, path / PARTIAL_JSON)
    for name, attribute in (("summary.json", "summary"), ("manifest.json", "manifest")):
        if (path / name).is_file():
            value = _read_json(path / name)
            setattr(run, attribute, value if isinstance(value, dict) else {})
    widths = {
        len(run.firing_counts_e) if run.firing_counts_e is not None else None,
        run.examples.d_sae if run.examples is not None else None,
    } - {None}
    if len(widths) > 1:
        raise UserError(f"--run {path}: its co-occurrence counts and top examples differ in width")
    return run
