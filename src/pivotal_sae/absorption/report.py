"""The report of an absorption search: pairs.json, pairs.csv, histogram.png and report.html.

`report.html` is one self-contained page rendered from the explorer's own templates and
stylesheet (`pivotal_sae.render`: the pair cards are the same markup, the CSS is inlined, the
histogram inlined as a data URI; no scripts, no external assets). Every piece of text from
outside (explanations, tokens, metadata) is HTML-escaped, so a token such as `<script>` shows as
text. `pairs.json` holds `PairRecord`s (`pair_records.py`).
"""

from __future__ import annotations

import base64
import csv
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from pivotal_sae.absorption.dashboard import ActivationSample
from pivotal_sae.absorption.examples import Example, TopExamples
from pivotal_sae.absorption.explanations import Explanations, neuronpedia_url
from pivotal_sae.absorption.finder import AbsorptionCandidate, CandidateSearch
from pivotal_sae.absorption.pair_records import (
    LatentRecord,
    PairRecord,
    PairsDocument,
    pair_records,
)
from pivotal_sae.absorption.pairs import PairSearch
from pivotal_sae.absorption.report_dashboards import report_dashboards
from pivotal_sae.render import make_environment, stylesheet
from pivotal_sae.runs import atomic_write_bytes, atomic_write_json, atomic_write_text

TokenText = Callable[[Sequence[int]], list[str]]
CSV_FIELDS = (
    "rank", "latent_a", "latent_b", "cosine", "cooccurrence", "expected_cooccurrence",
    "p_at_most_observed", "firing_a", "firing_b", "ablations_a", "ablations_b",
    "explanation_a", "explanation_b", "url_a", "url_b",
)  # fmt: skip


def _url(neuronpedia_id: str | None, index: int) -> str | None:
    return neuronpedia_url(neuronpedia_id, index) if neuronpedia_id else None


def write_csv(path: Path, search: PairSearch, explanations, neuronpedia_id) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for rank, pair in enumerate(search.pairs, start=1):
        row: dict[str, object] = {k: v for k, v in pair.as_dict().items() if k in CSV_FIELDS}
        for side, index in (("a", pair.latent_a), ("b", pair.latent_b)):
            row[f"explanation_{side}"] = (explanations.get(index) if explanations else None) or ""
            row[f"url_{side}"] = _url(neuronpedia_id, index) or ""
        writer.writerow({"rank": rank, **row})
    atomic_write_text(path, buffer.getvalue())


def histogram_png(cosines: Sequence[float], title: str, log_scale: bool = True) -> bytes:
    """A histogram of cosines, drawn without touching pyplot's global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 6))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if cosines:
        axes.hist(cosines, bins=50, color="#818cf8", edgecolor="#4f46e5")  # style.css accent
        if log_scale:
            from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

            axes.set_yscale("log")
            axes.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axes.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
            axes.yaxis.set_minor_formatter(NullFormatter())
    else:
        axes.text(0.5, 0.5, "no pairs passed the thresholds", ha="center", va="center")
    axes.set_xlabel("Cosine similarity")
    axes.set_ylabel("Pairs (log scale)" if log_scale and cosines else "Pairs")
    axes.set_title(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


LABELS = {
    "count": "pairs reported",
    "n_matching": "pairs passing the thresholds",
    "n_rows_compared": "latents compared (ablated at least --min-ablations times)",
    "min_ablations": "least ablations per latent",
    "ablator_sae_id": "Neuronpedia id",
    "skip_torch_sign": "raw effects (no sign)",
    "max_pairs": "at most reported",
}


def _meta_value(value: object) -> str:
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {v}" for k, v in value.items() if v is not None)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:,}" if isinstance(value, int) else f"{value:g}"
    return str(value)


def _meta_rows(meta: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, value) lines of the page's Run section: the summary, counts and settings."""
    shown = {**{k: v for k, v in meta.items() if k != "settings"}, **meta.get("settings", {})}
    return [
        (LABELS.get(k, k.replace("_", " ")), _meta_value(v))
        for k, v in shown.items()
        if v is not None and v is not False
    ]


@dataclass(frozen=True)
class TokenWindow:
    """One top example as the shared templates show it (the explorer's `Example` has the same
    fields): token strings, their activations and where the maximum sits."""

    tokens: list[str]
    activations: list[float]
    center: int
    max_activation: float
    context_id: int


@dataclass(frozen=True)
class LatentDetails:
    """What a pair card shows of a latent beyond its `LatentRecord`."""

    examples: list[TokenWindow] = field(default_factory=list)
    firing_frequency: float | None = None
    dashboard: Any = None
    """Its dashboard (`report_dashboards`), when the report has one."""


def _visible(token: str) -> str:
    """Line breaks and tabs inside a token would break the example's line; show them."""
    return token.replace("\r", "").replace("\n", "↵").replace("\t", "⇥")


