"""What the Pairs and Latent pages (and their API twins) show, built from the --run data."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from pivotal_sae.absorption import dashboard as dash
from pivotal_sae.absorption.association import cooccurrence_clusters
from pivotal_sae.absorption.dashboard import ActivationSample
from pivotal_sae.absorption.pair_records import LatentRecord
from pivotal_sae.errors import UserError
from pivotal_sae.explorer.engine import Explorer, LoadedSae, token_texts
from pivotal_sae.explorer.run_data import RunData
from pivotal_sae.explorer.schemas import (
    Association,
    AssociationsOut,
    Cluster,
    ClustersOut,
    Dashboard,
    Example,
    HistogramOut,
    Latent,
    LogitEffectOut,
    LogitEffects,
    MovedLatent,
    Pair,
    PairRef,
    PairSide,
    PairsPage,
    QuantileBandOut,
    ReaderEffects,
    TopToken,
)

PAIR_KINDS = ("effect", "decoder")
#: Clusters need the dense E×E counts: 8·E² bytes (0.5 GB at 8,192 latents).
MAX_CLUSTER_LATENTS = 8192


class NotFound(LookupError):
    """A page or record that does not exist here (HTTP 404)."""


@dataclass
class Browser:
    """The explorer plus the open run, answering questions about latents and pairs."""

    explorer: Explorer
    run: RunData | None = None
    run_sae: str | None = None
    """Name of the loaded SAE whose latent ids the run counts."""
    sample_contexts: int = 128
    """Contexts of the dashboards' activation sample."""
    sample_tokens: int = 64
    """Tokens per sample context."""

    def __post_init__(self) -> None:
        self._samples: dict[str, ActivationSample] = {}
        self._sample_names: dict[str, str] = {}
        self._clusters: dict[tuple[float, int], list[Cluster]] = {}
        self._dense_counts: torch.Tensor | None = None
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
            examples.append(
                self._example(
                    example.context_id,
                    example.max_act,
                    [example.token_ids[k] for k in kept],
                    [example.acts[k] for k in kept],
                    sum(1 for k in kept if k < example.center),
                    special,
                )
            )
        return examples

    def _example(
        self,
        context_id: int,
        max_activation: float,
        ids: list[int],
        acts: list[float],
        center: int,
        special: set[int],
    ) -> Example:
        tokenizer = self.explorer.lm.tokenizer
        text = tokenizer.decode(
            [t for t in ids if t not in special], clean_up_tokenization_spaces=True
        ).strip()
        return Example(
            context_id=context_id,
            max_activation=max_activation,
            tokens=token_texts(tokenizer, ids),
            activations=acts,
            center=center,
            text=text,
        )

    # ------------------------------------------------------------------ dashboards
    def sample(self, loaded: LoadedSae) -> ActivationSample:
        """The SAE's activation sample, computed at first use and kept."""
        if loaded.name not in self._samples:
            self._samples[loaded.name] = self.explorer.activation_sample(
                loaded, self.sample_contexts, self.sample_tokens, self._run_corpus(loaded)
            )
        return self._samples[loaded.name]

    def _run_corpus(self, loaded: LoadedSae) -> Any:
        """The run's own corpus for the run's SAE when it can be read here (the embedded one,
        or a local file or folder still present), else None: the embedded corpus."""
        if self.run is None or loaded.name != self.run_sae:
            return None
        described = self.run.metadata.get("cooccurrences", {}).get("corpus")
        name = described.get("corpus") if isinstance(described, dict) else None
        if not isinstance(name, str) or name.startswith("hf:") or name == "sotu":
            return None  # a hub dataset would be streamed over the network: not here
        from pivotal_sae.lm.corpus import open_corpus

        try:
            return open_corpus(name)
        except UserError:
            return None

    def dashboard(self, sae_name: str, index: int) -> Dashboard:
        loaded = self.explorer.sae(sae_name)
        self.explorer.check_feature(loaded, index)
        out = Dashboard(sae=loaded.name, index=index)
        if self.sample_contexts > 0:
            sample = self.sample(loaded)
            out.sample_contexts, out.sample_tokens = sample.contexts, sample.tokens_counted
            out.sample_corpus = self._sample_names.setdefault(
                loaded.name, getattr(self._run_corpus(loaded), "name", "sotu")
            )
            self._sample_panels(out, sample, index)
        else:
            out.notes["sample"] = (
                "The server runs with --dashboard-contexts 0: no activation sample, so no "
                "histogram, top tokens or quantile examples."
            )
        self._run_panels(out, loaded, index)
        self._logit_panel(out, loaded, index)
        return out

    def _sample_panels(self, out: Dashboard, sample: ActivationSample, index: int) -> None:
        tokenizer = self.explorer.lm.tokenizer
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        hist = dash.activation_histogram(sample, index)
        out.histogram = HistogramOut(edges=hist.edges, counts=hist.counts, silent=hist.silent)
        if not hist.counts:
            out.notes["sample"] = (
                f"Latent {index} does not fire on the {sample.tokens_counted:,} tokens of the "
                f"sample ({sample.contexts:,} contexts from the start of the embedded corpus)."
            )
            return
        stats = dash.top_tokens(sample, index, k=12)
        pieces = tokenizer.convert_ids_to_tokens([s.token_id for s in stats])
        out.top_tokens = [
            TopToken(token_id=s.token_id, token=str(p), count=s.times,
                     mean_activation=s.mean_activation)
            for s, p in zip(stats, pieces, strict=True)
        ]  # fmt: skip
        for band in dash.quantile_examples(sample, index, n_bands=4, per_band=2):
            examples = [
                self._example(w.context_id, w.activation, w.token_ids, w.acts, w.center, special)
                for w in band.examples
            ]
            out.quantiles.append(
                QuantileBandOut(low=band.low, high=band.high, share=band.share, examples=examples)
            )

    def _run_panels(self, out: Dashboard, loaded: LoadedSae, index: int) -> None:
        if self.run is None or loaded.name != self.run_sae:
            why = "needs a --run directory made with this SAE"
            out.notes["reader_effects"] = out.notes["correlated"] = why
            return
        effects = self.run.effects()
        if effects is None:
            out.notes["reader_effects"] = "the run has no ablation effects"
        else:
            effects_eE, how_often_e = effects
            moved = dash.reader_effects(effects_eE, how_often_e, index, k=6)
            if moved is None:
                out.notes["reader_effects"] = f"latent {index} was never ablated in this run"
            else:
                reader = next((s.name for s in self.explorer.saes.values()
                               if s.role == "reader"), None)  # fmt: skip
                out.reader_effects = ReaderEffects(
                    reader_sae=reader,
                    ablations=int(how_often_e[index]),
                    lowered=[MovedLatent(latent=m.latent, mean_effect=m.mean_effect)
                             for m in moved[0]],
                    raised=[MovedLatent(latent=m.latent, mean_effect=m.mean_effect)
                            for m in moved[1]],
                )  # fmt: skip
        try:
            out.correlated = self.associations(loaded.name, index, k=8).partners
        except NotFound as exc:
            out.notes["correlated"] = str(exc)

    def _logit_panel(self, out: Dashboard, loaded: LoadedSae, index: int) -> None:
        unembed_VM, why = self.explorer.unembedding()
        if unembed_VM is None:
            out.notes["logit_effects"] = why
            return
        direction_M = loaded.sae.W_dec[index].detach().float().cpu()
        promoted, suppressed = dash.logit_effects(direction_M, unembed_VM, k=10)
        tokenizer = self.explorer.lm.tokenizer

        def listed(effects: list[dash.LogitEffect]) -> list[LogitEffectOut]:
            pieces = tokenizer.convert_ids_to_tokens([e.token_id for e in effects])
            return [LogitEffectOut(token_id=e.token_id, token=str(p), value=e.value)
                    for e, p in zip(effects, pieces, strict=True)]  # fmt: skip

        out.logit_effects = LogitEffects(promoted=listed(promoted), suppressed=listed(suppressed))

    # ------------------------------------------------------------------ co-occurrence
    def _counts(self, sae_name: str) -> tuple[LoadedSae, Any]:
        loaded = self.explorer.sae(sae_name)
        if self.run is None or loaded.name != self.run_sae:
            raise NotFound(f"co-occurrence counts need a --run directory made with {sae_name}")
        counter = self.run.counter()
        if counter is None or not self.run.tokens_counted:
            raise NotFound("the run has no readable co-occurrence counts (or they are too large)")
        return loaded, counter

    def associations(self, sae_name: str, index: int, k: int = 20) -> AssociationsOut:
        loaded, counter = self._counts(sae_name)
        self.explorer.check_feature(loaded, index)
        assert self.run is not None and self.run.tokens_counted is not None
        e = counter.d_sae
        row_e = counter.lookup(torch.full((e,), index), torch.arange(e))
        firing_e = counter.firing_counts_e.cpu()
        partners = dash.correlated_latents(row_e, firing_e, index, self.run.tokens_counted, k)
        return AssociationsOut(
            sae=loaded.name,
            index=index,
            tokens_counted=self.run.tokens_counted,
            firing_count=int(firing_e[index]),
            partners=[Association(**p._asdict()) for p in partners],
        )

    def clusters(self, threshold: float = 0.3, min_size: int = 2) -> ClustersOut:
        if self.run_sae is None:
            raise NotFound("co-occurrence clusters need a --run directory")
        loaded, counter = self._counts(self.run_sae)
        if counter.d_sae > MAX_CLUSTER_LATENTS:
            raise NotFound(
                f"clusters are computed here for at most {MAX_CLUSTER_LATENTS:,} latents; this "
                f"SAE has {counter.d_sae:,} (use absorption.association.cooccurrence_clusters)"
            )
        key = (threshold, min_size)
        if key not in self._clusters:
            if self._dense_counts is None:  # 8·E² bytes, kept: each new threshold reuses it
                self._dense_counts = counter.to_dense().cpu()
            counts_ee = self._dense_counts
            firing = counts_ee.diagonal().tolist()
            self._clusters[key] = [
                Cluster(latents=group, firing_counts=[int(firing[i]) for i in group])
                for group in cooccurrence_clusters(counts_ee, threshold, min_size)
            ]
        return ClustersOut(
            sae=loaded.name, threshold=threshold, min_size=min_size, clusters=self._clusters[key]
        )

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
