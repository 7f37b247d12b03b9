"""The report of an absorption search: pairs.json, pairs.csv, histogram.png and report.html.

`report.html` is one self-contained page (inline CSS, the histogram inlined as a data URI, no
scripts, no external assets). Every piece of text from outside (explanations, tokens, metadata)
is HTML-escaped, so a token such as `<script>` shows as text.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pivotal_sae.absorption.examples import Example, TopExamples
from pivotal_sae.absorption.explanations import Explanations, neuronpedia_url
from pivotal_sae.absorption.pairs import LatentPair, PairSearch
from pivotal_sae.runs import atomic_write_bytes, atomic_write_json, atomic_write_text

TokenText = Callable[[Sequence[int]], list[str]]
CSV_FIELDS = (
    "rank", "latent_a", "latent_b", "cosine", "cooccurrence", "expected_cooccurrence",
    "p_at_most_observed", "firing_a", "firing_b", "ablations_a", "ablations_b",
    "explanation_a", "explanation_b", "url_a", "url_b",
)  # fmt: skip


def _url(neuronpedia_id: str | None, index: int) -> str | None:
    return neuronpedia_url(neuronpedia_id, index) if neuronpedia_id else None


def _latent_json(
    index: int,
    firing: int,
    ablations: int | None,
    explanations: Explanations | None,
    neuronpedia_id: str | None,
) -> dict[str, Any]:
    return {
        "id": index,
        "explanation": explanations.get(index) if explanations else None,
        "url": _url(neuronpedia_id, index),
        "firing_count": firing,
        "ablation_count": ablations,
    }


def pairs_json(
    search: PairSearch,
    explanations: Explanations | None,
    neuronpedia_id: str | None,
    first: str = "ablator1",
    second: str = "ablator2",
) -> list[dict[str, Any]]:
    """Pairs in the original scripts' JSON layout, with the new counts added."""
    return [
        {
            first: _latent_json(
                p.latent_a, p.firing_a, p.ablations_a, explanations, neuronpedia_id
            ),
            second: _latent_json(
                p.latent_b, p.firing_b, p.ablations_b, explanations, neuronpedia_id
            ),
            "cosine_similarity": p.cosine,
            "cooccurrence_count": p.cooccurrence,
            "expected_cooccurrence": p.expected_cooccurrence,
            "p_at_most_observed": p.p_at_most_observed,
        }
        for p in search.pairs
    ]


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
        axes.hist(cosines, bins=50, color="#5b8def", edgecolor="#1d3c78", alpha=0.85)
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


CSS = """
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,sans-serif;color:#1f2430;background:#f6f7fb;
margin:0;padding:0 0 3em}
header,section{max-width:1100px;margin:0 auto;padding:0 1.2em}
header{padding-top:1.6em}h1{margin:.2em 0;font-size:1.7em}h2{margin:1.6em 0 .6em;font-size:1.25em}
.sub{color:#5d6475;margin:0}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1.2em;background:#fff;
padding:1em 1.2em;border-radius:10px;box-shadow:0 1px 3px #0001}
dl.meta dt{color:#5d6475}dl.meta dd{margin:0;word-break:break-word}
img.hist{max-width:100%;background:#fff;border-radius:10px;box-shadow:0 1px 3px #0001}
.note{color:#5d6475;font-size:.92em}
article.pair{background:#fff;border-radius:10px;box-shadow:0 1px 3px #0001;margin:1em 0;
padding:.9em 1.2em}
.head{display:flex;gap:1em;align-items:baseline;flex-wrap:wrap}
.rank{color:#8a90a0;font-weight:600}.ids{font-weight:600;font-size:1.08em}
.cos{margin-left:auto;background:#e8efff;color:#1d3c78;border-radius:999px;padding:.05em .7em;
font-variant-numeric:tabular-nums}
.stats{color:#3b4252;margin:.3em 0 .6em;font-variant-numeric:tabular-nums}
.rare{color:#0a7a3b;font-weight:600}
.latents{display:grid;grid-template-columns:1fr 1fr;gap:1.2em}
@media (max-width:800px){.latents{grid-template-columns:1fr}}
.latent h3{margin:.2em 0;font-size:1em}.expl{margin:.1em 0 .3em;font-style:italic}
.expl.none{color:#8a90a0}.counts{color:#5d6475;font-size:.9em;margin:0 0 .4em}
.ex{font:13px/1.9 ui-monospace,SFMono-Regular,Menlo,monospace;background:#fafbfd;
border:1px solid #eceef3;border-radius:6px;padding:.15em .5em;margin:.25em 0;overflow-x:auto;
white-space:nowrap}
.ex .t{white-space:pre;border-radius:3px;padding:1px 0}.ex .c{outline:1.5px solid #c25400}
.ex .v{color:#8a90a0;font-size:.85em;margin-right:.6em}
table{border-collapse:collapse;background:#fff;width:100%;border-radius:10px;overflow:hidden;
box-shadow:0 1px 3px #0001}th,td{text-align:left;padding:.45em .7em;border-bottom:1px solid #eceef3;
vertical-align:top}th{background:#f0f2f7;font-weight:600}td.num{font-variant-numeric:tabular-nums}
a{color:#2856c7;text-decoration:none}a:hover{text-decoration:underline}
"""


