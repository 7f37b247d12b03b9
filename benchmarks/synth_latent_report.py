"""What a SynthSAEBench F1 is made of: read `latents.json` (synth_sae_bench.py --latent-report)
and print, per SAE and readout, precision, recall and F1 by quartile of how often each latent's
matched feature fires, with the latents' mean activation on their true and on their false
positives; `--plot` draws those activations as two histograms.

    python benchmarks/synth_latent_report.py benchmarks/out/synth/latents.json --plot out.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def summarise(report: dict[str, list[float]]) -> list[dict[str, float]]:
    tp, fp, fn = (np.asarray(report[k]) for k in ("tp", "fp", "fn"))
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
    recall = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)
    f1 = np.where(
        precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0
    )
    act_tp, act_fp = np.asarray(report["mean_act_tp"]), np.asarray(report["mean_act_fp"])
    order = np.argsort(-(tp + fn), kind="stable")  # most frequent matched feature first
    rows = []
    for label, chosen in [("all", order), *[(f"q{q + 1}", part) for q, part in
                                            enumerate(np.array_split(order, 4))]]:  # fmt: skip
        rows.append(
            {
                "latents": label,
                "f1": float(f1[chosen].mean()),
                "precision": float(precision[chosen].mean()),
                "recall": float(recall[chosen].mean()),
                "median_matched_firings": float(np.median((tp + fn)[chosen])),
                "median_act_tp": float(np.median(act_tp[chosen][tp[chosen] > 0])),
                "median_act_fp": float(np.median(act_fp[chosen][fp[chosen] > 0])),
            }
        )
    return rows


def plot(reports: dict[str, dict[str, list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(reports), figsize=(5 * len(reports), 3.6), squeeze=False)
    for ax, (name, report) in zip(axes[0], reports.items(), strict=True):
        tp, fp = np.asarray(report["tp"]), np.asarray(report["fp"])
        bins = np.linspace(0, 6, 61)
        ax.hist(np.asarray(report["mean_act_tp"])[tp > 0], bins, alpha=0.6, label="true positives")
        ax.hist(np.asarray(report["mean_act_fp"])[fp > 0], bins, alpha=0.6, label="false positives")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("latent's mean activation")
        ax.set_ylabel("latents")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("latents", type=Path, help="latents.json from synth_sae_bench.py")
    parser.add_argument("--only", nargs="+", help="these report names only")
    parser.add_argument("--plot", type=Path, help="write the activation histograms here (PNG)")
    parser.add_argument(
        "--json", type=Path, help="write the summaries here, with the histograms' counts"
    )
    args = parser.parse_args(argv)
    try:
        reports = json.loads(args.latents.read_text())
    except (OSError, ValueError) as exc:
        print(f"synth_latent_report: cannot read {args.latents}: {exc}", file=sys.stderr)
        return 2
    if args.only:
        missing = [name for name in args.only if name not in reports]
        if missing:
            print(
                f"synth_latent_report: no report {missing[0]!r} in {args.latents}", file=sys.stderr
            )
            return 2
        reports = {name: reports[name] for name in args.only}
    for name, report in reports.items():
        print(f"\n{name}\n| latents | F1 | precision | recall | matched firings (median) | "
              "act. on TP | act. on FP |\n|---|---|---|---|---|---|---|")  # fmt: skip
        for row in summarise(report):
            print(f"| {row['latents']} | {row['f1']:.3f} | {row['precision']:.3f} | "
                  f"{row['recall']:.3f} | {row['median_matched_firings']:.0f} | "
                  f"{row['median_act_tp']:.2f} | {row['median_act_fp']:.2f} |")  # fmt: skip
    if args.json:
        bins = np.linspace(0, 6, 61)
        summaries = {
            name: {
                "by_quartile": summarise(report),
                "histogram_bins": bins.tolist(),
                "latents_by_mean_act_tp": np.histogram(
                    np.asarray(report["mean_act_tp"])[np.asarray(report["tp"]) > 0], bins
                )[0].tolist(),
                "latents_by_mean_act_fp": np.histogram(
                    np.asarray(report["mean_act_fp"])[np.asarray(report["fp"]) > 0], bins
                )[0].tolist(),
            }
            for name, report in reports.items()
        }
        args.json.write_text(json.dumps(summaries, indent=1) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        plot(reports, args.plot)
        print(f"\nwrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
