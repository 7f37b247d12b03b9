"""The toy lab's hierarchical SAE trains on a model's activations, saves, and loads back."""

from __future__ import annotations

import json

import torch
from test_cli_train import TINY_TRAIN, text_file, tiny_bert_dir  # noqa: F401  (fixtures)

from pivotal_sae.cli import main
from pivotal_sae.saes.hierarchical import HierarchicalSae
from pivotal_sae.saes.hierarchical_lm import HierarchicalLmSae
from pivotal_sae.saes.loading import read_sae_dir
from pivotal_sae.saes.toy_io import load_toy_sae


def test_hierarchical_train_save_load(tmp_path, tiny_bert_dir, text_file):  # noqa: F811
    out = tmp_path / "run"
    argv = ["train-sae", "--arch", "hierarchical", "--n-children", "3", "--out", str(out),
            "--model", str(tiny_bert_dir), "--corpus", str(text_file),
            "--hook", "blocks.1.hook_resid_post", *TINY_TRAIN]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert 0 < summary["fvu"] < 1.5 and summary["l0"] > 0
    ours = read_sae_dir(out / "sae")
    assert isinstance(ours, HierarchicalLmSae)
    assert ours.d_sae == 64 * 4 and ours.W_dec.shape == (256, 64)
    assert ours.hook_name == "blocks.1.hook_resid_post"
    cfg = json.loads((out / "sae" / "cfg.json").read_text())
    assert cfg["architecture"] == "hierarchical" and cfg["n_children"] == 3

    toy = load_toy_sae(out / "sae")
    assert isinstance(toy, HierarchicalSae)
    x = torch.randn(20, 64)
    with torch.no_grad():
        acts = ours.encode(x)
        reference = toy(x)
        torch.testing.assert_close(ours.decode(acts), reference.recon_BM, rtol=1e-5, atol=1e-5)
        parents, children = acts[:, :64], acts[:, 64:].view(20, 64, 3)
        assert ((children > 0).sum(-1) <= 1).all()  # winner takes all
        assert ((children.sum(-1) > 0) <= (parents > 0)).all()  # only under active parents
        assert ((parents > 0).sum(-1) <= 4).all()
