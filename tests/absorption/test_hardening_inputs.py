"""Issue 13 on the absorption commands' inputs: a user's folder is never overwritten, impossible
--out paths and bad explanations are refused with one line before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pivotal_sae.cli import main

from .test_cli_absorb import SIZES, _fails, cooccur_args, models, snapshot, tiny  # noqa: F401


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny) -> Path:  # noqa: F811 - the fixture
    run = tmp_path_factory.mktemp("hardening") / "run"
    argv = ["absorb", *models(tiny), *SIZES, "--n-prompts", "8", "--cooccurrence-prompts", "8"]
    assert main([*argv, "--out", str(run)]) == 0
    return run


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_pairs_never_overwrites_a_users_folder(tmp_path, finished_run, capsys):
    """Defect 1: --out naming a folder of the user's own, a file, a damaged summary."""
    mine = tmp_path / "mine"
    mine.mkdir()
    for name, text in (("report.html", "<p>mine</p>"), ("summary.json", '{"mine": 1}'),
                       ("pairs.csv", "a,b\n")):  # fmt: skip
        (mine / name).write_text(text)
    before = _tree(mine)
    pairs = ["pairs", "--input-path", str(finished_run)]
    _fails([*pairs, "--out", str(mine)], "already holds files", capsys)
    assert _tree(mine) == before
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    _fails([*pairs, "--out", str(a_file)], "exists and is not a directory", capsys)
    assert a_file.read_text() == "mine"
    # A run directory (pairs may add its report there) whose summary.json is not a summary.
    (finished_run / "summary.json").rename(tmp_path / "summary.json")
    try:
        (finished_run / "summary.json").write_text("[1]")
        before = _tree(finished_run)
        _fails([*pairs, "--out", str(finished_run)], "is not a run summary", capsys)
        assert _tree(finished_run) == before
    finally:
        (tmp_path / "summary.json").replace(finished_run / "summary.json")


@pytest.mark.parametrize("where", ["file/sub", "/proc/pivotal-sae-x"])
def test_impossible_out_paths_are_one_line(tmp_path, finished_run, tiny, capsys, where):  # noqa: F811
    """Defect 7: --out under a file, or somewhere nothing can be created."""
    (tmp_path / "file").write_text("mine")
    out = str(tmp_path / where) if not where.startswith("/") else where
    _fails([*cooccur_args(tiny), "--n-prompts", "4", "--out", out], "--out", capsys)
    _fails(["pairs", "--input-path", str(finished_run), "--out", out], "--out", capsys)
    assert (tmp_path / "file").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_explanations_and_neuronpedia_id_are_checked_before_any_work(
    tmp_path,
    finished_run,
    tiny,  # noqa: F811 - the fixture
    capsys,
):
    """Defect 10: a missing or binary --explanations, a malformed Neuronpedia id."""
    out = tmp_path / "never"
    absorb = ["absorb", *models(tiny), *SIZES, "--n-prompts", "4", "--out", str(out)]
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(bytes(range(256)) * 4)
    _fails([*absorb, "--explanations", str(tmp_path / "missing.jsonl")], "does not exist", capsys)
    _fails([*absorb, "--explanations", str(binary)], "not valid JSON", capsys)
    _fails([*absorb, "--ablator-sae-neuronpedia-id", "no-slash"], "Neuronpedia id", capsys)
    assert not out.exists()
    pairs = ["pairs", "--input-path", str(finished_run / "effects.safetensors"), "--out", str(out)]
    _fails([*pairs, "--explanations", str(binary)], "not valid JSON", capsys)
    assert not out.exists()
    assert json.loads((finished_run / "summary.json").read_text())["pairs"]


@pytest.mark.parametrize(
    ("which", "key", "value"),
    [
        ("effects", "ablator_sae", "tampered"),
        ("effects", "reader_sae", [1]),
        ("effects", "reader_d_sae", "many"),
        ("effects", "excluded_latents", 3),
        ("effects", "contexts_processed", "x"),
        ("cooccurrences", "sae", 5),
        ("cooccurrences", "tokens_counted", "lots"),
        ("cooccurrences", "d_sae", [96]),
        ("cooccurrences", "corpus", 7),
    ],
)
def test_tampered_results_metadata_is_one_line(tmp_path, finished_run, capsys, which, key, value):
    """Defect 9 (pairs): metadata of a results file that is not what this program wrote."""
    from pivotal_sae.absorption.results import read_file, save_file

    files = {name: finished_run / f"{name}.safetensors" for name in ("effects", "cooccurrences")}
    tensors, metadata = read_file(files[which])
    files[which] = tmp_path / f"{which}.safetensors"
    save_file(files[which], tensors, {**metadata, key: value})
    out = tmp_path / "out"
    _fails(["pairs", "--input-path", str(files["effects"]), "--cooccurrence-path",
            str(files["cooccurrences"]), "--out", str(out)], str(files[which]), capsys)  # fmt: skip
    assert not out.exists()


def test_sizes_that_cannot_fit_or_exist_are_refused_before_any_work(
    tmp_path,
    tiny,  # noqa: F811 - the fixture
    capsys,
):
    """Defect 8: --n-examples, --n-prompts, --max-tokens-in-prompt beyond the model."""
    out = tmp_path / "never"
    cooccur = [*cooccur_args(tiny), "--out", str(out)]
    _fails([*cooccur, "--n-prompts", "4", "--n-examples", "1000000000000"], "GiB", capsys)
    _fails([*cooccur, "--n-prompts", "1" + "0" * 30], "more than any corpus holds", capsys)
    _fails([*cooccur, "--n-prompts", "4", "--max-tokens-in-prompt", "3000"],
           "--max-tokens-in-prompt 3000 is more than", capsys)  # fmt: skip
    assert not out.exists()


def test_damaged_run_directories_are_one_line_on_resume(tmp_path, finished_run, capsys):
    """Defect 9 (jobs): a manifest that is not one, a config value of the wrong type."""
    run = tmp_path / "run"
    run.mkdir()
    manifest = json.loads((finished_run / "manifest.json").read_text())
    wrong_type = {**manifest, "config": {**manifest["config"], "batch_size": "x"}}
    for text in ("[]", "null", json.dumps({**manifest, "config": [1]}), json.dumps(wrong_type)):
        (run / "manifest.json").write_text(text)
        _fails(["absorb", "--resume", str(run)], "manifest.json is damaged", capsys)
        assert [p.name for p in run.iterdir()] == ["manifest.json"]


def test_a_directory_given_as_a_results_file_says_so(tmp_path, finished_run, tiny, capsys):  # noqa: F811
    """Defect 18: --cooccurrence-path DIR names the problem (a folder), not a missing file."""
    argv = ["ablate", *models(tiny), *SIZES[:-2], "--n-prompts", "4", "--out", str(tmp_path / "o"),
            "--cooccurrence-path", str(finished_run)]  # fmt: skip
    _fails(argv, "is a directory; give the results file inside it", capsys)
