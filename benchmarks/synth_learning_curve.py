"""F1 and MCC against training samples at L0 25 on SynthSAEBench-16k, from the measured runs in
docs/data (every point one H100 run or one stop of a resumed run), with the published 200M
figures and the goal: `docs/img/synth-learning-curve.png`.

    python benchmarks/synth_learning_curve.py [--out docs/img/synth-learning-curve.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "docs" / "data"

#: Published at 200M samples, L0 25 (SAELens docs/synth_sae_bench.md): F1, MCC.
PUBLISHED = {"Matryoshka (published)": (0.879, 0.793), "BatchTopK (published)": (0.732, 0.757)}
GOAL = (0.90, 0.80)
#: Which rows of which files make each curve (trained readout, L0 25).
CURVES = {
    "matryoshka (ours)": [
        ("synth_bench_l0_25_5M_h100.json", "matryoshka"),
        ("synth_bench_matryoshka_66M_h100.json", "matryoshka"),
        ("synth_bench_matryoshka_100M_decay_h100.json", "matryoshka"),
    ],
    "matryoshka-batchtopk (ours)": [
        ("synth_bench_l0_25_5M_h100.json", "matryoshka-batchtopk"),
        # one run of 200M samples, three stops
        ("synth_bench_matryoshka_batchtopk_200M_decay_h100.json", "matryoshka-batchtopk"),
    ],
    "batchtopk (ours)": [
        ("synth_bench_l0_25_5M_h100.json", "batchtopk"),
        ("synth_bench_topk_batchtopk_40M_h100.json", "batchtopk"),
    ],
    "topk (ours)": [
        ("synth_bench_l0_25_5M_h100.json", "topk"),
        ("synth_bench_topk_batchtopk_40M_h100.json", "topk"),
    ],
    "SAELens BatchTopK (float32)": [
        ("synth_bench_l0_25_5M_h100.json", "saelens-batchtopk"),
        ("synth_bench_saelens_batchtopk_40M_h100.json", "saelens-batchtopk"),
    ],
    "SAELens BatchTopK (published recipe, bfloat16)": [
        ("synth_bench_saelens_batchtopk_72M_h100.json", "saelens-batchtopk"),
        ("synth_bench_saelens_batchtopk_176M_h100.json", "saelens-batchtopk"),  # two stops
    ],
}
RESUMED = "synth_bench_matryoshka_200M_decay_h100.json"  # one run, scored at each of its stops


def points(name: str) -> list[tuple[float, float, float]]:
    """(samples, F1, MCC) for one curve, by samples."""
    found = []
    for file, arch in CURVES[name]:
        results = json.loads((DATA / file).read_text())
        for row in results["rows"]:
            if row["arch"] == arch and row.get("l0_target", 25) == 25:
                samples = row.get("samples", results["budget_samples"])
                found.append((float(samples), row["f1"], row["mcc"]))
    if name == "matryoshka (ours)":
        for call in json.loads((DATA / RESUMED).read_text())["calls"]:
            found.append((float(call["samples_after"]), call["f1_trained"], call["mcc"]))
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img/synth-learning-curve.png"))
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for column, (ax, metric) in enumerate(zip(axes, ("F1", "MCC"), strict=True)):
        for name in CURVES:
            curve = points(name)
            ax.plot([p[0] for p in curve], [p[1 + column] for p in curve], "o-", label=name)
            for samples, *scores in curve:
                print(f"{name:28s} {samples / 1e6:6.1f}M  {metric} {scores[column]:.3f}")
        for i, (name, published) in enumerate(PUBLISHED.items()):
            ax.scatter(
                [2e8],
                [published[column]],
                marker="*",
                s=140,
                color=f"C{len(CURVES) + i}",
                label=name,
            )
        ax.axhline(GOAL[column], color="grey", linestyle="--", linewidth=1, label="goal")
        ax.set_xscale("log")
        ax.set_xlabel("training samples")
        ax.set_ylabel(metric)
        ax.set_title(f"SynthSAEBench-16k, L0 25: {metric}", fontsize=10)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
