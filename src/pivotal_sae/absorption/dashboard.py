"""A latent's dashboard, as SAEDashboard and Neuronpedia show one, computed from tensors.

Panels and where their numbers come from:
- activation histogram, examples from activation quantiles, top tokens: an `ActivationSample`
  (every non-zero activation of every latent over a sample of contexts, kept sparse);
- top examples: the run's `TopExamples` (the co-occurrence pass keeps them);
- reader latents its ablation moves most: the latent's row of the run's `effects_eE`, divided by
  how often it was ablated (effect = reader activation at baseline minus after the ablation);
- correlated latents: its row of the co-occurrence counts, as Jaccard, lift and PMI with a 95 %
  interval on lift (`association.py`);
- logit effects (causal LMs): its decoder direction through the unembedding, the tokens it
  promotes and suppresses most (no final norm: the direct path, as SAEDashboard shows it).

Everything here is plain tensor arithmetic; turning token ids into text is the caller's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from pivotal_sae.absorption.association import associations

#: Contexts of the sample a dashboard's histogram, top tokens and quantile examples come from.
SAMPLE_CONTEXTS = 128


class Histogram(NamedTuple):
    """Counts of the latent's non-zero activations in equal-width bins from 0 to the largest."""

    edges: list[float]
    """n_bins + 1 bin edges."""
    counts: list[int]
    silent: int
    """Counted tokens where the latent is 0 (left out of the bins)."""


class TokenStat(NamedTuple):
    token_id: int
    times: int
    """Tokens of this id the latent fires on."""
    mean_activation: float


class Window(NamedTuple):
    """Tokens around one position of a sample context, with the latent's activation at each."""

    context_id: int
    token_ids: list[int]
    acts: list[float]
    center: int
    """Index of the chosen position within the window."""
    activation: float
    """The latent's activation at the chosen position."""


class QuantileBand(NamedTuple):
    low: float
    high: float
    """Activations in [low, high] (the band's smallest and largest)."""
    share: float
    """Share of the latent's firings in this band."""
    examples: list[Window]


class Moved(NamedTuple):
    latent: int
    mean_effect: float
    """Mean over ablations of (reader activation at baseline − after ablation)."""


class Partner(NamedTuple):
    latent: int
    cooccurrences: int
    jaccard: float
    lift: float
    pmi: float
    lift_low: float
    lift_high: float


class LogitEffect(NamedTuple):
    token_id: int
    value: float


