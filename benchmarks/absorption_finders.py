"""Claim: grade any absorption finder's ranked (latent, latent) pairs against three ground truths;
the original statistics come first.

    PYTHONPATH=src python benchmarks/absorption_finders.py [--score-run DIR] [--out DIR]

Ground truths (each a set of unordered latent pairs known to be absorbing):
1. toy lab: flat TopK and Matryoshka SAEs (90 latents, k 6) on the seed world at
   --parent-only-prob 0 and 0.3 (--toy-steps each, default 3,000: a small budget for 2 CPU
   cores). A (parent latent, child latent) pair is absorbing when, on validation rows where the
   child is present and its latent fires, the parent's latent is silent on at least
   --toy-strengths of them (parent/child latents: nearest by decoder cosine, as
   toy/metrics.absorption_rate defines them);
2. planted: `plant-absorption` in the default MiniLM SAE at block 3 (--plant-seeds, 5 pairs each,
   rate 0.6); the answer key's (parent, child) pairs;
3. category score: the (main latent, absorbing latent) pairs of an `absorption-score` run on the
   default SAEs (--score-run; block 3 records).
Finders see only what the search computes: co-occurrence counts and ablation effects (`absorb`
with --cooccurrence-prompts/--n-prompts contexts; in the toy, effects of zeroing each latent in
the reconstruction as the same SAE re-reads it) and decoder rows. Printed per ground truth and
finder: precision and recall at K = 10, 100, 1000 and average precision; the precision-recall
curves go to --out/pr_curves.png.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from pivotal_sae.absorption.finder import find_partial_pairs, nearest_neighbours
from pivotal_sae.absorption.pairs import find_decoder_pairs, find_effect_pairs

KS = (10, 100, 1000)
RECALLS = (0.7, 0.8)
NO_GATE = 10**15
Pair = tuple[int, int]


# ---------------------------------------------------------------------------- finders
def original_finders(
    effects_eE: torch.Tensor | None,
    how_often_e: torch.Tensor | None,
    cooc_ee: torch.Tensor,
    tokens: int,
    W_dec_EM: torch.Tensor,
    max_pairs: int = 100_000,
) -> dict[str, list[Pair]]:
    """Ranked pairs of the original statistics (gated by co-occurrence <= 0), then the same
    statistics without the gate."""
    finders: dict[str, list[Pair]] = {}
    for gate, label in ((0, "co-occurrence <= 0"), (NO_GATE, "no gate")):
        if effects_eE is not None and how_often_e is not None:
            for raw, name in ((False, "effect-sign cosine"), (True, "raw-effect cosine")):
                search = find_effect_pairs(
                    effects_eE, how_often_e, cooc_ee, tokens_counted=tokens,
                    cooccurrence_threshold=gate, cosine_sim_threshold=-1.0,
                    skip_torch_sign=raw, max_pairs=max_pairs,
                )  # fmt: skip
                finders[f"{name}, {label}"] = [(p.latent_a, p.latent_b) for p in search.pairs]
        decoder = find_decoder_pairs(W_dec_EM, cooc_ee, tokens_counted=tokens, top_n=max_pairs,
                                     cooccurrence_threshold=gate)  # fmt: skip
        finders[f"decoder cosine, {label}"] = [(p.latent_a, p.latent_b) for p in decoder.pairs]
    for first, name in (
        (False, "partial, score only"),
        (True, "partial (default: neighbours first)"),
    ):
        partial = find_partial_pairs(W_dec_EM, cooc_ee, tokens_counted=tokens,
                                     max_pairs=max_pairs, neighbours_first=first)  # fmt: skip
        finders[name] = [(p.parent, p.absorber) for p in partial.pairs]
    # Decoder cosine with nearest-neighbour pairs moved to the top, as the default does.
    finders["decoder cosine, neighbours first"] = nearest_first(
        finders["decoder cosine, no gate"], W_dec_EM
    )
    return finders


def nearest_first(ranked: list[Pair], W_dec_EM: torch.Tensor) -> list[Pair]:
    """`ranked` reordered: pairs where one latent is the other's nearest decoder neighbour
    (cosine) first, each part in its own order. A child's latent lies nearer its parent's
    latent (cosine ~0.93 in the toy) than a sibling's (~0.86)."""
    nearest_E = nearest_neighbours(torch.nn.functional.normalize(W_dec_EM.float(), dim=1)).tolist()
    first = [p for p in ranked if nearest_E[p[0]] == p[1] or nearest_E[p[1]] == p[0]]
    chosen = set(first)
    return first + [p for p in ranked if p not in chosen]


