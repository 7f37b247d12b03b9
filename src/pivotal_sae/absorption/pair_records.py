"""`pairs.json`: the typed records of a report's pairs, written by `report.py` and read back by
the explorer.

The layout is the original scripts' (each pair names its two latents `ablator1`/`ablator2`, or
`latent1`/`latent2` for decoder-similarity pairs), with the co-occurrence statistics added:

    {"meta": {...},
     "pairs": [{"ablator1": {"id", "explanation", "url", "firing_count", "ablation_count"},
                "ablator2": {...}, "cosine_similarity", "cooccurrence_count",
                "expected_cooccurrence", "p_at_most_observed"}, ...],
     "decoder_pairs_meta": {...}, "decoder_pairs": [{"latent1": ..., "latent2": ..., ...}]}

Files written before these records existed have the same keys and read back the same; a key
they lack reads as None.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pivotal_sae.absorption.explanations import Explanations, neuronpedia_url
from pivotal_sae.absorption.pairs import PairSearch
from pivotal_sae.errors import UserError

EFFECT_KEYS = ("ablator1", "ablator2")
"""How `pairs.json` names the two latents of an effect pair."""
DECODER_KEYS = ("latent1", "latent2")
"""... and of a decoder-similarity pair."""


@dataclass(frozen=True)
class LatentRecord:
    """One latent of a pair."""

    id: int
    """Its index in the ablator SAE."""
    explanation: str | None = None
    """Its Neuronpedia explanation, if the run had one."""
    url: str | None = None
    """Its Neuronpedia page, if the SAE has a Neuronpedia id."""
    firing_count: int | None = None
    """Token positions where it fired (> 0) in the co-occurrence pass."""
    ablation_count: int | None = None
    """Contexts in which it was ablated (effect pairs only)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "explanation": self.explanation,
            "url": self.url,
            "firing_count": self.firing_count,
            "ablation_count": self.ablation_count,
        }

    @classmethod
    def from_json(cls, raw: object) -> LatentRecord:
        """A ValueError if `raw` is not a latent's object with an integer `id`."""
        if not isinstance(raw, Mapping) or not _is_int(raw.get("id")):
            raise ValueError("a latent needs an integer 'id'")
        return cls(
            id=int(raw["id"]),
            explanation=_optional(raw.get("explanation"), str),
            url=_optional(raw.get("url"), str),
            firing_count=_optional(raw.get("firing_count"), int),
            ablation_count=_optional(raw.get("ablation_count"), int),
        )


@dataclass(frozen=True)
class PairRecord:
    """One reported pair: two latents, how alike they are and how often they fired together."""

    a: LatentRecord
    """The first latent (the `just_these` latent when one was asked for, else the lower id)."""
    b: LatentRecord
    cosine_similarity: float
    """Cosine of their ablation-effect rows (effect pairs) or decoder rows (decoder pairs)."""
    cooccurrence_count: int | None = None
    """Token positions where both fired."""
    expected_cooccurrence: float | None = None
    """f_a · f_b / N: the mean count if the two fired independently (N tokens counted)."""
    p_at_most_observed: float | None = None
    """Poisson P(count <= observed | mean = expected): small means 'rarer together than chance'."""

    def to_json(self, keys: tuple[str, str] = EFFECT_KEYS) -> dict[str, Any]:
        return {
            keys[0]: self.a.to_json(),
            keys[1]: self.b.to_json(),
            "cosine_similarity": self.cosine_similarity,
            "cooccurrence_count": self.cooccurrence_count,
            "expected_cooccurrence": self.expected_cooccurrence,
            "p_at_most_observed": self.p_at_most_observed,
        }

    @classmethod
    def from_json(cls, raw: object, keys: tuple[str, str] = EFFECT_KEYS) -> PairRecord:
        """A ValueError if `raw` lacks the two latents named by `keys`."""
        if not isinstance(raw, Mapping):
            raise ValueError("a pair is a JSON object")
        cosine = raw.get("cosine_similarity", 0.0)
        return cls(
            a=LatentRecord.from_json(raw.get(keys[0])),
            b=LatentRecord.from_json(raw.get(keys[1])),
            cosine_similarity=float(cosine) if _is_number(cosine) else 0.0,
            cooccurrence_count=_optional(raw.get("cooccurrence_count"), int),
            expected_cooccurrence=_optional(raw.get("expected_cooccurrence"), float),
            p_at_most_observed=_optional(raw.get("p_at_most_observed"), float),
        )


