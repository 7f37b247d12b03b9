"""Training curves as a PNG beside TensorBoard, and an index page of a run's plots.

`write_curves` reads a run's `metrics.jsonl` (one JSON object per logged step) and draws every
numeric metric in one figure, a small panel each, a line per series (`hook` for train-sae;
for the toy lab `train_x` and `val_x` share a panel, and metrics logged at both cadences have a
line for training batches and one for evaluation); `write_index` writes `index.html`
listing the PNGs of a folder, so a run's pictures open in any browser without TensorBoard.
Both are called once, at the end of a run (a figure with a dozen panels takes ~1 s).
"""

from __future__ import annotations

import html
import io
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pivotal_sae.runs import atomic_write_bytes, atomic_write_text

CURVES_PNG = "curves.png"
INDEX_HTML = "index.html"
#: Keys that say where a record sits, not what was measured.
POSITION_KEYS = {"step", "tokens", "kind", "hook", "wall_seconds"}
#: Metric names in plain words (others are shown with underscores as spaces).
PLAIN = {
    "lr": "learning rate",
    "reconstruction_mse": "reconstruction error (MSE)",
    "reconstruction_loss": "reconstruction loss",
    "total_loss": "total loss",
    "aux_loss": "auxiliary (alignment) loss",
    "pair_detection_rate": "parents whose children found both siblings",
    "adjusted_pair_detection_rate": "parents whose children found both siblings (scaled children)",
    "single_detection_rate": "parents whose children found the same child",
    "adjusted_single_detection_rate": "parents whose children found the same child (scaled)",
    "mmcs_min": "worst match of a true child by any decoder direction (cosine)",
    "mmcs_mean": "mean best match of true children by decoder directions (cosine)",
    "adjusted_mmcs_min": "worst match of a true child (scaled children, cosine)",
    "adjusted_mmcs_mean": "mean best match of true children (scaled children, cosine)",
    "dead_latents": "latents that never fire on the held-out batch",
    "absorption_rate": "absorption rate (share of parent firings taken by a child)",
    "fvu": "fraction of variance unexplained",
    "l0": "latents active per token (L0)",
    "mse": "reconstruction error (MSE)",
    "loss": "training loss",
    "dead_fraction": "share of latents that never fire",
}
SERIES_WORDS = {"train": "training batches", "eval": "evaluation"}
#: `train_x` and `val_x` are one metric measured two ways: one panel, two lines.
SPLITS = {"train_": "training batches", "val_": "held-out batch"}


def plain_label(key: str) -> str:
    return PLAIN.get(key, key.replace("_", " "))


def read_series(metrics_jsonl: Path) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """metric → series name → [(step, value)], skipping lines that are not JSON objects and
    values that are not finite numbers."""
    curves: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for line in metrics_jsonl.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        if not isinstance(record, Mapping) or not isinstance(record.get("step"), int | float):
            continue
        hook = str(record.get("hook") or "")
        kind = SERIES_WORDS.get(str(record.get("kind")), str(record.get("kind") or ""))
        for key, value in record.items():
            if key in POSITION_KEYS or isinstance(value, bool):
                continue
            if not (isinstance(value, int | float) and math.isfinite(value)):
                continue
            metric, series = key, hook or kind
            for prefix, words in SPLITS.items():
                if key.startswith(prefix):
                    metric, series = key.removeprefix(prefix), f"{hook} {words}".strip()
            points = curves.setdefault(metric, {}).setdefault(series, [])
            points.append((float(record["step"]), float(value)))
    return curves


def write_curves(metrics_jsonl: Path, out_dir: Path, title: str) -> Path | None:
    """`out_dir/curves.png`: one panel per metric; None when the log holds no numbers."""
    if not metrics_jsonl.is_file():
        return None
    curves = read_series(metrics_jsonl)
    if not curves:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = min(3, len(curves))
    rows = -(-len(curves) // columns)
    figure = Figure(figsize=(5.2 * columns, 3.0 * rows + 0.6), dpi=80)
    FigureCanvasAgg(figure)
    for number, (key, by_series) in enumerate(curves.items(), start=1):
        axes = figure.add_subplot(rows, columns, number)
        for series, points in by_series.items():
            xs, ys = zip(*sorted(points), strict=True)
            axes.plot(xs, ys, label=series or None, linewidth=1.2)
        values = [v for points in by_series.values() for _, v in points]
        if min(values) > 0 and max(values) / min(values) > 100:
            axes.set_yscale("log")
        axes.set_title(plain_label(key), fontsize=9)
        axes.set_xlabel("step", fontsize=8)
        axes.tick_params(labelsize=7)
        if any(by_series):  # a named series: say which (held-out, an SAE's hook, ...)
            axes.legend(fontsize=7)
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.4 / (3.0 * rows + 0.6)))  # room for the title
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / CURVES_PNG, buffer.getvalue())
    return out_dir / CURVES_PNG


def _caption(name: str) -> str:
    stem = name.removesuffix(".png")
    if match := re.fullmatch(r"step_(\d+)_(.+)", stem):
        return f"step {int(match.group(1)):,}: {match.group(2).replace('_', ' ')}"
    return "training curves" if name == CURVES_PNG else stem.replace("_", " ")


def write_index(plots_dir: Path, title: str, extra: Mapping[str, Any] | None = None) -> Path:
    """`plots_dir/index.html`: every PNG of the folder, the curves first, then the latest
    step's plots first. Names and captions are escaped; images are relative links."""
    names = sorted(p.name for p in plots_dir.glob("*.png") if not p.name.startswith("."))

    def order(name: str) -> tuple[int, int, str]:
        match = re.match(r"step_(\d+)_", name)
        return (0 if name == CURVES_PNG else 1, -int(match.group(1)) if match else 0, name)

    figures = "\n".join(
        f'<figure><a href="{html.escape(n)}"><img src="{html.escape(n)}" alt="'
        f'{html.escape(_caption(n))}" loading="lazy"></a><figcaption>'
        f"{html.escape(_caption(n))}</figcaption></figure>"
        for n in sorted(names, key=order)
    )
    facts = "".join(
        f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(str(v))}</dd>"
        for k, v in (extra or {}).items()
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #101828; }}
figure {{ display: inline-block; margin: 0 1rem 1.5rem 0; vertical-align: top; }}
img {{ max-width: min(100%, 900px); border: 1px solid #eaecf0; }}
figcaption {{ color: #475467; font-size: 0.9rem; }}
dl {{ display: grid; grid-template-columns: max-content 1fr; gap: 0.1rem 1rem; }}
dt {{ color: #475467; }} dd {{ margin: 0; font-family: monospace; }}
</style></head>
<body><h1>{html.escape(title)}</h1>
<dl>{facts}</dl>
<p>{len(names)} plot{"" if len(names) == 1 else "s"}; the numbers behind them are in
<code>metrics.jsonl</code> and <code>tensorboard/</code> one folder up.</p>
{figures or "<p>No plots yet.</p>"}
</body></html>
"""
    plots_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(plots_dir / INDEX_HTML, page)
    return plots_dir / INDEX_HTML


def write_run_plots(run_dir: Path, title: str, extra: Mapping[str, Any] | None = None) -> Path:
    """The end-of-run hook: `plots/curves.png` from `metrics.jsonl`, then `plots/index.html`."""
    plots = run_dir / "plots"
    write_curves(run_dir / "metrics.jsonl", plots, title)
    return write_index(plots, title, extra)
