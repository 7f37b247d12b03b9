"""Training curves as PNG and the plots index page, from a metrics.jsonl."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from pivotal_sae.curves import CURVES_PNG, read_series, write_curves, write_index, write_run_plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _log(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 9, "cut sh')


def test_series_are_split_by_hook_and_skip_non_numbers(tmp_path):
    _log(tmp_path / "metrics.jsonl", [
        {"step": 1, "hook": "a", "fvu": 0.5, "l0": 32, "note": "x", "flag": True},
        {"step": 2, "hook": "a", "fvu": 0.4, "l0": float("nan")},
        {"step": 1, "hook": "b", "fvu": 0.9, "dead": {"latent": 3}},
    ])  # fmt: skip
    series = read_series(tmp_path / "metrics.jsonl")
    assert series == {"fvu": {"a": [(1, 0.5), (2, 0.4)], "b": [(1, 0.9)]}, "l0": {"a": [(1, 32)]}}
    _log(tmp_path / "toy.jsonl", [
        {"step": 10, "kind": "train", "train_total_loss": 0.5, "mmcs_mean": 0.3},
        {"step": 20, "kind": "eval", "val_total_loss": 0.4, "mmcs_mean": 0.35},
    ])  # fmt: skip
    assert read_series(tmp_path / "toy.jsonl") == {
        "total_loss": {"training batches": [(10, 0.5)], "held-out batch": [(20, 0.4)]},
        "mmcs_mean": {"training batches": [(10, 0.3)], "evaluation": [(20, 0.35)]},
    }


def test_curves_png_and_index_page(tmp_path):
    run = tmp_path / "run"
    (run / "plots").mkdir(parents=True)
    _log(
        run / "metrics.jsonl",
        [{"step": s, "kind": "train", "train_total_loss": 1 / s, "lr": 1e-3} for s in range(1, 30)]
        + [{"step": s, "kind": "eval", "val_total_loss": 1.2 / s} for s in (1, 10, 20)],
    )
    Image.new("RGB", (4, 4)).save(run / "plots" / "step_0000010_decoder_norms.png")
    Image.new("RGB", (4, 4)).save(run / "plots" / "step_0000020_decoder_norms.png")
    index = write_run_plots(run, "Toy run <x>", {"pairs": 3})
    png = run / "plots" / CURVES_PNG
    assert png.read_bytes()[:8] == PNG_MAGIC
    pixels = np.asarray(Image.open(png).convert("L"))
    assert pixels.shape[0] > 100 and pixels.std() > 5  # drawn, not blank
    page = index.read_text()
    assert "Toy run &lt;x&gt;" in page and "<x>" not in page
    shown = [line.split('src="')[1].split('"')[0] for line in page.splitlines() if 'src="' in line]
    assert shown == [CURVES_PNG, "step_0000020_decoder_norms.png", "step_0000010_decoder_norms.png"]
    assert "step 20: decoder norms" in page
    assert write_curves(run / "missing.jsonl", run / "plots", "t") is None
    empty = tmp_path / "empty"
    assert "No plots yet" in write_index(empty, "nothing").read_text()