def _window(example: Example, token_text: TokenText | None) -> TokenWindow:
    kept = [k for k, t in enumerate(example.token_ids) if t >= 0]
    ids = [example.token_ids[k] for k in kept]
    texts = token_text(ids) if token_text else [f"\u27e8{t}\u27e9" for t in ids]
    return TokenWindow(
        tokens=[_visible(t) for t in texts],
        activations=[example.acts[k] for k in kept],
        center=sum(1 for k in kept if k < example.center),
        max_activation=example.max_act,
        context_id=example.context_id,
    )


def _details(
    records: Sequence[PairRecord],
    examples: TopExamples | None,
    token_text: TokenText | None,
    per_latent: int,
    tokens_counted: int | None,
    dashboards: Mapping[int, Any] | None = None,
) -> dict[int, LatentDetails]:
    details = {}
    for record in records:
        for side in (record.a, record.b):
            if side.id in details:
                continue
            found = []
            if examples is not None and side.id < examples.d_sae:
                found = [
                    _window(e, token_text) for e in examples.examples_for(side.id)[:per_latent]
                ]
            frequency = None
            if tokens_counted and side.firing_count is not None:
                frequency = side.firing_count / tokens_counted
            details[side.id] = LatentDetails(
                examples=found,
                firing_frequency=frequency,
                dashboard=(dashboards or {}).get(side.id),
            )
    return details


def _tokens(meta: Mapping[str, Any]) -> int | None:
    value = meta.get("tokens_counted")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def render_page(
    *,
    title: str,
    meta: Mapping[str, Any],
    effect_pairs: Sequence[PairRecord],
    decoder_pairs: Sequence[PairRecord] | None,
    histogram_data_uri: str,
    examples: TopExamples | None = None,
    token_text: TokenText | None = None,
    examples_per_latent: int = 3,
    dashboards: Mapping[int, Any] | None = None,
    dashboard_pairs: int = 50,
    candidates: CandidateSection | None = None,
) -> str:
    """report.html: the explorer's pair cards and stylesheet in one standalone page; the
    cards of the first `dashboard_pairs` pairs carry their latents' dashboards; `candidates`
    (the partial method's pairs) come first when given."""
    details = _details(
        effect_pairs, examples, token_text, examples_per_latent, _tokens(meta), dashboards
    )
    return (
        make_environment()
        .get_template("report.html")
        .render(
            title=title,
            css=stylesheet(),
            meta_rows=_meta_rows(meta),
            n_matching=meta.get("n_matching", 0),
            histogram_data_uri=histogram_data_uri,
            effect_pairs=effect_pairs,
            decoder_pairs=decoder_pairs,
            details=details,
            # A latent of a later card shows no dashboard, even when an earlier card has it.
            plain_details={k: replace(v, dashboard=None) for k, v in details.items()},
            dashboard_pairs=dashboard_pairs,
            candidates=candidates,
        )
    )


@dataclass
class CandidateSection:
    """The partial method's pairs as report.html shows them (`_candidate.html`)."""

    shown: list[AbsorptionCandidate]
    n_listed: int
    n_scored: int
    exponent: float
    neighbours_first: bool
    details: dict[int, LatentDetails]
    ablations: dict[int, int | None]
    urls: dict[int, str | None]
    explanations: dict[int, str | None]
    run_grade: Mapping[str, Any] | None = None
    """How the lists fare against this SAE's category score (`jobs.pairs.category_grade`)."""


def candidate_section(
    search: CandidateSearch,
    *,
    examples: TopExamples | None,
    token_text: TokenText | None,
    explanations: Explanations | None,
    neuronpedia_id: str | None,
    ablations_e: torch.Tensor | None,
    tokens_counted: int | None,
    dashboards: Mapping[int, Any],
    run_grade: Mapping[str, Any] | None,
    shown: int,
    examples_per_latent: int,
) -> CandidateSection:
    pairs = search.pairs[:shown]
    records = [
        PairRecord(
            a=LatentRecord(c.parent, firing_count=c.firing_parent),
            b=LatentRecord(c.absorber, firing_count=c.firing_absorber),
            cosine_similarity=c.decoder_cosine,
        )
        for c in pairs
    ]
    details = _details(records, examples, token_text, examples_per_latent, tokens_counted,
                       dashboards)  # fmt: skip
    ids = sorted(details)
    return CandidateSection(
        shown=pairs,
        n_listed=len(search.pairs),
        n_scored=search.n_scored,
        exponent=float(search.settings["exponent"]),  # type: ignore[arg-type]
        neighbours_first=bool(search.settings.get("neighbours_first", False)),
        details=details,
        ablations={
            i: None if ablations_e is None or int(ablations_e[i]) == 0 else int(ablations_e[i])
            for i in ids
        },
        urls={i: _url(neuronpedia_id, i) for i in ids},
        explanations={i: explanations.get(i) if explanations else None for i in ids},
        run_grade=run_grade,
    )


