"""Results files: round trips, load_results, and one clear UserError for every bad file."""

from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch

import pivotal_sae
from pivotal_sae.absorption import results
from pivotal_sae.absorption.cooccurrence import DenseCooccurrence, SparseCooccurrence
from pivotal_sae.absorption.examples import TopExamples
from pivotal_sae.errors import UserError

from .conftest import sparse_acts

SAE = {"release": "toy-release", "sae_id": "layer_1", "neuronpedia_id": "m/1-res", "d_sae": 16}


def write_run(run_dir, generator, suffix=".safetensors", layout="packed"):
    acts_TE = sparse_acts(200, 16, 0.2, generator)
    counter = DenseCooccurrence(16) if layout == "packed" else SparseCooccurrence(16)
    counter.update(acts_TE, contexts=10)
    examples = TopExamples(16, 3, 2, 2)
    examples.update(
        acts_TE.view(10, 20, 16),
        torch.randint(0, 99, (10, 20), generator=generator),
        torch.ones(10, 20, dtype=torch.bool),
        torch.arange(10),
    )
    effects_eE = torch.randn(16, 9, generator=generator)
    how_often_e = torch.randint(0, 5, (16,), generator=generator)
    meta = {"model": "tiny", "sae": SAE, "corpus": {"name": "sotu"}, "code_version": "abc"}
    results.save_cooccurrences(run_dir / f"cooccurrences{suffix}", counter, meta)
    results.save_effects(
        run_dir / f"effects{suffix}", effects_eE, how_often_e, {"ablator_sae": SAE}
    )
    results.save_top_examples(run_dir / f"top_examples{suffix}", examples)
    return counter, effects_eE, how_often_e, examples


@pytest.mark.parametrize("suffix", [".safetensors", ".safetensors.zst"])
@pytest.mark.parametrize("layout", ["packed", "sparse"])
def test_round_trip(tmp_path, generator, suffix, layout):
    counter, effects_eE, how_often_e, examples = write_run(tmp_path, generator, suffix, layout)
    loaded = pivotal_sae.load_results(tmp_path)
    assert torch.equal(loaded["cooccurrences_ee"], counter.to_dense())
    assert loaded["cooccurrences_ee"].dtype == torch.int64
    assert torch.equal(loaded["firing_counts_e"], counter.firing_counts_e)
    assert torch.equal(loaded["effects_eE"], effects_eE)
    assert torch.equal(loaded["how_often_activated_e"], how_often_e)
    assert loaded.tokens_counted == 200
    meta = loaded.metadata["cooccurrences"]
    assert meta["sae"] == SAE and meta["contexts_processed"] == 10 and meta["layout"] == layout
    assert loaded.top_examples().examples_for(3) == examples.examples_for(3)
    resumed = results.load_cooccurrence_counter(tmp_path / f"cooccurrences{suffix}")
    assert torch.equal(resumed.to_dense(), counter.to_dense())
    one = pivotal_sae.load_results(tmp_path / f"effects{suffix}")
    assert set(one) == {"effects_eE", "how_often_activated_e"}


def test_saves_are_atomic(tmp_path, generator, monkeypatch):
    write_run(tmp_path, generator)
    before = (tmp_path / "effects.safetensors").read_bytes()

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", fail)
    with pytest.raises(RuntimeError):
        results.save_effects(tmp_path / "effects.safetensors", torch.zeros(2, 2), torch.zeros(2))
    assert (tmp_path / "effects.safetensors").read_bytes() == before
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["cooccurrences.safetensors", "effects.safetensors", "top_examples.safetensors"]


@pytest.mark.parametrize("name", ["cooccurrences.safetensors", "effects.safetensors.zst"])
@pytest.mark.parametrize("damage", ["truncate", "corrupt", "empty"])
def test_damaged_files(tmp_path, generator, name, damage):
    write_run(tmp_path, generator, suffix=name[name.index(".") :])
    path = tmp_path / name
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "corrupt":
        path.write_bytes(data[:8] + b"\xff" * 64 + data[72:])
    else:
        path.write_bytes(b"")
    with pytest.raises(UserError) as caught:
        pivotal_sae.load_results(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message


def test_wrong_shapes_and_formats(tmp_path, generator):
    counter, *_ = write_run(tmp_path, generator)
    state = counter.state_dict()
    meta = {"format": json.dumps("pivotal-sae/cooccurrences"), "layout": json.dumps("packed")}
    meta |= {
        k: json.dumps(int(state[k])) for k in ("d_sae", "tokens_counted", "contexts_processed")
    }
    bad = tmp_path / "bad.safetensors"
    short_packed = torch.zeros(7, dtype=torch.int32)
    cases = {
        "cooccurrences_ee_packed": {**state, "cooccurrences_ee_packed": short_packed},
        "firing_counts_e": {**state, "firing_counts_e": torch.zeros(15, dtype=torch.int64)},
        "diagonal": {**state, "firing_counts_e": state["firing_counts_e"] + 1},
    }
    for needle, tensors in cases.items():
        tensors = {k: v for k, v in tensors.items() if v.ndim}
        safetensors.torch.save_file(tensors, bad, metadata=meta)
        with pytest.raises(UserError, match=needle):
            pivotal_sae.load_results(bad)
    safetensors.torch.save_file({"x": torch.zeros(3)}, bad, metadata={"format": '"other"'})
    with pytest.raises(UserError, match="not a pivotal-sae results file"):
        pivotal_sae.load_results(bad)
    results.save_effects(bad, torch.zeros(4, 3), torch.zeros(4))
    tensors = safetensors.torch.load_file(bad)
    tensors["how_often_activated_e"] = torch.zeros(5, dtype=torch.int64)
    safetensors.torch.save_file(tensors, bad, metadata=safetensors.safe_open(bad, "pt").metadata())
    with pytest.raises(UserError, match="how_often_activated_e"):
        pivotal_sae.load_results(bad)
    with pytest.raises(UserError, match="does not exist"):
        pivotal_sae.load_results(tmp_path / "missing.safetensors")
    with pytest.raises(UserError, match="no results files"):
        pivotal_sae.load_results(
            tmp_path / "empty_dir" if (tmp_path / "empty_dir").mkdir() is None else None
        )


def test_files_from_different_saes(tmp_path, generator):
    write_run(tmp_path, generator)
    other = {**SAE, "sae_id": "layer_2"}
    results.save_effects(
        tmp_path / "effects.safetensors", torch.zeros(16, 3), torch.ones(16), {"ablator_sae": other}
    )
    with pytest.raises(UserError, match="different SAEs"):
        pivotal_sae.load_results(tmp_path)
    results.save_effects(tmp_path / "effects.safetensors", torch.zeros(15, 3), torch.ones(15))
    with pytest.raises(UserError, match="different SAEs"):
        pivotal_sae.load_results(tmp_path)


def test_original_scripts_files(tmp_path):
    """The research code saved float tensors with no metadata, zstd-compressed."""
    import zstandard

    cooc = torch.tensor([[3.0, 1.0], [1.0, 2.0]])
    how_often = torch.tensor([1.0, 0.0])
    data = safetensors.torch.save(
        {
            "cooccurrences_ee": cooc,
            "effects_eE": torch.ones(2, 4),
            "how_often_activated_e": how_often,
        }
    )
    path = tmp_path / "old.safetensors.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(data))
    loaded = pivotal_sae.load_results(path)
    assert loaded["cooccurrences_ee"].tolist() == [[3, 1], [1, 2]]
    assert loaded["how_often_activated_e"].dtype == torch.int64
    assert loaded["firing_counts_e"].tolist() == [3, 2]
