"""`absorption-score` and `plant-absorption` through the CLI on a tiny random BERT: bad input is
one stderr line, exit 2 and nothing written; good input writes the run directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pivotal_sae.cli import main
from pivotal_sae.saes.loading import read_sae_dir, save_sae
from pivotal_sae.saes.sae import Sae


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    import transformers as T

    from pivotal_sae.lm.defaults import default_model_path

    root = tmp_path_factory.mktemp("tiny-gt")
    config = T.BertConfig(vocab_size=30522, hidden_size=64, intermediate_size=128,
                          num_hidden_layers=3, num_attention_heads=4)  # fmt: skip
    torch.manual_seed(0)
    T.AutoModel.from_config(config).save_pretrained(root / "bert")
    AutoTokenizer = T.AutoTokenizer
    AutoTokenizer.from_pretrained(default_model_path()).save_pretrained(root / "bert")
    sae = Sae.random(64, 128, architecture="topk", k=8, hook_name="blocks.1.hook_resid_post")
    save_sae(sae, root / "sae")
    save_sae(sae.replace_info(hook_name="blocks.9.hook_resid_post"), root / "sae-deep")
    (root / "cats.txt").write_text("# mine\nfruit apple, pear banana\nnonsense qzxqv vvqzx\n")
    (root / "ok.txt").write_text("fruit apple pear banana grape lemon cherry peach plum\n")
    return {"root": root, "model": root / "bert", "sae": root / "sae"}


def _fails(argv: list[str], needle: str, capsys, out: Path) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert needle in err, err
    assert "Traceback" not in err
    assert not out.exists()


def test_absorption_score_bad_inputs(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["absorption-score", "--model", str(tiny["model"]), "--device", "cpu", "--out", str(out)]
    sae = ["--sae-path", str(tiny["sae"])]
    root = tiny["root"]
    _fails([*base, *sae, "--category-file", str(root / "cats.txt")],
           "'nonsense' has no single-token words", capsys, out)  # fmt: skip
    _fails([*base, "--sae-path", str(root / "sae-deep")], "does not have", capsys, out)
    _fails([*base, *sae, "--categories", "planets"], "unknown category 'planets'", capsys, out)
    _fails([*base, *sae, "--test-fraction", "1.5"], "--test-fraction", capsys, out)
    _fails([*base, *sae, "--prompt-template", "no word"], "{word}", capsys, out)
    _fails([*base, *sae, "--category-file", str(root / "missing.txt")], "no such file", capsys, out)
    _fails([*base], "with --model, name the SAE", capsys, out)


def test_plant_absorption_bad_inputs(tiny, tmp_path, capsys):
    out = tmp_path / "plant"
    base = ["plant-absorption", "--model", str(tiny["model"]), "--sae-path", str(tiny["sae"]),
            "--device", "cpu", "--out", str(out), "--n-words", "200"]  # fmt: skip
    _fails([*base, "--rate", "1.5"], "--rate must be in (0, 1]", capsys, out)
    _fails([*base, "--rate", "-0.1"], "--rate must be in (0, 1]", capsys, out)
    _fails(
        [*base, "--parents", "999", "--children", "1"], "latent 999 is out of range", capsys, out
    )
    _fails([*base, "--parents", "3", "--children", "3"], "must differ", capsys, out)
    _fails([*base, "--parents", "3"], "--parents and --children go together", capsys, out)


def test_absorption_score_writes_its_run_directory(tiny, tmp_path):
    out = tmp_path / "run"
    argv = ["absorption-score", "--model", str(tiny["model"]), "--sae-path", str(tiny["sae"]),
            "--device", "cpu", "--out", str(out), "--categories", "months", "colours",
            "--category-file", str(tiny["root"] / "ok.txt"), "--min-probe-f1", "0",
            "--n-background-words", "300"]  # fmt: skip
    assert main(argv) == 0
    assert {p.name for p in out.iterdir()} >= {"manifest.json", "scores.json", "records.json",
                                               "absorption_score.png", "report.md"}  # fmt: skip
    scores = json.loads((out / "scores.json").read_text())
    [run] = scores["runs"]
    assert run["task"] == "semantic"
    assert [c["name"] for c in run["categories"]] == ["months", "colours", "fruit"]
    assert all(c["kept"] for c in run["categories"])
    assert "## Absorption score" in (out / "report.md").read_text()
    assert (out / "absorption_score.png").read_bytes()[:4] == b"\x89PNG"


def test_plant_absorption_writes_an_sae_and_its_answer_key(tiny, tmp_path):
    from pivotal_sae.absorption.category_tasks import member_activations
    from pivotal_sae.absorption.jobs.plant import calibration_words
    from pivotal_sae.lm.model import LanguageModel

    lm = LanguageModel.load(str(tiny["model"]), device="cpu")
    sae = read_sae_dir(tiny["sae"])
    members = calibration_words(lm.tokenizer, False, 300, seed=0)
    acts = member_activations(lm, members, ["blocks.1.hook_resid_post"], 128)
    fires = (sae.encode(acts["blocks.1.hook_resid_post"]) > 0).float()
    both = fires.T @ fires
    both.fill_diagonal_(0)
    parent, child = divmod(int(both.argmax()), sae.d_sae)
    out = tmp_path / "plant"
    argv = ["plant-absorption", "--model", str(tiny["model"]), "--sae-path", str(tiny["sae"]),
            "--device", "cpu", "--out", str(out), "--n-words", "300", "--rate", "1.0",
            "--parents", str(parent), "--children", str(child)]  # fmt: skip
    assert main(argv) == 0
    key = json.loads((out / "answer_key.json").read_text())
    [pair] = key["pairs"]
    assert (pair["parent"], pair["child"]) == (parent, child)
    assert pair["achieved_rate"] == 1.0 and pair["absorbed_tokens"]
    edited = read_sae_dir(out / "sae")
    assert torch.allclose(edited.W_dec[child], sae.W_dec[child] + pair["beta"] * sae.W_dec[parent])
    untouched = [i for i in range(sae.d_sae) if i not in (parent, child)]
    assert torch.equal(edited.W_dec[untouched], sae.W_dec[untouched])
    assert torch.equal(edited.W_enc[:, untouched], sae.W_enc[:, untouched])