def write_report(
    out_dir: Path,
    effect_pairs: PairSearch,
    *,
    decoder_pairs: PairSearch | None = None,
    examples: TopExamples | None = None,
    explanations: Explanations | None = None,
    neuronpedia_id: str | None = None,
    token_text: TokenText | None = None,
    summary: Mapping[str, Any] | None = None,
    title: str = "Absorption search",
    no_log_scale: bool = False,
    html_pairs: int = 200,
    examples_per_latent: int = 3,
    counter: Any = None,
    effects: tuple[Any, torch.Tensor] | None = None,
    sample: ActivationSample | None = None,
    dashboard_pairs: int = 50,
    candidates: CandidateSearch | None = None,
    run_grade: Mapping[str, Any] | None = None,
    candidate_cards: int = 50,
    candidate_dashboards: int = 20,
) -> dict[str, Path]:
    """Write the four report files into `out_dir` and return their paths by name.

    `summary` (model, SAEs, corpus, tokens counted, ...) heads the page and pairs.json's
    `meta`; `token_text` turns token ids into display strings (default: `⟨id⟩`); the page shows
    the first `html_pairs` pairs, the JSON and CSV all of them. Each latent of the first
    `dashboard_pairs` pairs gets a dashboard (~9 KB of HTML each) from what is given:
    `counter` (co-occurrence counts: correlated latents), `effects` ((effects_eE,
    how_often_activated_e): reader latents moved) and `sample` (an `ActivationSample`:
    histogram, top tokens, quantile examples). `candidates` (the partial method's pairs) head
    the page, the first `candidate_cards` as cards, the latents of the first
    `candidate_dashboards` with dashboards; `run_grade` says how they fare against this SAE's
    category score.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        **dict(summary or {}),
        "count": len(effect_pairs.pairs),
        "n_matching": effect_pairs.n_matching,
        "n_rows_compared": effect_pairs.n_rows,
        "settings": effect_pairs.settings,
        "ablator_sae_id": neuronpedia_id,
        "explanations_source": explanations.source if explanations else "none",
    }
    records = pair_records(effect_pairs, explanations, neuronpedia_id)
    document = PairsDocument(meta=meta, pairs=records)
    if decoder_pairs is not None:
        document.decoder_pairs_meta = {
            "count": len(decoder_pairs.pairs),
            "n_matching": decoder_pairs.n_matching,
            "settings": decoder_pairs.settings,
        }
        document.decoder_pairs = pair_records(decoder_pairs, explanations, neuronpedia_id)
    paths = {
        "pairs.json": out_dir / "pairs.json",
        "pairs.csv": out_dir / "pairs.csv",
        "histogram.png": out_dir / "histogram.png",
        "report.html": out_dir / "report.html",
    }
    atomic_write_json(paths["pairs.json"], document.to_json())
    write_csv(paths["pairs.csv"], effect_pairs, explanations, neuronpedia_id)
    threshold = effect_pairs.settings.get("cosine_sim_threshold")
    png = histogram_png(
        [p.cosine for p in effect_pairs.pairs],
        f"Cosine similarity of reported pairs (threshold = {threshold})",
        log_scale=not no_log_scale,
    )
    atomic_write_bytes(paths["histogram.png"], png)
    dashboards = report_dashboards(
        (side.id for record in records[:dashboard_pairs] for side in (record.a, record.b)),
        counter=counter,
        effects=effects,
        sample=sample,
        token_text=token_text,
        reader_label=meta.get("reader_hook") or meta.get("reader_sae"),
    )
    section = None
    if candidates is not None:
        candidate_boards = report_dashboards(
            (i for c in candidates.pairs[:candidate_dashboards] for i in (c.parent, c.absorber)),
            counter=counter,
            effects=effects,
            sample=sample,
            token_text=token_text,
            reader_label=meta.get("reader_hook") or meta.get("reader_sae"),
        )
        section = candidate_section(
            candidates,
            examples=examples,
            token_text=token_text,
            explanations=explanations,
            neuronpedia_id=neuronpedia_id,
            ablations_e=effects[1] if effects is not None else None,
            tokens_counted=_tokens(meta),
            dashboards=candidate_boards,
            run_grade=run_grade,
            shown=candidate_cards,
            examples_per_latent=examples_per_latent,
        )
    page = render_page(
        title=title,
        meta=meta,
        effect_pairs=records[:html_pairs],
        decoder_pairs=(
            document.decoder_pairs[:html_pairs] if document.decoder_pairs is not None else None
        ),
        examples=examples,
        token_text=token_text,
        histogram_data_uri="data:image/png;base64," + base64.b64encode(png).decode(),
        examples_per_latent=examples_per_latent,
        dashboards=dashboards,
        dashboard_pairs=dashboard_pairs,
        candidates=section,
    )
    atomic_write_text(paths["report.html"], page)
    return paths
