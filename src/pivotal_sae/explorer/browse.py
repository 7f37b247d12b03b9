"""What the Pairs and Latent pages (and their API twins) show, built from the --run data."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pivotal_sae.absorption.pair_records import LatentRecord
from pivotal_sae.errors import UserError
from pivotal_sae.explorer.engine import Explorer, LoadedSae, token_texts
from pivotal_sae.explorer.run_data import RunData
from pivotal_sae.explorer.schemas import Example, Latent, Pair, PairRef, PairSide, PairsPage

PAIR_KINDS = ("effect", "decoder")


class NotFound(LookupError):
    """A page or record that does not exist here (HTTP 404)."""


@dataclass
class Browser:
    """The explorer plus the open run, answering questions about latents and pairs."""

    explorer: Explorer
    run: RunData | None = None
    run_sae: str | None = None
    """Name of the loaded SAE whose latent ids the run counts."""

    def __post_init__(self) -> None:
        self._examples: Callable[[int], list[Example]] = functools.lru_cache(maxsize=4096)(
            self._decode_examples
        )

    def run_info(self) -> dict[str, Any] | None:
        if self.run is None:
            return None
        return {**self.run.describe(), "sae": self.run_sae}

    # ------------------------------------------------------------------ latents
    def latent(self, sae_name: str, index: int, n_examples: int | None = None) -> Latent:
        loaded = self.explorer.sae(sae_name)
        self.explorer.check_feature(loaded, index)
        info = Latent(
            sae=loaded.name,
            index=index,
            explanation=loaded.explanation(index),
            neuronpedia_url=loaded.url(index),
        )
        if self.run is not None and loaded.name == self.run_sae:
            info.firing_count = self.run.firing(index)
            info.tokens_counted = self.run.tokens_counted
            if info.firing_count is not None and info.tokens_counted:
                info.firing_frequency = info.firing_count / info.tokens_counted
            info.examples = self._examples(index)[:n_examples]
            info.pairs = [self._pair_ref(number, index) for number in self.run.pairs_with(index)]
        return info

    def _pair_ref(self, number: int, index: int) -> PairRef:
        assert self.run is not None
        record = self.run.pairs[number]
        return PairRef(
            rank=number + 1,
            partner=record.b.id if record.a.id == index else record.a.id,
            cosine_similarity=record.cosine_similarity,
            cooccurrence_count=record.cooccurrence_count,
            expected_cooccurrence=record.expected_cooccurrence,
        )

    def _decode_examples(self, index: int) -> list[Example]:
        if self.run is None or self.run.examples is None:
            return []
        tokenizer = self.explorer.lm.tokenizer
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        examples = []
        for example in self.run.examples.examples_for(index):
            kept = [k for k, t in enumerate(example.token_ids) if t >= 0]
            ids = [example.token_ids[k] for k in kept]
            text = tokenizer.decode(
                [t for t in ids if t not in special], clean_up_tokenization_spaces=True
            ).strip()
            examples.append(
                Example(
                    context_id=example.context_id,
                    max_activation=example.max_act,
                    tokens=token_texts(tokenizer, ids),
                    activations=[example.acts[k] for k in kept],
                    center=sum(1 for k in kept if k < example.center),
                    text=text,
                )
            )
        return examples

    # ------------------------------------------------------------------ pairs
    def pairs(self, kind: str = "effect", offset: int = 0, limit: int = 25) -> PairsPage:
        if self.run is None or self.run_sae is None:
            raise NotFound("no --run directory is open on this server")
        if kind not in PAIR_KINDS:
            raise UserError(f"kind must be one of {', '.join(PAIR_KINDS)}, not {kind!r}")
        records = self.run.pairs if kind == "effect" else self.run.decoder_pairs
        loaded = self.explorer.sae(self.run_sae)
        page = [
            Pair(
                rank=offset + n + 1,
                a=self._side(record.a, loaded),
                b=self._side(record.b, loaded),
                cosine_similarity=record.cosine_similarity,
                cooccurrence_count=record.cooccurrence_count,
                expected_cooccurrence=record.expected_cooccurrence,
                p_at_most_observed=record.p_at_most_observed,
            )
            for n, record in enumerate(records[offset : offset + limit])
        ]
        return PairsPage(sae=loaded.name, kind=kind, total=len(records), offset=offset, pairs=page)

    def _side(self, side: LatentRecord, loaded: LoadedSae) -> PairSide:
        firing = side.firing_count
        if firing is None and self.run is not None:
            firing = self.run.firing(side.id)
        return PairSide(
            id=side.id,
            explanation=side.explanation or loaded.explanation(side.id),
            url=side.url or loaded.url(side.id),
            firing_count=firing,
            ablation_count=side.ablation_count,
        )
