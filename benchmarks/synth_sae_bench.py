"""SynthSAEBench side by side: our SAEs and SAELens's trainers on one synthetic world, one command.

Builds the world (SAELens's `SyntheticModel`, cached), prints its statistics against the
published ones, then trains every chosen architecture on the same number of fresh samples, scores
each with SAELens's `eval_sae_on_synthetic_data` plus our tree absorption gap
(toy/synthetic_eval.py), and prints a table. After every architecture the table so far is written
to `--out` as results.json and results.md, so a run stopped by a time limit still leaves one.

Ours: `topk` (per-row top-k), `batchtopk`, `matryoshka` (nested prefixes, per-row top-k),
`matryoshka-batchtopk`, `hierarchical` (width/5 parent latents with 4 winner-take-all children
each, ceil(k/2) parents per row so that parents plus children come to about k), `tree`
(`--tree-roots` trees of `--tree-branching` children per level, `--tree-depth` levels, beside
flat latents filling the width; its BatchTopK top level keeps k per row minus the children's
moving firing rate, so that the whole tree comes to about k; the default, 128 roots x
(1 + 4 + 16) + 1,408 flat latents, covers the published world's first two levels). References:
SAELens's BatchTopK and Matryoshka BatchTopK through its `SyntheticSAERunner`. Matryoshka prefixes
are width/32, width/8, width/2 and width for both (128, 512, 2048, 4096 at the published width).
Ours can take SAELens's training choices one at a time, all off by default: --rank-by-norm,
--decoder-init-norm, --level-aux and --clip-grad-norm (docs/toy.md).

Defaults are the published recipe (SynthSAEBench-16k, width 4096, batch 1024, lr 3e-4) at 10M
samples per architecture (the published budget is 200M); on one H100 a 600 s call holds about
four architectures at that budget (docs/toy.md), so choose them with --arch. A CPU check:

    python benchmarks/synth_sae_bench.py --world synthsaebench-small --budget-samples 30000 \
        --width 128 --batch-size 256 --lr 3e-3 --l0 5 --tree-roots 4 --device cpu --out /tmp/synth
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import torch

from pivotal_sae.errors import UserError

COLUMNS: tuple[str, ...] = ("f1", "mcc", "uniqueness", "explained_variance", "absorption_gap", "l0")
COLUMNS += ("dead_latents", "samples", "samples_per_s", "train_s", "eval_s")

#: SynthSAEBench-16k as published (SAELens docs/synth_sae_bench.md): mean L0 of the world, and
#: counting only its 4,096 most frequent features.
PUBLISHED_STATS = {"synthsaebench-16k": {"mean_l0": 34.0, "mean_l0_top": 25.0}}

#: Published F1 / MCC at 200M samples (SAELens docs), for the printout only.
PUBLISHED_SCORES = {
    ("saelens-matryoshka", 25): (0.879, 0.793),
    ("saelens-batchtopk", 25): (0.732, 0.757),
    ("saelens-matryoshka", 20): (0.860, 0.746),
    ("saelens-batchtopk", 20): (0.818, 0.753),
}


def bench_prefixes(width: int) -> tuple[int, ...]:
    return tuple(sorted({max(1, width // 32), max(1, width // 8), max(1, width // 2), width}))


def ours(arch: str, world: Any, args: argparse.Namespace, k: int) -> dict[str, Any]:
    from pivotal_sae.absorption.pairs import tf32_matmuls
    from pivotal_sae.saes.toy_io import FLAT_ARCHITECTURES, build_toy_sae
    from pivotal_sae.toy.level_aux import MATRYOSHKA_ARCHITECTURES
    from pivotal_sae.toy.synthetic_eval import train_on_world

    width, k_arch, parents = args.width, k, None
    flat = arch in FLAT_ARCHITECTURES
    if arch == "hierarchical":
        width, k_arch = args.width // 5, math.ceil(k / 2)
    if arch == "tree":
        parents = tree_layout(args, args.tree_depth_now)
    sae = build_toy_sae(
        arch,
        world.cfg.hidden_dim,
        width,
        k_arch,
        n_children=4,
        prefixes=bench_prefixes(width),
        parents=parents,
        generator=torch.Generator().manual_seed(args.seed),
        rank_by_norm=args.rank_by_norm and flat,
        decoder_init_norm=args.decoder_init_norm if flat else 1.0,
    ).to(args.device)
    checkpoint = None
    if args.checkpoint_dir is not None:
        label = f"tree-d{args.tree_depth_now}" if arch == "tree" else arch
        args.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        checkpoint = args.checkpoint_dir / f"{label}-l0{k}-seed{args.seed}.pt"
    with tf32_matmuls(args.tf32):
        speed = train_on_world(
            sae, world, args.budget_samples, args.batch_size, args.lr, args.seed,
            lr_decay=args.lr_decay, max_seconds=args.train_seconds or None,
            cuda_graph=args.cuda_graph, checkpoint=checkpoint,
            aux_k=args.aux_k, aux_k_coeff=args.aux_k_coeff,
            level_aux=args.level_aux if arch in MATRYOSHKA_ARCHITECTURES else 0.0,
            clip_grad_norm=args.clip_grad_norm if flat else 0.0,
            normalize_decoder=args.normalize_decoder,
        )  # fmt: skip
    return {"sae": sae, **speed}


def tree_layout(args: argparse.Namespace, depth: int) -> tuple[int, ...]:
    from pivotal_sae.saes.tree import forest_parents

    try:
        return forest_parents(args.width, args.tree_roots, args.tree_branching, depth)
    except ValueError as exc:
        raise UserError(f"--tree-roots/--tree-branching/--tree-depth: {exc}") from None


def saelens(arch: str, world: Any, args: argparse.Namespace, k: int) -> dict[str, Any]:
    from sae_lens.config import LoggingConfig
    from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAEConfig
    from sae_lens.saes.matryoshka_batchtopk_sae import MatryoshkaBatchTopKTrainingSAEConfig
    from sae_lens.synthetic.synthetic_sae_runner import (
        SyntheticSAERunner,
        SyntheticSAERunnerConfig,
    )

    d_in = world.cfg.hidden_dim
    sae_cfg: Any
    if arch == "saelens-matryoshka":
        widths = list(bench_prefixes(args.width))
        # As published (synth-sae-bench-experiments): each level's dead latents reconstruct that
        # level's own error.
        sae_cfg = MatryoshkaBatchTopKTrainingSAEConfig(
            d_in=d_in, d_sae=args.width, k=k, matryoshka_widths=widths,
            use_matryoshka_aux_loss=args.saelens_recipe == "published",
        )  # fmt: skip
    else:
        sae_cfg = BatchTopKTrainingSAEConfig(d_in=d_in, d_sae=args.width, k=k)
    cfg: Any = SyntheticSAERunnerConfig(
        synthetic_model=world.cfg,
        sae=sae_cfg,
        training_samples=args.budget_samples,
        batch_size=args.batch_size,
        lr=args.lr,
        device=args.device,
        autocast_sae=args.saelens_recipe == "published",
        autocast_data=args.saelens_recipe == "published",
        output_path=None,
        checkpoint_path=None,
        run_final_eval=False,
        logger=LoggingConfig(log_to_wandb=False),
    )
    if args.train_seconds or args.checkpoint_dir is not None:
        # Stoppable and resumable: SAELens's trainer driven step by step, draws pooled.
        from pivotal_sae.toy.saelens_reference import draws_per_batch_pool, train_saelens_reference

        checkpoint = None
        if args.checkpoint_dir is not None:
            checkpoint = args.checkpoint_dir / f"{arch}-l0{k}-seed{args.seed}"
        per_draw = draws_per_batch_pool(world, args.batch_size, args.budget_samples)
        trained = train_saelens_reference(
            cfg, world, args.seed, per_draw=per_draw, max_seconds=args.train_seconds or None,
            checkpoint=checkpoint,
        )  # fmt: skip
        return {**trained, "loop": f"SAETrainer steps, {per_draw} batches per draw"}
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    result = SyntheticSAERunner(cfg, override_synthetic_model=world).run()
    seconds = time.perf_counter() - start
    return {
        "sae": result.sae,
        "samples_per_s": args.budget_samples / seconds,
        "samples": args.budget_samples,
        "loop": "SyntheticSAERunner.run",
    }


ARCHS: dict[str, Callable[[str, Any, argparse.Namespace, int], dict[str, Any]]] = {
    "topk": ours,
    "batchtopk": ours,
    "matryoshka": ours,
    "matryoshka-batchtopk": ours,
    "hierarchical": ours,
    "tree": ours,
    "saelens-batchtopk": saelens,
    "saelens-matryoshka": saelens,
}


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UserError(message)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--world", default="synthsaebench-16k")
    parser.add_argument(
        "--budget-samples", "--samples", type=int, default=10_000_000, help="training samples"
    )
    parser.add_argument("--eval-samples", type=int, default=100_000)
    parser.add_argument("--stats-samples", type=int, default=100_000)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument(
        "--lr-decay",
        type=float,
        default=0.0,
        help="ours: decay the lr linearly to 0 over this final share of training (0: constant)",
    )
    parser.add_argument(
        "--train-seconds",
        type=float,
        default=0.0,
        help="stop training after this long; the row's samples column says how far (0: off). "
        "SAELens's references then train through SAELens's SAETrainer step by step with pooled "
        "draws (src/pivotal_sae/toy/saelens_reference.py) instead of its runner",
    )
    parser.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=None,
        help="a run stopped by --train-seconds saves its state here, and the same command run "
        "again resumes it (one budget over several device calls); SAELens's references too, "
        "as --train-seconds says",
    )
    parser.add_argument(
        "--aux-k",
        type=int,
        default=0,
        help="ours: the aux-k loss for dead latents with this many of them per row (0: off; "
        "src/pivotal_sae/toy/revival.py)",
    )
    parser.add_argument("--aux-k-coeff", type=float, default=1 / 32, help="ours: its weight")
    parser.add_argument(
        "--normalize-decoder",
        action="store_true",
        help="ours: decoder rows back to unit norm after every step (BatchTopK then ranks "
        "latents on one scale, as SAELens's rescaling by decoder norms does)",
    )
    parser.add_argument(
        "--level-aux",
        type=float,
        default=0.0,
        help="ours, matryoshka and matryoshka-batchtopk: weight of SAELens's per-level "
        "auxiliary loss for latents silent 1,000 steps (src/pivotal_sae/toy/level_aux.py; "
        "SAELens's published recipe: 1; 0: off)",
    )
    parser.add_argument(
        "--clip-grad-norm",
        type=float,
        default=0.0,
        help="ours, flat TopK family: clip the gradient's total norm each step, in SAELens's "
        "units (its loss sums over dimensions and Matryoshka levels; its trainer clips at 1; "
        "0: off)",
    )
    parser.add_argument(
        "--rank-by-norm",
        action="store_true",
        help="ours, flat TopK family: select latents by pre-activation times decoder row norm "
        "(and BatchTopK's threshold in those units), as SAELens's rescale_acts_by_decoder_norm; "
        "the decoder is not renormalised",
    )
    parser.add_argument(
        "--decoder-init-norm",
        type=float,
        default=1.0,
        help="ours, flat TopK family: initial norm of each decoder row, the encoder its "
        "transpose (SAELens initialises at 0.1)",
    )
    parser.add_argument(
        "--cuda-graph",
        action="store_true",
        help="ours, on a GPU: TopK and Matryoshka replay a CUDA graph of the training step "
        "(checked against the eager step on an H100; no faster there at the default sizes)",
    )
    parser.add_argument(
        "--tf32",
        action="store_true",
        help="ours, on a GPU: float32 matrix products in TF32 while training (the world's draws "
        "included; scoring stays in full float32)",
    )
    parser.add_argument(
        "--readouts",
        nargs="+",
        default=["trained"],
        help="our flat SAEs: also score them read out with calibrated thresholds "
        "(src/pivotal_sae/toy/readout.py); one row each, named arch+readout",
    )
    parser.add_argument(
        "--latent-report",
        action="store_true",
        help="write latents.json: per latent and readout, its matched feature, true and false "
        "positives and mean activations (what the F1 is made of)",
    )
    parser.add_argument(
        "--saelens-recipe",
        choices=["published", "defaults"],
        default="published",
        help="SAELens's references: 'published' trains them as the SynthSAEBench experiments did "
        "(bfloat16 autocast of the SAE and of the world's draws; Matryoshka with its per-level "
        "aux loss); 'defaults' in float32 with SAELens's defaults, as rows before 2026-12-07 were",
    )
    parser.add_argument("--l0", type=int, nargs="+", default=[25, 20])
    parser.add_argument("--arch", nargs="+", default=list(ARCHS))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tree-roots", type=int, default=128, help="tree SAE: trees")
    parser.add_argument("--tree-branching", type=int, default=4, help="tree SAE: children each")
    parser.add_argument(
        "--tree-depth",
        type=int,
        nargs="+",
        default=[2],
        help="tree SAE: levels below the roots; one tree-d<depth> row per value",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=0.0,
        help="skip an architecture that the previous one's time says would end past this (0: off)",
    )
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "benchmarks/out"))
    args = parser.parse_args(argv)
    check_args(args)
    return args


def check_args(args: argparse.Namespace) -> None:
    from pivotal_sae.toy.worlds import WORLD_SHAPES, check_world

    if args.world not in WORLD_SHAPES:
        raise UserError(f"unknown --world {args.world!r}; choose one of {', '.join(WORLD_SHAPES)}")
    unknown = [a for a in args.arch if a not in ARCHS]
    if unknown:
        raise UserError(f"unknown --arch {unknown[0]!r}; choose from {', '.join(ARCHS)}")
    if not args.device.startswith(("cpu", "cuda")):
        raise UserError(f"unknown --device {args.device!r}; choose cpu or cuda")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda but no GPU is available; use --device cpu")
    for flag in ("budget_samples", "eval_samples", "stats_samples", "width", "batch_size"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1")
    if not 0 < args.lr <= 1:
        raise UserError(f"--lr must be in (0, 1] (got {args.lr})")
    if not 0 <= args.lr_decay <= 1:
        raise UserError(f"--lr-decay must be in [0, 1] (got {args.lr_decay})")
    from pivotal_sae.toy.readout import READOUTS

    bad = [r for r in args.readouts if r not in READOUTS]
    if bad:
        raise UserError(f"unknown --readouts {bad[0]!r}; choose from {', '.join(READOUTS)}")
    if args.cuda_graph and not args.device.startswith("cuda"):
        raise UserError("--cuda-graph needs --device cuda")
    if args.tf32 and not args.device.startswith("cuda"):
        raise UserError("--tf32 needs --device cuda")
    if not 0 <= args.aux_k <= args.width:
        raise UserError(f"--aux-k must be between 0 and --width ({args.width}), got {args.aux_k}")
    if not 0 <= args.clip_grad_norm < math.inf:
        raise UserError(f"--clip-grad-norm must be at least 0 (got {args.clip_grad_norm})")
    if not 0 <= args.level_aux < math.inf:
        raise UserError(f"--level-aux must be at least 0 (got {args.level_aux})")
    if not 0 < args.decoder_init_norm < math.inf:
        raise UserError(f"--decoder-init-norm must be > 0 (got {args.decoder_init_norm})")
    if args.aux_k_coeff < 0:
        raise UserError(f"--aux-k-coeff must be at least 0 (got {args.aux_k_coeff})")
    if args.train_seconds < 0:
        raise UserError(f"--train-seconds must be at least 0 (got {args.train_seconds})")
    if args.checkpoint_dir is not None and args.checkpoint_dir.is_file():
        raise UserError(f"--checkpoint-dir {args.checkpoint_dir} exists and is not a directory")
    check_world(args.world, args.device, args.width)
    if "hierarchical" in args.arch and args.width < 5:
        raise UserError(f"--width ({args.width}) must be at least 5 for the hierarchical SAE")
    for depth in args.tree_depth if "tree" in args.arch else []:
        top = sum(parent < 0 for parent in tree_layout(args, depth))
        if max(args.l0) > top:
            raise UserError(f"--l0 {max(args.l0)} exceeds the tree SAE's {top} top-level latents")
    for k in args.l0:
        if not 1 <= k <= args.width:
            raise UserError(f"--l0 {k} must be between 1 and --width ({args.width})")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} exists and is not a directory")


def write_results(out: Path, results: dict[str, Any]) -> None:
    from pivotal_sae.runs import atomic_write_json

    atomic_write_json(out / "results.json", results)
    lines = [
        f"SynthSAEBench: world {results['world']}, {results['budget_samples']:,} training "
        f"samples each, width {results['width']}, batch {results['batch_size']}, lr "
        f"{results['lr']} (ours: decayed linearly over the last {results.get('lr_decay', 0):.0%}"
        f"), device {results['device']}",
        "",
        "| arch | L0 target | " + " | ".join(COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 2) + "|",
    ]
    lines += [
        f"| {row['arch']} | {row['l0_target']} | "
        + " | ".join(cell(row, c) for c in COLUMNS)
        + " |"
        for row in results["rows"]
    ]
    partial = out / "results.md.partial"
    partial.write_text("\n".join(lines) + "\n")
    partial.replace(out / "results.md")


def cell(row: dict[str, Any], column: str) -> str:
    value = row.get(column)
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({os.cpu_count()} cores visible, {torch.get_num_threads()} threads)"


def run(args: argparse.Namespace) -> dict[str, Any]:
    from pivotal_sae.runs import atomic_write_json
    from pivotal_sae.toy.synthetic_eval import (
        READOUT_ARCHS,
        latent_report,
        score_on_world,
        scoring_view,
    )
    from pivotal_sae.toy.worlds import load_world, world_statistics

    began = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "world": args.world,
        "device": device_name(args.device),
        "budget_samples": args.budget_samples,
        "width": args.width,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "lr_decay": args.lr_decay,
        "aux_k": args.aux_k,
        "aux_k_coeff": args.aux_k_coeff,
        "normalize_decoder": args.normalize_decoder,
        "level_aux": args.level_aux,
        "clip_grad_norm": args.clip_grad_norm,
        "rank_by_norm": args.rank_by_norm,
        "decoder_init_norm": args.decoder_init_norm,
        "saelens_recipe": args.saelens_recipe,
        "eval_samples": args.eval_samples,
        "rows": [],
    }
    world = load_world(args.world, device=args.device)
    results["world_build_s"] = time.perf_counter() - began
    print(f"world {args.world} ready in {results['world_build_s']:.1f}s on {results['device']}")
    start = time.perf_counter()
    stats = world_statistics(world, samples=args.stats_samples, top=args.width)
    results["world_statistics"] = stats
    published = PUBLISHED_STATS.get(args.world, {})
    print(
        f"world statistics ({args.stats_samples:,} samples, {time.perf_counter() - start:.1f}s): "
        f"mean L0 {stats['mean_l0']:.2f} (published {published.get('mean_l0', '-')}), among "
        f"the {args.width} most frequent features {stats['mean_l0_top']:.2f} (published "
        f"{published.get('mean_l0_top', '-')}); tree roots and flat features are "
        f"{stats['top_level_share']:.0%} of firing features",
        flush=True,
    )
    write_results(args.out, results)
    reports: dict[str, Any] = {}
    last_seconds = 0.0
    runs = [
        (f"tree-d{depth}" if arch == "tree" else arch, arch, depth)
        for arch in args.arch
        for depth in (args.tree_depth if arch == "tree" else [0])
    ]
    for k in args.l0:
        for label, arch, depth in runs:
            args.tree_depth_now = depth
            elapsed = time.perf_counter() - began
            if args.max_seconds and elapsed + last_seconds > args.max_seconds:
                print(
                    f"skip {label} at L0 {k}: {elapsed:.0f}s gone, the last took "
                    f"{last_seconds:.0f}s"
                )
                results["rows"].append({"arch": label, "l0_target": k, "skipped": "time"})
                write_results(args.out, results)
                continue
            arch_began = time.perf_counter()
            try:
                trained = ARCHS[arch](arch, world, args, k)
                train_s = time.perf_counter() - arch_began
                sae = trained.pop("sae")
                scored_at = time.perf_counter()
                scores = score_on_world(sae, world, samples=args.eval_samples)
            except Exception as exc:  # one architecture's failure must not cost the others' time
                traceback.print_exc()
                results["rows"].append({"arch": label, "l0_target": k, "error": repr(exc)})
                write_results(args.out, results)
                continue
            finally:
                if args.device.startswith("cuda"):
                    torch.cuda.empty_cache()
            row = {"arch": label, "l0_target": k, **trained, **scores, "train_s": train_s}
            row["eval_s"] = time.perf_counter() - scored_at
            results["rows"].append(row)
            write_results(args.out, results)
            readouts = list(dict.fromkeys(["trained", *args.readouts]))
            for readout in readouts if arch in READOUT_ARCHS else []:
                if readout == "trained" and not args.latent_report:
                    continue
                try:  # one calibration serves the row and the report
                    read_at = time.perf_counter()
                    view = scoring_view(sae, world, readout)
                    if readout != "trained":
                        read = score_on_world(sae, world, samples=args.eval_samples, view=view)
                        read["eval_s"] = time.perf_counter() - read_at
                        results["rows"].append({**row, **read, "arch": f"{label}+{readout}"})
                        print(f"{label}+{readout} L0 {k}: F1 {read['f1']:.3f} (P "
                              f"{read['precision']:.3f} R {read['recall']:.3f}) MCC "
                              f"{read['mcc']:.3f} L0 {read['l0']:.1f} gap "
                              f"{read['absorption_gap']:.3f}", flush=True)  # fmt: skip
                    if args.latent_report:
                        reports[f"{label}-l0{k}+{readout}"] = latent_report(
                            sae, world, samples=args.eval_samples, view=view
                        )
                        atomic_write_json(args.out / "latents.json", reports)
                except Exception as exc:  # a readout's failure must not cost the next rows
                    traceback.print_exc()
                    results["rows"].append(
                        {"arch": f"{label}+{readout}", "l0_target": k, "error": repr(exc)}
                    )
                write_results(args.out, results)
            last_seconds = time.perf_counter() - arch_began
            reference = PUBLISHED_SCORES.get((arch, k))
            note = (
                f" (published F1/MCC at 200M: {reference[0]}/{reference[1]})" if reference else ""
            )
            print(
                f"{label} L0 {k}: F1 {row['f1']:.3f} MCC {row['mcc']:.3f} EV "
                f"{row['explained_variance']:.3f} gap {row['absorption_gap']:.3f} L0 "
                f"{row['l0']:.1f} dead {row['dead_latents']} | {row['samples_per_s']:,.0f} "
                f"samples/s, train {train_s:.0f}s, eval {row['eval_s']:.0f}s{note}",
                flush=True,
            )
    results["total_s"] = time.perf_counter() - began
    write_results(args.out, results)
    print((args.out / "results.md").read_text())
    return results


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except UserError as exc:
        print(f"synth_sae_bench: {exc}", file=sys.stderr)
        return 2
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
