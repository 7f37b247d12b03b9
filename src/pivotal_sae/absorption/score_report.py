"""The absorption score's files: scores.json, records.json, absorption_score.png, report.md."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from pivotal_sae.runs import atomic_write_bytes, atomic_write_json, atomic_write_text

SCORES = "scores.json"
RECORDS = "records.json"
PLOT = "absorption_score.png"
REPORT = "report.md"


def write_score_outputs(run_dir: Path, summary: dict[str, Any]) -> None:
    records = [
        {"sae": run["sae"], "hook": run["hook"], "task": run["task"], **record}
        for run in summary["runs"]
        for record in run["records"]
    ]
    atomic_write_json(run_dir / SCORES, summary)
    atomic_write_json(run_dir / RECORDS, records)
    atomic_write_bytes(run_dir / PLOT, plot_scores(summary))
    atomic_write_text(run_dir / REPORT, markdown_report(summary))


def plot_scores(summary: dict[str, Any]) -> bytes:
    """One panel per (SAE, task): each category's probe F1, full-absorption rate and mean
    absorption fraction; dropped categories show only their F1 (hatched)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    runs = summary["runs"]
    fig, axes = plt.subplots(len(runs), 1, figsize=(12, 3.2 * len(runs)), squeeze=False)
    for ax, run in zip(axes[:, 0], runs, strict=True):
        cats = run["categories"]
        x = np.arange(len(cats))
        kept = np.array([c["kept"] for c in cats], dtype=bool)
        f1 = np.array([c["probe_f1"] for c in cats])
        full = np.array([c["full_absorption_rate"] for c in cats])
        frac = np.array([c["mean_absorption_fraction"] for c in cats])
        w = 0.27
        ax.bar(x - w, f1, w, color=np.where(kept, "#999999", "#dddddd"), label="probe F1 (test)",
               hatch=None)  # fmt: skip
        ax.bar(x, np.where(kept, full, 0), w, color="#c0392b", label="full absorption rate")
        ax.bar(x + w, np.where(kept, frac, 0), w, color="#2980b9", label="mean absorption fraction")
        ax.axhline(summary["settings"]["min_probe_f1"], color="k", lw=0.6, ls="--")
        ax.set_xticks(x, [c["name"] + ("" if c["kept"] else "*") for c in cats], rotation=60,
                      ha="right", fontsize=7)  # fmt: skip
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{run['task']} on {run['sae']} ({run['hook']}); * = dropped (F1 below line)",
                     fontsize=8)  # fmt: skip
    axes[0, 0].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def markdown_report(summary: dict[str, Any], top_records: int = 10) -> str:
    lines = [
        "## Absorption score",
        "",
        f"Model `{summary['model']}`; wall time {summary['wall_time_s']} s. Thresholds: "
        + ", ".join(f"{k} {v}" for k, v in summary["settings"].items()),
        "",
        "| SAE | task | categories kept | mean full absorption | mean absorption fraction "
        "| mean main latents |",
        "|---|---|---|---|---|---|",
    ]
    for run in summary["runs"]:
        m = run["means"]
        lines.append(
            f"| {run['hook']} | {run['task']} | {m['n_kept']} / {m['n_categories']} "
            f"| {_fmt(m['mean_full_absorption_score'])} "
            f"| {_fmt(m['mean_absorption_fraction_score'])} | {_fmt(m['mean_num_main_latents'])} |"
        )
    for run in summary["runs"]:
        lines += ["", f"### {run['task']} on {run['sae']}", ""]
        lines += [
            "| category | words | probe F1 | main latents | probe TPs | false-negative rate "
            "| full absorption | absorption fraction |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for c in run["categories"]:
            if not c["kept"]:
                continue
            lines.append(
                f"| {c['name']} | {c['n_words']} | {c['probe_f1']:.2f} | "
                f"{', '.join(map(str, c['main_latents']))} | {c['n_probe_true_positives']} | "
                f"{c['false_negative_rate']:.2f} | {c['full_absorption_rate']:.2f} | "
                f"{c['mean_absorption_fraction']:.2f} |"
            )
        dropped = {c["name"]: c["probe_f1"] for c in run["categories"] if not c["kept"]}
        if dropped:
            lines += [
                "",
                "Dropped (probe F1 below the threshold): "
                + ", ".join(f"{k} ({v:.2f})" for k, v in dropped.items()),
            ]
        if run["dropped_before_probing"]:
            lines += [
                "",
                "Too few single-token words: "
                + ", ".join(f"{k} ({v})" for k, v in run["dropped_before_probing"].items()),
            ]
        if run["records"]:
            lines += ["", "Absorbing latents (most tokens first):", ""]
            for r in run["records"][:top_records]:
                lines.append(
                    f"- {r['category']}: main {r['main_latents']} ← latent {r['absorbing_latent']}"
                    f" on {', '.join(r['tokens'][:12])}"
                    + (
                        f" (full: {', '.join(r['full_absorption_tokens'][:8])})"
                        if r["full_absorption_tokens"]
                        else ""
                    )
                )
    return "\n".join(lines) + "\n"