LABELS = {
    "count": "pairs reported",
    "n_matching": "pairs passing the thresholds",
    "n_rows_compared": "latents compared (ablated at least --min-ablations times)",
    "min_ablations": "least ablations per latent",
    "ablator_sae_id": "Neuronpedia id",
    "skip_torch_sign": "raw effects (no sign)",
    "max_pairs": "at most reported",
}


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _meta_value(value: object) -> str:
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {v}" for k, v in value.items() if v is not None)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:,}" if isinstance(value, int) else f"{value:g}"
    return str(value)


def _link(index: int, neuronpedia_id: str | None) -> str:
    url = _url(neuronpedia_id, index)
    label = f"Latent {index}"
    return f'<a href="{_e(url)}">{_e(label)}</a>' if url else _e(label)


def _visible(token: str) -> str:
    """Line breaks and tabs inside a token would break the one-line example; show them."""
    return token.replace("\r", "").replace("\n", "↵").replace("\t", "⇥")


def _example_html(example: Example, token_text: TokenText | None) -> str:
    ids = [t for t in example.token_ids if t >= 0]
    texts = iter(token_text(ids) if token_text else [f"\u27e8{t}\u27e9" for t in ids])
    peak = max(example.max_act, 1e-12)
    spans = [f'<span class="v">{example.max_act:.3g}</span>']
    for k, (token, act) in enumerate(zip(example.token_ids, example.acts, strict=True)):
        if token < 0:
            continue
        alpha = max(0.0, min(1.0, act / peak)) * 0.85
        cls = "t c" if k == example.center else "t"
        spans.append(
            f'<span class="{cls}" style="background:rgba(255,140,0,{alpha:.2f})" '
            f'title="{act:.4g}">{_e(_visible(next(texts)))}</span>'
        )
    return f'<div class="ex">{"".join(spans)}</div>'


def _latent_html(index, firing, ablations, context: dict[str, Any]) -> str:
    explanations, examples = context["explanations"], context["examples"]
    explanation = explanations.get(index) if explanations else None
    counts = f"fired on {firing:,} tokens"
    if ablations is not None:
        counts += f" · ablated in {ablations:,} contexts"
    parts = [
        f'<div class="latent"><h3>{_link(index, context["neuronpedia_id"])}</h3>',
        f'<p class="expl">{_e(explanation)}</p>'
        if explanation
        else '<p class="expl none">no explanation available</p>',
        f'<p class="counts">{_e(counts)}</p>',
    ]
    if examples is not None and index < examples.d_sae:
        for example in examples.examples_for(index)[: context["examples_per_latent"]]:
            parts.append(_example_html(example, context["token_text"]))
    return "".join(parts) + "</div>"


def _cooccurrence_text(pair: LatentPair) -> str:
    text = (
        f"Co-occurrence: observed {pair.cooccurrence:,} · expected if independent "
        f"{pair.expected_cooccurrence:,.3g} · P(≤ observed) = {pair.p_at_most_observed:.2g}"
    )
    cls = ' class="rare"' if pair.p_at_most_observed < 0.01 else ""
    return f"<span{cls}>{_e(text)}</span>"


