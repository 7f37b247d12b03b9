"""Issue 13, must-show 3: every command with a table of bad values. Each gives one stderr
line, exit code 2, no traceback, and leaves the working folder exactly as it was. The rows are
checked before any model loads, so the whole table runs in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from pivotal_sae.cli import main

BIG = "1" + "0" * 30
TOY = ["toy", "train", "--no-plots"]
TRAIN = ["train-sae", "--out", "{tmp}/run"]
COOC = ["cooccur", "--out", "{tmp}/run"]
ABL = ["ablate", "--out", "{tmp}/run"]
ABS = ["absorb", "--out", "{tmp}/run"]
PAIRS = ["pairs", "--input-path", "{tmp}/user"]
HL = ["highlight", "--prompt", "Hello there.", "--feature-idx", "1", "--out", "{tmp}/hl.html"]

SWEEP = [
    # toy train
    ([*TOY, "--lr", "0"], "--lr"),
    ([*TOY, "--lr", "inf"], "finite"),
    ([*TOY, "--lr", "nan"], "finite"),
    ([*TOY, "--lr", "1e308"], "--lr"),
    ([*TOY, "--min-lr", "-1"], "--min-lr"),
    ([*TOY, "--max-step", "-1"], "--max-step"),
    ([*TOY, "--max-step", BIG], "--max-step"),
    ([*TOY, "--batch-size", "0"], "--batch-size"),
    ([*TOY, "--batch-size", "1000000000"], "GiB"),
    ([*TOY, "--sae-hidden-dim", "0"], "--sae-hidden-dim"),
    ([*TOY, "--sae-hidden-dim", "1000000000"], "GiB"),
    ([*TOY, "--model-dim", "1000000000"], "GiB"),
    ([*TOY, "--n-children", "1"], "--n-children"),
    ([*TOY, "--n-children", "1000000000"], "GiB"),
    ([*TOY, "--dataset-num-features", "1000000000"], "GiB"),
    ([*TOY, "--perturbation-size", "inf"], "finite"),
    ([*TOY, "--perturbation-size", "-0.1"], "--perturbation-size"),
    ([*TOY, "--parent-only-prob", "1.5"], "--parent-only-prob"),
    ([*TOY, "--dead-share", "2"], "--dead-share"),
    ([*TOY, "--lr-decay-frac", "2"], "--lr-decay-frac"),
    ([*TOY, "--eval-every", "0"], "--eval-every"),
    ([*TOY, "--log-every", "0"], "--log-every"),
    ([*TOY, "--arch", "topk", "--hierarchical"], "contradicts"),
    ([*TOY, "--arch", "nope"], "--arch"),
    ([*TOY, "--matryoshka-prefixes", "4"], "--matryoshka-prefixes"),
    ([*TOY, "--device", "tpu"], "--device"),
    ([*TOY, "--out", ""], "--out is empty"),
    ([*TOY, "--out", "{tmp}/file"], "not a directory"),
    ([*TOY, "--out", "{tmp}/file/sub"], "cannot be created"),
    ([*TOY, "--out", "{tmp}/user"], "already holds files"),
    ([*TOY, "--out", "/proc/pivotal-sae-sweep"], "cannot be created"),
    ([*TOY, "--resume", "{tmp}/user"], "not a run directory"),
    ([*TOY, "--resume", "{tmp}/missing"], "not a directory"),
    ([*TOY, "--out", "{tmp}/new", "--resume", "{tmp}/user"], "--out or --resume"),
    ([*TOY, "--max-step", "x"], "--max-step"),
    # train-sae and sae-info
    ([*TRAIN, "--d-sae", "0"], "--d-sae"),
    ([*TRAIN, "--k", "0"], "--k"),
    ([*TRAIN, "--n-prompts", "0"], "--n-prompts"),
    ([*TRAIN, "--n-prompts", BIG], "more than any corpus holds"),
    ([*TRAIN, "--lr", "-1"], "--lr"),
    ([*TRAIN, "--buffer-tokens", "10"], "--buffer-tokens"),
    ([*TRAIN, "--max-tokens-in-prompt", "1"], "--max-tokens-in-prompt"),
    ([*TRAIN, "--corpus", "{tmp}/user", "--dataset-id", "x/y"], "not both"),
    ([*TRAIN, "--dtype", "int8"], "--dtype"),
    (["train-sae", "--out", ""], "--out is empty"),
    (["train-sae", "--resume", "{tmp}/user"], "not a run directory"),
    (["train-sae", "--resume", "{tmp}/missing"], "not a directory"),
    (["train-sae", "--resume", "{tmp}/file"], "not a directory"),
    (["train-sae", "--resume", ""], "--resume is empty"),
    ([*TRAIN, "--resume", "{tmp}/user"], "--out or --resume"),
    ([*TRAIN, "--save-every", "0"], "--save-every"),
    (["sae-info", "--sae-path", "{tmp}/user", "--sae-release", "r"], "not both"),
    (["sae-info", "--sae-release", "r"], "go together"),
    (["sae-info", "--n-prompts", "-1"], "--n-prompts"),
    # cooccur, ablate, absorb
    ([*COOC, "--n-prompts", "0"], "--n-prompts"),
    ([*COOC, "--n-prompts", BIG], "more than any corpus holds"),
    ([*COOC, "--n-examples", "0"], "--n-examples"),
    ([*COOC, "--batch-size", "0"], "--batch-size"),
    ([*COOC, "--save-frequency", "0"], "--save-frequency"),
    ([*COOC, "--resume", "{tmp}/user"], "--out or --resume"),
    (["cooccur", "--out", "{tmp}/user"], "already holds files"),
    (["cooccur", "--out", "{tmp}/file"], "not a directory"),
    (["cooccur", "--out", "{tmp}/file/sub"], "cannot be created"),
    (["cooccur", "--resume", "{tmp}/user"], "not a run directory"),
    ([*ABL, "--exclude-latent-threshold", "1.5"], "--exclude-latent-threshold"),
    ([*ABL, "--abridge-ablations-to", "0"], "--abridge-ablations-to"),
    ([*ABL, "--exclusion-prompts", "0"], "--exclusion-prompts"),
    ([*ABS, "--cosine-sim-threshold", "2"], "--cosine-sim-threshold"),
    ([*ABS, "--cooccurrence-threshold", "-1"], "--cooccurrence-threshold"),
    ([*ABS, "--min-ablations", "0"], "--min-ablations"),
    ([*ABS, "--max-pairs", "0"], "--max-pairs"),
    ([*ABS, "--partial-pairs", "-1"], "--partial-pairs"),
    ([*ABS, "--partial-exponent", "-1"], "--partial-exponent"),
    ([*ABS, "--partial-exponent", "nan"], "--partial-exponent"),
    ([*ABS, "--partial-exponent", "inf"], "--partial-exponent"),
    ([*PAIRS, "--partial-pairs", "-5"], "--partial-pairs"),
    ([*ABS, "--method", "cosine"], "--method"),
    ([*PAIRS, "--method", ""], "--method"),
    ([*ABS, "--cooccurrence-prompts", BIG], "more than any corpus holds"),
    ([*ABS, "--explanations", "{tmp}/missing.jsonl"], "does not exist"),
    ([*ABS, "--ablator-sae-neuronpedia-id", "no-slash"], "Neuronpedia id"),
    ([*ABS, "--ablator-sae-neuronpedia-id", "../.."], "Neuronpedia id"),
    (["absorb", "--out", ""], "--out is empty"),
    # pairs
    (["pairs"], "--input-path"),
    (["pairs", "--input-path", "{tmp}/missing"], "no such file or directory"),
    ([*PAIRS], "holds no effects"),
    ([*PAIRS, "--cosine-sim-threshold", "-2"], "--cosine-sim-threshold"),
    (["pairs", "--input-path", "{tmp}/file"], "is not an effects file"),
    # serve and highlight
    (["serve", "--port", "0"], "--port"),
    (["serve", "--port", "70000"], "--port"),
    (["serve", "--host", "0.0.0.0"], "--token"),
    (["serve", "--token", "short"], "--token"),
    (["serve", "--token", "tökén-12345"], "--token"),
    (["serve", "--host", "0.0.0.0", "--token", "            "], "--token"),
    (["serve", "--max-prompt-chars", "0"], "--max-prompt-chars"),
    (["serve", "--run", "{tmp}/user"], "not an absorb run directory"),
    ([*HL[:-1], "{tmp}/user"], "is a directory"),
    ([*HL[:-1], "{tmp}/file/sub.html"], "does not exist"),
    ([*HL, "--feature-idx", "-1"], "--feature-idx"),
    ([*HL, "--timeout", "-1"], "--timeout"),
    ([*HL, "--server", "ftp://x"], "--server"),
    ([*HL, "--server", "http://127.0.0.1:9", "--model", "x"], "drop --model"),
    (["highlight", "--prompt", " ", "--feature-idx", "1", "--out", "{tmp}/hl.html"], "empty"),
]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(("argv", "needle"), SWEEP, ids=[" ".join(a[:4]) for a, _ in SWEEP])
def test_bad_input_sweep(argv, needle, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "mine.txt").write_text("the user's own file")
    (tmp_path / "file").write_text("a file of the user's")
    before = _tree(tmp_path), sorted(p.name for p in tmp_path.rglob("*"))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert needle in err, err
    assert (_tree(tmp_path), sorted(p.name for p in tmp_path.rglob("*"))) == before


def test_the_sweep_has_at_least_60_rows():
    assert len(SWEEP) >= 60