@dataclass
class PairsDocument:
    """The whole of `pairs.json`."""

    meta: dict[str, Any] = field(default_factory=dict)
    """The run's summary (model, SAEs, corpus, ...) and the search's counts and settings:
    `count`, `n_matching`, `n_rows_compared`, `settings`, `ablator_sae_id`,
    `explanations_source`."""
    pairs: list[PairRecord] = field(default_factory=list)
    """Effect pairs, best first."""
    decoder_pairs_meta: dict[str, Any] | None = None
    """`count`, `n_matching` and `settings` of the decoder-similarity search, if one ran."""
    decoder_pairs: list[PairRecord] | None = None
    """Decoder-similarity pairs, best first, if that search ran."""

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "meta": self.meta,
            "pairs": [p.to_json(EFFECT_KEYS) for p in self.pairs],
        }
        if self.decoder_pairs is not None:
            document["decoder_pairs_meta"] = self.decoder_pairs_meta or {}
            document["decoder_pairs"] = [p.to_json(DECODER_KEYS) for p in self.decoder_pairs]
        return document

    @classmethod
    def from_json(cls, raw: object, path: Path | str = "pairs.json") -> PairsDocument:
        """A UserError if `raw` has no `pairs` list or an effect pair lacks its latents' ids;
        decoder pairs that lack them are left out (as the explorer always did)."""
        if not isinstance(raw, Mapping) or not isinstance(raw.get("pairs"), list):
            raise UserError(f"{path} is not an absorb report's pairs.json (no 'pairs' list)")
        try:
            pairs = [PairRecord.from_json(p, EFFECT_KEYS) for p in raw["pairs"]]
        except ValueError:
            raise UserError(f"{path}: some pairs lack ablator1/ablator2 ids") from None
        decoder_pairs = None
        if isinstance(raw.get("decoder_pairs"), list):
            decoder_pairs = []
            for entry in raw["decoder_pairs"]:
                try:
                    decoder_pairs.append(PairRecord.from_json(entry, DECODER_KEYS))
                except ValueError:
                    continue
        meta, decoder_meta = raw.get("meta"), raw.get("decoder_pairs_meta")
        return cls(
            meta=dict(meta) if isinstance(meta, Mapping) else {},
            pairs=pairs,
            decoder_pairs_meta=dict(decoder_meta) if isinstance(decoder_meta, Mapping) else None,
            decoder_pairs=decoder_pairs,
        )

    @classmethod
    def read(cls, path: Path) -> PairsDocument:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{path} is not valid JSON ({exc})") from None
        return cls.from_json(raw, path)


def pair_records(
    search: PairSearch, explanations: Explanations | None, neuronpedia_id: str | None
) -> list[PairRecord]:
    """The records of a search's pairs, with each latent's explanation and Neuronpedia link."""

    def latent(index: int, firing: int, ablations: int | None) -> LatentRecord:
        return LatentRecord(
            id=index,
            explanation=explanations.get(index) if explanations else None,
            url=neuronpedia_url(neuronpedia_id, index) if neuronpedia_id else None,
            firing_count=firing,
            ablation_count=ablations,
        )

    return [
        PairRecord(
            a=latent(p.latent_a, p.firing_a, p.ablations_a),
            b=latent(p.latent_b, p.firing_b, p.ablations_b),
            cosine_similarity=p.cosine,
            cooccurrence_count=p.cooccurrence,
            expected_cooccurrence=p.expected_cooccurrence,
            p_at_most_observed=p.p_at_most_observed,
        )
        for p in search.pairs
    ]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _optional(value: object, kind: type) -> Any:
    """`value` as `kind` when it is one (ints pass as floats), else None."""
    if kind is str:
        return value if isinstance(value, str) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if kind is int:
        return value if isinstance(value, int) else None
    return float(value)