@dataclass
class ActivationSample:
    """Every non-zero activation of every latent on the counted tokens of some contexts.

    Entries are sorted by latent (`offsets_E1[e]:offsets_E1[e + 1]` are latent e's), each with
    its flat position `n * S + s` and its value, so one latent's panels never touch the others.
    """

    token_ids_NS: torch.Tensor
    """Token ids of the contexts; -1 on padding."""
    counted_NS: torch.Tensor
    """Positions that count (real tokens, BOS excluded unless kept)."""
    flat_T: torch.Tensor
    values_T: torch.Tensor
    offsets_E1: torch.Tensor

    @property
    def d_sae(self) -> int:
        return len(self.offsets_E1) - 1

    @property
    def tokens_counted(self) -> int:
        return int(self.counted_NS.sum())

    @property
    def contexts(self) -> int:
        return self.token_ids_NS.shape[0]

    def entries(self, latent: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(flat positions, values) of one latent, in position order."""
        start, end = int(self.offsets_E1[latent]), int(self.offsets_E1[latent + 1])
        return self.flat_T[start:end], self.values_T[start:end]

    @classmethod
    def from_batches(
        cls,
        batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
        d_sae: int,
    ) -> ActivationSample:
        """From (acts_BSE, token_ids_BS with -1 on padding, counted_BS) batches of one width S."""
        tokens, counted, flats, latents, values = [], [], [], [], []
        row = 0
        for acts_BSE, token_ids_BS, counted_BS in batches:
            b, s, _ = acts_BSE.shape
            live_BSE = (acts_BSE > 0) & counted_BS.bool()[:, :, None]
            n, p, e = live_BSE.nonzero(as_tuple=True)
            flats.append((n + row) * s + p)
            latents.append(e)
            values.append(acts_BSE[n, p, e].float())
            tokens.append(token_ids_BS.long())
            counted.append(counted_BS.bool())
            row += b
        if not tokens:
            raise ValueError("an activation sample needs at least one batch")
        latent_T = torch.cat(latents)
        flat_T = torch.cat(flats)
        # Sort by latent, then position: a stable sort of position-ordered entries by latent.
        by_position = flat_T.argsort(stable=True)
        by_latent = latent_T[by_position].argsort(stable=True)
        order = by_position[by_latent]
        offsets = torch.zeros(d_sae + 1, dtype=torch.int64)
        offsets[1:] = torch.bincount(latent_T, minlength=d_sae).cumsum(0)
        return cls(
            token_ids_NS=torch.cat(tokens),
            counted_NS=torch.cat(counted),
            flat_T=flat_T[order],
            values_T=torch.cat(values)[order],
            offsets_E1=offsets,
        )


def collect_sample(lm: Any, sae: Any, contexts: Any, batch_size: int = 16) -> ActivationSample:
    """Run `lm` over `contexts` (an `lm.contexts.Contexts`) and keep `sae`'s activations."""

    def batches() -> Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        with torch.inference_mode():
            for batch in contexts.batches(batch_size):
                hook = sae.hook_name
                hidden_BSM = lm.activations(batch.input_ids_BS, batch.attention_mask_BS, [hook])
                acts_BSE = sae.encode(hidden_BSM[hook].to(sae.dtype)).float().cpu()
                ids_BS = batch.input_ids_BS.masked_fill(batch.attention_mask_BS == 0, -1)
                yield acts_BSE, ids_BS, batch.count_mask_BS

    return ActivationSample.from_batches(batches(), sae.d_sae)


def sample_of_contexts(
    lm: Any, sae: Any, contexts: Any, n_contexts: int = SAMPLE_CONTEXTS
) -> ActivationSample:
    """The sample over the first `n_contexts` of a run's `contexts` (same corpus and length)."""
    from pivotal_sae.lm.contexts import Contexts

    n = min(n_contexts, contexts.n_prompts or n_contexts)
    first = Contexts(
        contexts.corpus, contexts.tokenizer, contexts.seq_len, n, keep_bos=contexts.keep_bos
    )
    return collect_sample(lm, sae, first)


# ---------------------------------------------------------------------- sample panels
def activation_histogram(sample: ActivationSample, latent: int, n_bins: int = 24) -> Histogram:
    _, values_T = sample.entries(latent)
    silent = sample.tokens_counted - len(values_T)
    if len(values_T) == 0:
        return Histogram(edges=[], counts=[], silent=silent)
    top = float(values_T.max())
    width = top / n_bins
    bins_T = (values_T / width).floor().long().clamp(0, n_bins - 1)
    counts = torch.bincount(bins_T, minlength=n_bins).tolist()
    return Histogram([width * k for k in range(n_bins + 1)], counts, silent)


def top_tokens(sample: ActivationSample, latent: int, k: int = 10) -> list[TokenStat]:
    """The token ids the latent fires on most often (ties: higher mean activation first)."""
    flat_T, values_T = sample.entries(latent)
    if len(flat_T) == 0:
        return []
    ids_T = sample.token_ids_NS.reshape(-1)[flat_T]
    unique_U, inverse_T = ids_T.unique(return_inverse=True)
    counts_U = torch.bincount(inverse_T, minlength=len(unique_U))
    sums_U = torch.zeros(len(unique_U), dtype=torch.float64).index_add_(
        0, inverse_T, values_T.double()
    )
    means_U = sums_U / counts_U
    stats = [
        TokenStat(int(t), int(c), float(m))
        for t, c, m in zip(unique_U.tolist(), counts_U.tolist(), means_U.tolist(), strict=True)
    ]
    stats.sort(key=lambda s: (-s.times, -s.mean_activation, s.token_id))
    return stats[:k]


def window_at(
    sample: ActivationSample, latent: int, flat: int, before: int = 8, after: int = 4
) -> Window:
    """The window around flat position `flat`, cut at the context's ends and its padding."""
    s = sample.token_ids_NS.shape[1]
    n, p = divmod(flat, s)
    flat_T, values_T = sample.entries(latent)
    start = n * s + max(0, p - before)
    end = n * s + min(s, p + after + 1)
    row_ids = sample.token_ids_NS.reshape(-1)[start:end].tolist()
    acts = [0.0] * (end - start)
    inside = (flat_T >= start) & (flat_T < end)
    for position, value in zip(flat_T[inside].tolist(), values_T[inside].tolist(), strict=True):
        acts[position - start] = value
    kept = [k for k, t in enumerate(row_ids) if t >= 0]
    center = flat - start
    value = acts[center]
    return Window(
        context_id=n,
        token_ids=[row_ids[k] for k in kept],
        acts=[acts[k] for k in kept],
        center=sum(1 for k in kept if k < center),
        activation=value,
    )


def quantile_examples(
    sample: ActivationSample,
    latent: int,
    n_bands: int = 4,
    per_band: int = 2,
    before: int = 8,
    after: int = 4,
) -> list[QuantileBand]:
    """Firings split by rank into `n_bands` bands of equal size, strongest first; from each,
    `per_band` examples evenly spread over the band (its strongest, then lower ones)."""
    flat_T, values_T = sample.entries(latent)
    total = len(values_T)
    if total == 0:
        return []
    order = values_T.argsort(descending=True, stable=True)
    bands = []
    for b in range(min(n_bands, total)):
        lo, hi = b * total // min(n_bands, total), (b + 1) * total // min(n_bands, total)
        ranks = order[lo:hi]
        picks = sorted({lo + (hi - lo) * j // per_band for j in range(per_band)})
        examples = [window_at(sample, latent, int(flat_T[order[r]]), before, after) for r in picks]
        band_values = values_T[ranks]
        bands.append(
            QuantileBand(
                low=float(band_values.min()),
                high=float(band_values.max()),
                share=(hi - lo) / total,
                examples=examples,
            )
        )
    return bands


# ---------------------------------------------------------------------- run panels
def reader_effects(
    effects_eE: Any, how_often_e: torch.Tensor, latent: int, k: int = 6
) -> tuple[list[Moved], list[Moved]] | None:
    """(reader latents its ablation lowers most, those it raises most), by mean effect; None
    when the latent was never ablated."""
    times = int(how_often_e[latent])
    if times == 0:
        return None
    # Indexed by a tensor of ids, so `ablation.AblationEffects` (rows kept sparse) works too.
    mean_E = effects_eE[torch.tensor([latent])][0].double().cpu() / times
    lowered = [Moved(int(i), float(mean_E[i])) for i in mean_E.argsort(descending=True)[:k]]
    raised = [Moved(int(i), float(mean_E[i])) for i in mean_E.argsort()[:k]]
    return [m for m in lowered if m.mean_effect > 0], [m for m in raised if m.mean_effect < 0]


def correlated_latents(
    cooccurrences_e: torch.Tensor,
    firing_counts_e: torch.Tensor,
    latent: int,
    tokens: int,
    k: int = 8,
) -> list[Partner]:
    """The latents that fire with it most, by Jaccard (itself and never-co-occurring left out)."""
    a = associations(cooccurrences_e, firing_counts_e, latent, tokens)
    jaccard_e = torch.nan_to_num(a.jaccard_e, nan=-1.0)
    jaccard_e[latent] = -1.0
    jaccard_e[a.cooccurrences_e <= 0] = -1.0
    order = jaccard_e.argsort(descending=True, stable=True)[:k]
    return [
        Partner(
            latent=int(i),
            cooccurrences=int(a.cooccurrences_e[i]),
            jaccard=float(a.jaccard_e[i]),
            lift=float(a.lift_e[i]),
            pmi=float(a.pmi_e[i]),
            lift_low=float(a.lift_low_e[i]),
            lift_high=float(a.lift_high_e[i]),
        )
        for i in order.tolist()
        if jaccard_e[i] >= 0
    ]


def logit_effects(
    direction_M: torch.Tensor, unembed_VM: torch.Tensor, k: int = 10
) -> tuple[list[LogitEffect], list[LogitEffect]]:
    """(tokens the direction promotes most, tokens it suppresses most): `unembed_VM @ d`."""
    logits_V = unembed_VM.float() @ direction_M.float()
    top = logits_V.topk(min(k, len(logits_V)))
    bottom = (-logits_V).topk(min(k, len(logits_V)))
    promoted = [LogitEffect(int(i), float(v)) for v, i in zip(*top, strict=True)]
    suppressed = [LogitEffect(int(i), -float(v)) for v, i in zip(*bottom, strict=True)]
    return promoted, suppressed
