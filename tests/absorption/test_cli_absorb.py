"""`cooccur`, `ablate`, `pairs` and `absorb` through the CLI, on a tiny random model.

End to end (the separate commands give what `absorb` gives), bad input (one stderr line, exit
code 2, nothing written or overwritten), and SIGKILL mid-run + `--resume` (identical counts,
examples and effects to an uninterrupted run).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_llama import save_tiny_llama

from pivotal_sae.absorption.results import read_file, save_effects
from pivotal_sae.cli import main
from pivotal_sae.saes.loading import save_sae
from pivotal_sae.saes.sae import Sae

# The CLI, pausing 0.2 s after each checkpoint: on a busy machine the watching test could
# otherwise miss a whole stage; the SIGKILL still lands wherever the child is at that moment.
LAUNCH = """import sys, time
from pivotal_sae.absorption.jobs.checkpoints import Checkpoints
save = Checkpoints.save
def paced(self, *args, **kwargs):
    save(self, *args, **kwargs)
    time.sleep(0.2)
Checkpoints.save = paced
from pivotal_sae.cli import main
sys.exit(main(sys.argv[1:]))
"""
SIZES = ["--max-tokens-in-prompt", "24", "--batch-size", "4", "--abridge-ablations-to", "6",
         "--device", "cpu", "--decoder-pairs", "20"]  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Subprocesses get OMP_NUM_THREADS=1 too: float sums then match across processes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """A tiny random Llama as a model directory, SAEs for it, and a text corpus."""
    root = tmp_path_factory.mktemp("tiny")
    save_tiny_llama(root, corpus_chars=60000)

    def sae(name: str, d_sae: int, hook: str, seed: int) -> Path:
        made = Sae.random(64, d_sae, architecture="topk", k=8, hook_name=hook, seed=seed)
        return save_sae(made, root / name)

    paths = {
        "model": root / "model",
        "ablator": sae("ablator", 96, "blocks.0.hook_resid_post", 1),
        "other": sae("other", 96, "blocks.0.hook_resid_post", 7),
        "reader": sae("reader", 80, "blocks.2.hook_resid_post", 2),
        "shallow": sae("shallow", 80, "blocks.0.hook_resid_pre", 3),
        "corpus": root / "corpus.txt",
    }
    return paths


def models(tiny, ablator: str = "ablator", reader: str = "reader") -> list[str]:
    return ["--model", str(tiny["model"]), "--corpus", str(tiny["corpus"]),
            "--ablator-sae-path", str(tiny[ablator]),
            "--reader-sae-path", str(tiny[reader])]  # fmt: skip


def cooccur_args(tiny, ablator: str = "ablator") -> list[str]:
    return ["cooccur", "--model", str(tiny["model"]), "--corpus", str(tiny["corpus"]),
            "--ablator-sae-path", str(tiny[ablator]), "--max-tokens-in-prompt", "24",
            "--batch-size", "4", "--device", "cpu"]  # fmt: skip


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return read_file(path)[0]


def assert_same_results(a: Path, b: Path) -> None:
    for name in ("cooccurrences", "top_examples", "effects"):
        left, right = tensors(a / f"{name}.safetensors"), tensors(b / f"{name}.safetensors")
        assert left.keys() == right.keys(), name
        for key in left:
            assert torch.equal(left[key], right[key]), f"{name}: {key}"


def test_absorb_end_to_end_and_the_separate_commands_agree(tmp_path, tiny, capsys):
    run = tmp_path / "absorb"
    argv = ["absorb", *models(tiny), *SIZES, "--n-prompts", "16", "--cooccurrence-prompts", "24",
            "--save-frequency", "8", "--out", str(run)]  # fmt: skip
    assert main(argv) == 0
    stages = [line.split(":")[1].strip() for line in capsys.readouterr().err.splitlines()]
    loaded = f"model and SAEs loaded and checked; writing {run}"
    assert stages == [loaded, "co-occurrence", "co-occurrence", "ablation", "ablation",
                      "category score of the ablator SAE",
                      "searching pairs and writing the report", stages[-1]]  # fmt: skip
    assert stages[-1].startswith("200 candidate pairs (partial method, of ")
    for name in ("manifest.json", "cooccurrences.safetensors", "top_examples.safetensors",
                 "effects.safetensors", "pairs.json", "pairs.csv", "histogram.png",
                 "report.html", "summary.json"):  # fmt: skip
        assert (run / name).is_file(), name
    assert not (run / "checkpoints").exists()
    import pivotal_sae

    results = pivotal_sae.load_results(run)
    cooc = results["cooccurrences_ee"]
    assert torch.equal(cooc.diagonal(), results["firing_counts_e"]) and cooc.equal(cooc.T)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["ablate"]["contexts_processed"] == 16
    assert int(results["how_often_activated_e"].sum()) == summary["ablate"]["variants"] > 0
    never = results["how_often_activated_e"] == 0
    assert not results["effects_eE"][never].any()
    pairs = json.loads((run / "pairs.json").read_text())
    assert pairs["meta"]["count"] == len(pairs["pairs"]) == summary["pairs"]["pairs_reported"]
    for pair in pairs["pairs"]:
        assert pair["cooccurrence_count"] == 0
        assert pair["ablator1"]["id"] < pair["ablator2"]["id"]
    # The partial finder's pairs: its own file, each pair's evidence consistent with the counts.
    from pivotal_sae.absorption.finder import find_partial_pairs
    from pivotal_sae.saes.loading import read_sae_dir

    partial = json.loads((run / "partial_pairs.json").read_text())
    W_dec_EM = read_sae_dir(tiny["ablator"]).W_dec.detach()
    from pivotal_sae.absorption.results import load_cooccurrence_counter

    counter = load_cooccurrence_counter(run / "cooccurrences.safetensors")
    assert counter.counts_tokens  # the token-conditioned null is available
    again = find_partial_pairs(W_dec_EM, counter, max_pairs=200)
    assert partial["pairs"] == [p.as_dict() for p in again.pairs]
    assert "not a verified absorption" in partial["note"]
    for pair in partial["pairs"]:
        a, b = pair["parent"], pair["absorber"]
        assert pair["cooccurrence"] == int(cooc[a, b]) > 0
        assert pair["firing_parent"] >= pair["firing_absorber"] == int(cooc[b, b])
    assert summary["pairs"]["partial_pairs"] == len(partial["pairs"])
    assert summary["pairs"]["method"] == "partial"
    assert summary["pairs"]["top_pairs"][0]["parent"] == partial["pairs"][0]["parent"]
    # the category score of the ablator ran, and graded both lists against its pairs
    scores = json.loads((run / "absorption_score" / "scores.json").read_text())
    grade = summary["pairs"]["category_grade"]
    assert grade["score_means"] == [r["means"] for r in scores["runs"]]
    assert set(grade) >= {"category_pairs", "original", "partial"}

    # The same search as three commands: cooccur → ablate --cooccurrence-path → pairs.
    counted, ablated = tmp_path / "counted", tmp_path / "ablated"
    assert main([*cooccur_args(tiny), "--n-prompts", "24", "--out", str(counted)]) == 0
    assert main(["ablate", *models(tiny), *SIZES[:-2], "--n-prompts", "16",
                 "--cooccurrence-path", str(counted / "cooccurrences.safetensors"),
                 "--out", str(ablated)]) == 0  # fmt: skip
    for name in ("cooccurrences", "top_examples"):
        shutil.copy(counted / f"{name}.safetensors", ablated)
    assert_same_results(run, ablated)
    searched = tmp_path / "searched"
    argv = ["pairs", "--input-path", str(ablated), "--decoder-pairs", "20", "--out", str(searched)]
    assert main(argv) == 0
    separate = json.loads((searched / "pairs.json").read_text())
    assert separate["pairs"] == pairs["pairs"]
    assert separate["decoder_pairs"] == pairs["decoder_pairs"]
    # The partial list ranks nearest-neighbour pairs first unless told not to.
    assert summary["pairs"]["partial_settings"]["neighbours_first"] is True
    assert partial["pairs"][0]["nearest_neighbours"]
    plain = tmp_path / "plain"
    argv = ["pairs", "--input-path", str(ablated), "--no-neighbours-first", "--out", str(plain)]
    assert main(argv) == 0
    scored_only = json.loads((plain / "partial_pairs.json").read_text())["pairs"]
    expected = find_partial_pairs(W_dec_EM, counter, max_pairs=200, neighbours_first=False)
    assert scored_only == [p.as_dict() for p in expected.pairs] != partial["pairs"]
    flags = [pair["nearest_neighbours"] for pair in partial["pairs"]]
    assert any(flags) and flags == sorted(flags, reverse=True)  # the default: flagged first


def test_pairs_on_a_run_writes_a_new_run_and_leaves_the_input_alone(tmp_path, monkeypatch, capsys):
    from pivotal_sae.absorption.cooccurrence import DenseCooccurrence
    from pivotal_sae.absorption.results import save_cooccurrences

    run = tmp_path / "run"
    run.mkdir()
    generator = torch.Generator().manual_seed(0)
    counter = DenseCooccurrence(12)
    counter.update((torch.rand(60, 12, generator=generator) > 0.8).float(), contexts=6)
    sae = {"path": "/nowhere/sae", "hook_name": "blocks.0.hook_resid_post", "d_sae": 12}
    save_cooccurrences(run / "cooccurrences.safetensors", counter, {"sae": sae})
    effects_eE = torch.randn(12, 5, generator=generator)
    save_effects(run / "effects.safetensors", effects_eE, torch.ones(12, dtype=torch.int64),
                 {"ablator_sae": sae})  # fmt: skip
    before = snapshot(run)
    monkeypatch.chdir(tmp_path)
    # The partial method needs the SAE's decoder, which these results name but cannot load.
    assert main(["pairs", "--input-path", str(run), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pass --method original" in err
    assert not (tmp_path / "runs").exists()
    assert main(["pairs", "--input-path", str(run), "--device", "cpu", "--method", "original"]) == 0
    assert snapshot(run) == before
    (made,) = (tmp_path / "runs").iterdir()
    assert made.name.endswith("-pairs") and (made / "pairs.json").is_file()
    assert f"runs/{made.name}/report.html" in capsys.readouterr().err


def test_small_wording_plurals_file_types_and_job_names(tmp_path, capsys):
    from pivotal_sae.absorption.jobs.pairs import plural
    from pivotal_sae.explorer.pages import environment

    assert plural(1, "pair") == "1 pair" and plural(2, "ablated latent") == "2 ablated latents"
    render = environment().from_string('{{ n|plural("context") }}').render
    assert render(n=1) == "1 context" and render(n=1200) == "1,200 contexts"
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text("a,b\n1,2\n")
    _fails(["pairs", "--input-path", str(csv_file)], "is not an effects file", capsys)
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"job": "absorb", "config": {}}))
    err = _fails(["ablate", "--resume", str(run)], "is a run of `absorb`, not of `ablate`", capsys)
    assert "a 'absorb'" not in err


def _fails(argv: list[str], needle: str, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert needle in err, err
    assert "Traceback" not in err
    return err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, tiny, capsys):
    out = tmp_path / "never"
    ablate = ["ablate", *models(tiny), *SIZES[:-2], "--n-prompts", "4", "--out", str(out)]
    absorb = ["absorb", *models(tiny), *SIZES, "--n-prompts", "4", "--out", str(out)]
    cases = [
        (["ablate", *models(tiny, reader="shallow"), "--out", str(out)],
         "reader hook blocks.0.hook_resid_pre is not after the ablator hook"),
        ([*ablate, "--selected-features", "3", "96"],
         "--selected-features 96 is not a latent of the ablator SAE, which has 96"),
        ([*absorb, "--just-these", "200"], "--just-these 200 is not a latent"),
        ([*ablate, "--exclude-latent-threshold", "1.5"],
         "--exclude-latent-threshold must be in (0, 1]"),
        ([*absorb, "--cosine-sim-threshold", "2"], "--cosine-sim-threshold must be in [-1, 1]"),
        ([*absorb, "--cooccurrence-threshold", "-1"], "--cooccurrence-threshold must be >= 0"),
        ([*absorb, "--min-ablations", "0"], "--min-ablations must be at least 1"),
        ([*ablate, "--abridge-ablations-to", "0"], "--abridge-ablations-to must be at least 1"),
        ([*ablate, "--abridge-ablations-to", "500"], "more than the ablator SAE's 96 latents"),
        (["absorb", "--model", str(tiny["model"]), "--out", str(out)],
         "with --model, name the ablator SAE"),
        (["pairs"], "pairs needs --input-path"),
        (["pairs", "--input-path", str(tmp_path / "nope")], "no such file or directory"),
    ]  # fmt: skip
    for argv, needle in cases:
        _fails(argv, needle, capsys)
        assert not out.exists(), argv

    # Results files: from another SAE, truncated, corrupted, tensors of the wrong shape.
    run = tmp_path / "run"
    assert main(["absorb", *models(tiny), *SIZES, "--n-prompts", "8",
                 "--cooccurrence-prompts", "8", "--out", str(run)]) == 0  # fmt: skip
    other = tmp_path / "other"
    assert main([*cooccur_args(tiny, "other"), "--n-prompts", "8", "--out", str(other)]) == 0
    capsys.readouterr()
    before = snapshot(run)
    effects, counts = run / "effects.safetensors", str(run / "cooccurrences.safetensors")
    elsewhere = str(other / "cooccurrences.safetensors")
    _fails(["pairs", "--input-path", str(effects), "--cooccurrence-path", elsewhere],
           "come from different SAEs", capsys)  # fmt: skip
    _fails([*ablate, "--cooccurrence-path", elsewhere], "come from different SAEs", capsys)
    assert not out.exists()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(effects.read_bytes()[:200])
    _fails(["pairs", "--input-path", str(truncated), "--cooccurrence-path", counts],
           "is truncated or corrupted", capsys)  # fmt: skip
    corrupted = tmp_path / "corrupted.safetensors.zst"
    corrupted.write_bytes(b"\x28\xb5\x2f\xfd" + os.urandom(64))
    _fails(["pairs", "--input-path", str(corrupted), "--cooccurrence-path", counts],
           "truncated or corrupted", capsys)  # fmt: skip
    wrong = tmp_path / "wrong.safetensors"
    metadata = read_file(effects)[1]
    save_effects(wrong, torch.zeros(3, 80), torch.zeros(96, dtype=torch.int64),
                 {k: v for k, v in metadata.items() if k not in ("format", "d_sae")},
                 row_ids_R=torch.tensor([1, 2]))  # fmt: skip
    _fails(["pairs", "--input-path", str(wrong), "--cooccurrence-path", counts],
           "rows have shape (3, 80), expected (2, 80)", capsys)  # fmt: skip
    _fails(["absorb", "--resume", str(run), "--n-prompts", "9"], "--n-prompts 9 differs", capsys)
    _fails(["absorb", "--resume", str(tmp_path)], "is not a run directory", capsys)
    assert snapshot(run) == before
    assert not out.exists()


def latest(run: Path) -> dict:
    try:
        return json.loads((run / "checkpoints" / "latest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def kill_when(argv: list[str], run: Path, stage: str, env: dict[str, str]) -> None:
    """Start the CLI in a child process and SIGKILL it once `stage` has a checkpoint."""
    child = subprocess.Popen([sys.executable, "-c", LAUNCH, *argv], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 150
        while latest(run).get("stage") != stage:
            if child.poll() is not None:
                pytest.fail(f"the run ended before a {stage} checkpoint: "
                            + (child.stderr.read().decode() if child.stderr else ""))  # fmt: skip
            assert time.monotonic() < deadline, f"no {stage} checkpoint appeared"
            time.sleep(0.005)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL


@pytest.mark.timeout(300)
def test_sigkill_mid_run_then_resume_gives_identical_results(tmp_path, tmp_path_factory, tiny):
    argv = ["absorb", *models(tiny), *SIZES, "--n-prompts", "96", "--cooccurrence-prompts",
            "240", "--save-frequency", "8"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(tmp_path_factory.getbasetemp() / "pycache")
    killed = tmp_path / "killed"
    # Killed while counting, resumed and killed again while ablating, then resumed to the end.
    kill_when([*argv, "--out", str(killed)], killed, "cooccur", env)
    assert not (killed / "cooccurrences.safetensors").exists()
    kill_when(["absorb", "--resume", str(killed)], killed, "ablate", env)
    assert (killed / "cooccurrences.safetensors").exists()
    assert not (killed / "effects.safetensors").exists()
    assert 0 < latest(killed)["contexts_done"] < 96
    assert main(["absorb", "--resume", str(killed)]) == 0
    straight = tmp_path / "straight"
    assert main([*argv, "--out", str(straight)]) == 0
    assert_same_results(killed, straight)
    pairs = [json.loads((d / "pairs.json").read_text())["pairs"] for d in (killed, straight)]
    assert pairs[0] == pairs[1]
    assert json.loads((killed / "summary.json").read_text())["absorb"]["resumed"] is True
