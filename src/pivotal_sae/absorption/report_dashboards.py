"""The dashboards of report.html's latents: `dashboard.py`'s panels as the shared template
(`render/templates/_dashboard.html`) reads them, from what the pairs stage holds.

The run's files give the correlated latents (co-occurrence counts) and the reader latents each
ablation moves (effects); the activation histogram, top tokens and quantile examples need an
`ActivationSample`, which `absorb` takes from the start of its corpus (`pairs` on its own has no
model, and its report says so). Logit effects need the model's unembedding: the explorer's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from types import SimpleNamespace
from typing import Any

import torch

from pivotal_sae.absorption import dashboard as dash

TokenText = Callable[[Sequence[int]], list[str]]
NO_SAMPLE = (
    "No activation sample in this run: `pivotal-sae serve --run DIR` shows the histogram, top "
    "tokens and quantile examples."
)
NO_LOGITS = "Logit effects need the model's unembedding: see this latent in the explorer."


def _spell(token_text: TokenText | None, ids: Sequence[int]) -> list[str]:
    if token_text is None:
        return [f"\u27e8{i}\u27e9" for i in ids]
    return [t.replace("\n", "↵").replace("\t", "⇥") for t in token_text(list(ids))]


def _sample_panels(
    d: SimpleNamespace, sample: dash.ActivationSample, latent: int, token_text: TokenText | None
) -> None:
    hist = dash.activation_histogram(sample, latent)
    d.histogram = hist
    d.sample_contexts, d.sample_tokens = sample.contexts, sample.tokens_counted
    if not hist.counts:
        d.notes["sample"] = f"It does not fire on the {sample.tokens_counted:,} sample tokens."
        return
    stats = dash.top_tokens(sample, latent, k=8)
    spelled = _spell(token_text, [s.token_id for s in stats])
    d.top_tokens = [
        SimpleNamespace(token=t.strip(), count=s.times, mean_activation=s.mean_activation)
        for s, t in zip(stats, spelled, strict=True)
    ]
    for band in dash.quantile_examples(sample, latent, n_bands=4, per_band=1):
        examples = [
            SimpleNamespace(
                tokens=_spell(token_text, w.token_ids),
                activations=w.acts,
                center=w.center,
                max_activation=w.activation,
            )
            for w in band.examples
        ]
        d.quantiles.append(SimpleNamespace(**band._asdict() | {"examples": examples}))


def report_dashboards(
    latents: Iterable[int],
    *,
    counter: Any = None,
    effects: tuple[Any, torch.Tensor] | None = None,
    sample: dash.ActivationSample | None = None,
    token_text: TokenText | None = None,
    reader_label: str | None = None,
) -> dict[int, SimpleNamespace]:
    """Latent → its dashboard, as `_dashboard.html` reads one. `counter` is a co-occurrence
    counter (with `lookup`, `firing_counts_e`, `tokens_counted`); `effects` is
    (effects_eE, how_often_activated_e)."""
    out = {}
    firing_e = counter.firing_counts_e.cpu() if counter is not None else torch.zeros(0)
    for latent in dict.fromkeys(latents):
        d = SimpleNamespace(
            histogram=None, top_tokens=[], quantiles=[], reader_effects=None,
            correlated=None, logit_effects=None, notes={"logit_effects": NO_LOGITS},
            sample_contexts=None, sample_tokens=None,
        )  # fmt: skip
        if sample is not None and latent < sample.d_sae:
            _sample_panels(d, sample, latent, token_text)
        else:
            d.notes["sample"] = NO_SAMPLE
        if effects is not None:
            moved = dash.reader_effects(*effects, latent, k=5)
            if moved is None:
                d.notes["reader_effects"] = "It was never ablated in this run."
            else:
                d.reader_effects = SimpleNamespace(
                    ablations=int(effects[1][latent]), lowered=moved[0], raised=moved[1],
                    reader_sae=reader_label,
                )  # fmt: skip
        else:
            d.notes["reader_effects"] = "This run has no ablation effects."
        if counter is not None and counter.tokens_counted:
            e = counter.d_sae
            row_e = counter.lookup(torch.full((e,), latent), torch.arange(e)).cpu()
            d.correlated = dash.correlated_latents(
                row_e, firing_e, latent, counter.tokens_counted, k=6
            )
        else:
            d.notes["correlated"] = "This run has no co-occurrence counts."
        out[latent] = d
    return out