def render_page(
    *,
    title: str,
    meta: Mapping[str, Any],
    effect_pairs: Sequence[LatentPair],
    decoder_pairs: Sequence[LatentPair] | None,
    histogram_data_uri: str,
    **context: Any,
) -> str:
    shown = {**{k: v for k, v in meta.items() if k != "settings"}, **meta.get("settings", {})}
    rows = "".join(
        f"<dt>{_e(LABELS.get(k, k.replace('_', ' ')))}</dt><dd>{_e(_meta_value(v))}</dd>"
        for k, v in shown.items()
        if v is not None and v is not False
    )
    out = [
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>',
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{CSS}</style>',
        f"</head><body><header><h1>{_e(title)}</h1>",
        '<p class="sub">Ablator latents whose ablation moves the reader SAE alike, yet which '
        "rarely fire together: candidates for feature absorption.</p></header>",
        f'<section><h2>Run</h2><dl class="meta">{rows}</dl></section>',
        f'<section><h2>Cosine similarities</h2><img class="hist" alt="histogram" '
        f'src="{_e(histogram_data_uri)}"></section>',
        f"<section><h2>Pairs ({len(effect_pairs):,} shown of {meta.get('n_matching', 0):,})</h2>",
        '<p class="note">Expected co-occurrence = f<sub>a</sub>·f<sub>b</sub>/N (firing counts, '
        "tokens counted): the mean count if the latents fired independently. A small "
        "P(≤ observed) means they avoid each other; a large one means the data are too thin "
        "to tell. Highlighted tokens: the latent's activation (hover for values); the "
        "outlined token holds the context's maximum.</p>",
    ]
    for rank, pair in enumerate(effect_pairs, start=1):
        out += [
            f'<article class="pair" id="pair-{rank}"><div class="head">',
            f'<span class="rank">#{rank}</span><span class="ids">{pair.latent_a} ↔ '
            f'{pair.latent_b}</span><span class="cos">cos {pair.cosine:.3f}</span></div>',
            f'<div class="stats">{_cooccurrence_text(pair)}</div><div class="latents">',
            _latent_html(pair.latent_a, pair.firing_a, pair.ablations_a, context),
            _latent_html(pair.latent_b, pair.firing_b, pair.ablations_b, context),
            "</div></article>",
        ]
    if not effect_pairs:
        out.append('<p class="note">No pair passed the thresholds.</p>')
    out.append("</section>")
    if decoder_pairs is not None:
        out.append(_decoder_section(decoder_pairs, context))
    out.append("</body></html>\n")
    return "".join(out)


def _decoder_section(pairs: Sequence[LatentPair], context: dict[str, Any]) -> str:
    explanations, np_id = context["explanations"], context["neuronpedia_id"]

    def described(index: int) -> str:
        text = explanations.get(index) if explanations else None
        return _link(index, np_id) + (f"<br><i>{_e(text)}</i>" if text else "")

    rows = "".join(
        f'<tr><td class="num">{rank}</td><td>{described(p.latent_a)}</td>'
        f"<td>{described(p.latent_b)}</td><td class='num'>{p.cosine:.3f}</td>"
        f"<td class='num'>{p.cooccurrence:,} / {p.expected_cooccurrence:,.3g}</td></tr>"
        for rank, p in enumerate(pairs, start=1)
    )
    return (
        "<section><h2>Decoder-similarity pairs</h2><p class='note'>Latents that never (or "
        "rarely) co-occur but whose decoder vectors point alike: the cheaper relative of the "
        "search above.</p><table><tr><th>#</th><th>Latent</th><th>Latent</th><th>Decoder "
        f"cosine</th><th>Co-occurrence observed / expected</th></tr>{rows}</table></section>"
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
) -> dict[str, Path]:
    """Write the four report files into `out_dir` and return their paths by name.

    `summary` (model, SAEs, corpus, tokens counted, ...) heads the page and pairs.json's
    `meta`; `token_text` turns token ids into display strings (default: `⟨id⟩`); the page shows
    the first `html_pairs` pairs, the JSON and CSV all of them.
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
    document: dict[str, Any] = {
        "meta": meta,
        "pairs": pairs_json(effect_pairs, explanations, neuronpedia_id),
    }
    if decoder_pairs is not None:
        document["decoder_pairs_meta"] = {
            "count": len(decoder_pairs.pairs),
            "n_matching": decoder_pairs.n_matching,
            "settings": decoder_pairs.settings,
        }
        document["decoder_pairs"] = pairs_json(
            decoder_pairs, explanations, neuronpedia_id, "latent1", "latent2"
        )
    paths = {
        "pairs.json": out_dir / "pairs.json",
        "pairs.csv": out_dir / "pairs.csv",
        "histogram.png": out_dir / "histogram.png",
        "report.html": out_dir / "report.html",
    }
    atomic_write_json(paths["pairs.json"], document)
    write_csv(paths["pairs.csv"], effect_pairs, explanations, neuronpedia_id)
    threshold = effect_pairs.settings.get("cosine_sim_threshold")
    png = histogram_png(
        [p.cosine for p in effect_pairs.pairs],
        f"Cosine similarity of reported pairs (threshold = {threshold})",
        log_scale=not no_log_scale,
    )
    atomic_write_bytes(paths["histogram.png"], png)
    page = render_page(
        title=title,
        meta=meta,
        effect_pairs=effect_pairs.pairs[:html_pairs],
        decoder_pairs=decoder_pairs.pairs[:html_pairs] if decoder_pairs else None,
        examples=examples,
        explanations=explanations,
        neuronpedia_id=neuronpedia_id,
        token_text=token_text,
        histogram_data_uri="data:image/png;base64," + base64.b64encode(png).decode(),
        examples_per_latent=examples_per_latent,
    )
    atomic_write_text(paths["report.html"], page)
    return paths