# ---------------------------------------------------------------------------- grading
def grade(ranked: list[Pair], truth: set[frozenset[int]]) -> dict[str, Any]:
    hits = [frozenset(p) in truth for p in ranked]
    row: dict[str, Any] = {}
    for k in KS:
        found = sum(hits[:k])
        row[f"P@{k}"] = found / k
        row[f"R@{k}"] = found / len(truth) if truth else None
    found, ap, curve = 0, 0.0, []
    for rank, hit in enumerate(hits, start=1):
        if hit:
            found += 1
            ap += found / rank
            curve.append((found / len(truth), found / rank))
    row["AP"] = ap / len(truth) if truth else None
    for target in RECALLS:
        reached = [p for r, p in curve if r >= target - 1e-9]
        row[f"P@R{target}"] = max(reached) if reached else 0.0
    row["recall (whole list)"] = found / len(truth) if truth else None
    row["list"] = len(ranked)
    row["curve"] = curve
    return row


def print_table(title: str, truth: set[frozenset[int]], rows: dict[str, dict[str, Any]]) -> None:
    cols = [*(f"P@{k}" for k in KS), *(f"R@{k}" for k in KS), *(f"P@R{r}" for r in RECALLS),
            "AP", "recall (whole list)", "list"]  # fmt: skip
    print(f"\n### {title} ({len(truth)} true pairs)\n")
    print("| finder | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, row in rows.items():
        cells = ["–" if row[c] is None else (f"{row[c]:.3f}" if isinstance(row[c], float)
                 else str(row[c])) for c in cols]  # fmt: skip
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


# ---------------------------------------------------------------------------- toy lab
TOY_SETTINGS = {
    "topk, parent-only 0": {"arch": "topk", "parent_only_prob": 0.0},
    "topk, parent-only 0.3": {"arch": "topk", "parent_only_prob": 0.3},
    "matryoshka, parent-only 0": {"arch": "matryoshka", "parent_only_prob": 0.0},
    "matryoshka, parent-only 0.3": {"arch": "matryoshka", "parent_only_prob": 0.3},
}
SEED_WORLD = {
    "lr": 1e-4,
    "dataset_num_features": 30,
    "batch_size": 100,
    "perturbation_size": 0.4,
    "model_dim": 50,
    "sae_hidden_dim": 90,
    "sae_k": 6,
}
Case = tuple[str, set[frozenset[int]], dict[str, list[Pair]]]


def toy_case(name: str, options: dict[str, Any], steps: int, seed: int, out: Path,
             strengths: list[float]) -> list[Case]:  # fmt: skip
    from pivotal_sae.toy.config import ToyTrainConfig
    from pivotal_sae.toy.train import train

    run_dir = out / f"toy-{name.replace(', ', '-').replace(' ', '_')}-seed{seed}"
    config = ToyTrainConfig(**SEED_WORLD, **options, seed=seed, max_step=steps,
                            eval_every=steps, plots=False, out=run_dir, device="cpu")  # fmt: skip
    if not (run_dir / "summary.json").exists():
        with contextlib.redirect_stdout(io.StringIO()):
            train(config)
    with torch.no_grad():
        return _toy_truth_and_finders(config, run_dir, name, seed, strengths)


def _toy_truth_and_finders(config: Any, run_dir: Path, name: str, seed: int,
                           strengths: list[float]) -> list[Case]:  # fmt: skip
    from pivotal_sae.saes.topk import scatter_dense
    from pivotal_sae.toy import checkpoint
    from pivotal_sae.toy.metrics import cosine_sims, latent_firing
    from pivotal_sae.toy.train import build_lab, restore

    lab = build_lab(config, torch.device("cpu"))
    restore(lab, checkpoint.latest_checkpoint(run_dir)[1])
    sae, batch, features = lab.sae.eval(), lab.validation, lab.features
    result = sae(batch.x_BM)
    fires_BE = latent_firing(sae, result)
    acts_BE = scatter_dense(result.values_BK, result.indices_BK, sae.d_sae)
    cos_AE = cosine_sims(features.parents_AM, sae.W_dec)
    cos_CE = cosine_sims(features.children_CM, sae.W_dec)
    parent_latent_A, child_latent_C = cos_AE.argmax(-1), cos_CE.argmax(-1)
    # How firmly the truth's matching holds: best against runner-up decoder cosine per feature.
    cos_FE = torch.cat([cos_AE, cos_CE])
    margin_F = cos_FE.topk(2, dim=-1).values.diff(dim=-1).neg().squeeze(-1)
    near_ties = float((margin_F < 0.02).float().mean())
    print(
        f"toy {name}, seed {seed}: the best latent of {near_ties:.0%} "
        f"of features beats the runner-up by < 0.02 decoder cosine (median margin "
        f"{float(margin_F.median()):.3f})",
        file=sys.stderr,
    )
    # Where true pairs can lie: each latent in the family (parent and children) of its nearest
    # feature; printed below as the precision of listing every pair inside a family.
    nearest_E = cos_FE.argmax(0)
    n_parents = len(cos_AE)
    family_E = torch.where(nearest_E < n_parents, nearest_E,
                           (nearest_E - n_parents) // features.n_children)  # fmt: skip
    strength: dict[frozenset[int], float] = {}
    for c, child in enumerate(child_latent_C.tolist()):
        parent = int(parent_latent_A[c // features.n_children])
        events = batch.child_on_BC[:, c] & fires_BE[:, child]
        if parent == child or events.sum() < 10:
            continue
        rate = float((events & ~fires_BE[:, parent]).sum() / events.sum())
        key = frozenset((parent, child))
        strength[key] = max(strength.get(key, 0.0), rate)
    cooc = fires_BE.T.float() @ fires_BE.float()
    # Effects: zero latent i in the reconstruction and let the same SAE re-read it.
    rows = slice(0, 2000)
    x_BM, base = result.recon_BM[rows], acts_BE[rows]
    effects = torch.zeros(sae.d_sae, sae.d_sae)
    how_often = torch.zeros(sae.d_sae, dtype=torch.long)
    for i in range(sae.d_sae):
        on = base[:, i] > 0
        if not on.any():
            continue
        ablated = x_BM[on] - base[on, i : i + 1] * sae.W_dec[i]
        reread = sae(ablated)
        effects[i] = (base[on] - scatter_dense(reread.values_BK, reread.indices_BK,
                                               sae.d_sae)).sum(0)  # fmt: skip
        how_often[i] = int(on.sum())
    finders = original_finders(effects, how_often, cooc.round().long(), len(batch.x_BM),
                               sae.W_dec.detach())  # fmt: skip
    finders[PARENT_KNOWN] = parent_known_ranking(sae.W_dec.detach(), parent_latent_A)
    same_family = family_E[:, None] == family_E[None, :]
    in_family = {frozenset(map(int, p)) for p in torch.nonzero(torch.triu(same_family, 1))}
    truths = {s: {k for k, v in strength.items() if v >= s} for s in strengths}
    for s, truth in truths.items():
        print(
            f"toy {name}, seed {seed}, absorption >= {s}: every pair inside a family "
            f"(latents by their nearest feature's parent) lists {len(in_family)} pairs holding "
            f"{len(in_family & truth)} of {len(truth)} true ones",
            file=sys.stderr,
        )
    return [(f"toy {name}, seed {seed}, absorption >= {s}", truth, finders)
            for s, truth in truths.items()]  # fmt: skip


#: Not a finder: it is told which latent is each parent's (the ground truth's own matching).
PARENT_KNOWN = "reference: decoder cosine, told each parent's latent"


def parent_known_ranking(W_dec_EM: torch.Tensor, parent_latent_A: torch.Tensor) -> list[Pair]:
    """Pairs by decoder cosine, every pair holding some parent's latent first: decoder geometry
    given the one thing a finder cannot see and the toy's truth uses (which latent is the
    parent's). A reference, not a bound: a finder using firing statistics can pass it."""
    unit_EM = torch.nn.functional.normalize(W_dec_EM, dim=1)
    score_EE = unit_EM @ unit_EM.T
    is_parent_E = torch.zeros(len(unit_EM), dtype=torch.bool)
    is_parent_E[parent_latent_A] = True
    score_EE = score_EE + 2.0 * (is_parent_E[:, None] | is_parent_E[None, :])
    first, second = torch.triu_indices(len(unit_EM), len(unit_EM), offset=1)
    order = score_EE[first, second].argsort(descending=True)
    return [(int(first[i]), int(second[i])) for i in order]


# ---------------------------------------------------------------------------- MiniLM
def cli(argv: list[str]) -> None:
    from pivotal_sae.cli import main

    with contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    if code != 0:
        raise SystemExit(f"pivotal-sae {argv[0]} failed ({code})")


def search_run(ablator: Path, reader: Path, out: Path, n_prompts: int, cooc_prompts: int):
    """(effects, how_often, cooc, tokens, W_dec) of an `absorb` run of the ablator SAE."""
    from pivotal_sae import load_results
    from pivotal_sae.saes.loading import read_sae_dir

    if not (out / "effects.safetensors").exists():
        cli(["absorb", "--ablator-sae-path", str(ablator), "--reader-sae-path", str(reader),
             "--n-prompts", str(n_prompts), "--cooccurrence-prompts", str(cooc_prompts),
             "--decoder-pairs", "0", "--out", str(out)])  # fmt: skip
    results = load_results(out)
    W_dec = read_sae_dir(ablator).W_dec.detach()
    return (results["effects_eE"], results["how_often_activated_e"],
            results["cooccurrences_ee"], results.tokens_counted, W_dec)  # fmt: skip


def cooccur_run(sae: Path, out: Path, cooc_prompts: int):
    """(None, None, cooc, tokens, W_dec): co-occurrence counts alone, for a block whose latents
    no later reader block can show ablation effects for."""
    from pivotal_sae import load_results
    from pivotal_sae.saes.loading import read_sae_dir

    if not (out / "cooccurrences.safetensors").exists():
        cli(["cooccur", "--ablator-sae-path", str(sae), "--n-prompts", str(cooc_prompts),
             "--out", str(out)])  # fmt: skip
    results = load_results(out)
    W_dec = read_sae_dir(sae).W_dec.detach()
    return None, None, results["cooccurrences_ee"], results.tokens_counted, W_dec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/absorption-finders"))
    parser.add_argument("--toy-steps", type=int, default=3000)
    parser.add_argument("--toy-seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--toy-strengths", type=float, nargs="+", default=[0.05, 0.5])
    parser.add_argument("--plant-seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--score-run", type=Path, help="an absorption-score run on the defaults")
    parser.add_argument(
        "--category-block",
        type=int,
        choices=[3, 4],
        default=3,
        help="which default SAE's category pairs to grade (4: co-occurrence "
        "and decoder finders only: no later block reads its ablations)",
    )
    parser.add_argument("--toy-arches", nargs="+", default=list(TOY_SETTINGS))
    parser.add_argument("--n-prompts", type=int, default=128)
    parser.add_argument("--cooccurrence-prompts", type=int, default=1024)
    parser.add_argument("--skip", nargs="*", default=[], choices=["toy", "planted", "category"])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    curves: dict[str, dict[str, list[tuple[float, float]]]] = {}
    budget = (args.n_prompts, args.cooccurrence_prompts)

    def report(title: str, truth: set[frozenset[int]], finders: dict[str, list[Pair]]) -> None:
        rows = {name: grade(ranked, truth) for name, ranked in finders.items()}
        print_table(title, truth, rows)
        curves[title] = {name: row["curve"] for name, row in rows.items()}

    if "toy" not in args.skip:
        for seed in args.toy_seeds:
            for name in args.toy_arches:
                options = TOY_SETTINGS[name]
                for title, truth, finders in toy_case(name, options, args.toy_steps, seed,
                                                      args.out, args.toy_strengths):  # fmt: skip
                    report(title, truth, finders)
    needs_lm = {"planted", "category"} - set(args.skip)
    if needs_lm:
        from pivotal_sae.training.defaults import DEFAULT_HOOKS
        from pivotal_sae.training.job import ensure_default_saes

        dirs = ensure_default_saes()
        ablator, reader = dirs[DEFAULT_HOOKS[0]], dirs[DEFAULT_HOOKS[1]]
    if "planted" not in args.skip:
        for seed in args.plant_seeds:
            plant_dir = args.out / f"planted-seed{seed}"
            if not (plant_dir / "answer_key.json").exists():
                cli(["plant-absorption", "--seed", str(seed), "--out", str(plant_dir)])
            key = json.loads((plant_dir / "answer_key.json").read_text())
            truth = {frozenset((p["parent"], p["child"])) for p in key["pairs"]}
            search = args.out / f"search-planted-seed{seed}"
            found = search_run(plant_dir / "sae", reader, search, *budget)
            finders = original_finders(*found)
            report(f"planted in MiniLM block 3, seed {seed}, rate {key['rate']}", truth, finders)
    if "category" not in args.skip and args.score_run is not None:
        records = json.loads((args.score_run / "records.json").read_text())
        hook = DEFAULT_HOOKS[args.category_block - 3]
        truth = {frozenset((m, r["absorbing_latent"])) for r in records if r["hook"] == hook
                 for m in r["main_latents"] if m != r["absorbing_latent"]}  # fmt: skip
        if args.category_block == 3:
            found = search_run(ablator, reader, args.out / "search-default", *budget)
        else:
            found = cooccur_run(reader, args.out / "cooccur-block4", args.cooccurrence_prompts)
        finders = original_finders(*found)
        report(f"category score on MiniLM block {args.category_block} (main, absorber)", truth,
               finders)  # fmt: skip
    plot_curves(curves, args.out / "pr_curves.png")
    elapsed = time.perf_counter() - started
    print(f"\nwall time {elapsed:.0f} s; curves in {args.out / 'pr_curves.png'}", file=sys.stderr)


def plot_curves(curves: dict[str, dict[str, list[tuple[float, float]]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(curves), 1)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, (title, by_finder) in zip(axes.flat, curves.items(), strict=False):
        for name, curve in by_finder.items():
            if curve:
                recall, precision = zip(*curve, strict=True)
                ax.plot(recall, precision, marker=".", ms=3, lw=1, label=name)
        ax.set_title(title, fontsize=7)
        ax.set_xlabel("recall", fontsize=7)
        ax.set_ylabel("precision", fontsize=7)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.05)
    axes.flat[0].legend(fontsize=5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
