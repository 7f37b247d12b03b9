"""Neuronpedia exports: parsing, local files and folders, downloads (faked), offline."""

from __future__ import annotations

import gzip
import json
import time

import pytest

from pivotal_sae.absorption import explanations
from pivotal_sae.absorption.explanations import (
    load_explanations,
    neuronpedia_url,
    read_explanations,
)
from pivotal_sae.errors import UserError

NP_ID = "gemma-2-2b/20-gemmascope-res-65k"


def batch(indices, sae="20-gemmascope-res-65k", model="gemma-2-2b") -> bytes:
    lines = [
        json.dumps(
            {
                "modelId": model,
                "layer": sae,
                "index": str(i),
                "description": f"latent {i} <b>",
                "explanationModelName": "gpt-4o-mini",
                "typeName": "oai_token-act-pair",
            }
        )
        for i in indices
    ]
    return gzip.compress(("\n".join(lines) + "\n").encode())


def test_read_file_and_folder(tmp_path):
    (tmp_path / "batch-0.jsonl.gz").write_bytes(batch([0, 1, 5]))
    (tmp_path / "batch-1.jsonl.gz").write_bytes(batch([5, 9]))
    (tmp_path / "notes.txt").write_text("ignored")
    one = read_explanations(tmp_path / "batch-0.jsonl.gz", NP_ID)
    assert one.get(5) == "latent 5 <b>" and one.get(9) is None
    folder = read_explanations(tmp_path, NP_ID)
    assert len(folder) == 4 and folder.all(5) == ["latent 5 <b>", "latent 5 <b>"]
    assert folder.get("9") == "latent 9 <b>"


def test_legacy_json_array_and_plain_jsonl(tmp_path):
    (tmp_path / "old.json").write_text(json.dumps([{"index": "3", "description": "three"}]))
    (tmp_path / "new.jsonl").write_text(json.dumps({"index": "4", "description": "four"}) + "\n")
    found = read_explanations(tmp_path)
    assert (found.get(3), found.get(4)) == ("three", "four")


def test_export_of_another_sae_is_refused(tmp_path):
    (tmp_path / "batch-0.jsonl.gz").write_bytes(batch([1], sae="12-res-16k"))
    with pytest.raises(UserError, match="12-res-16k"):
        read_explanations(tmp_path, NP_ID)


@pytest.mark.parametrize("content", [b"\x1f\x8b not gzip", b"{not json"])
def test_bad_files(tmp_path, content):
    path = tmp_path / "batch-0.jsonl.gz"
    path.write_bytes(content)
    with pytest.raises(UserError, match=str(path)):
        read_explanations(path)
    with pytest.raises(UserError, match="does not exist"):
        read_explanations(tmp_path / "missing")
    with pytest.raises(UserError, match="Neuronpedia id"):
        neuronpedia_url("no-slash", 3)


def test_download_caches_and_stops_at_the_last_batch(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(explanations, "_host_resolves", lambda host: True)
    fetched = []

    def fake_fetch(url, timeout_s=1.0):
        fetched.append(url)
        i = int(url.rsplit("batch-", 1)[1].split(".")[0])
        return [batch([0, 1]), batch([2])][i] if i < 2 else None

    monkeypatch.setattr(explanations, "_fetch_url", fake_fetch)
    found = load_explanations(NP_ID, cache_dir=tmp_path)
    assert [found.get(i) for i in range(3)] == ["latent 0 <b>", "latent 1 <b>", "latent 2 <b>"]
    assert fetched[0] == (
        "https://neuronpedia-datasets.s3.us-east-1.amazonaws.com/v1/gemma-2-2b/"
        "20-gemmascope-res-65k/explanations/batch-0.jsonl.gz"
    )
    assert len(fetched) == 3
    again = load_explanations(NP_ID, cache_dir=tmp_path)
    assert len(again) == 3 and len(fetched) == 3  # served from the cache


def test_offline_means_no_explanations_quickly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("the network was used while offline")

    monkeypatch.setattr(explanations, "_fetch_url", no_network)
    monkeypatch.setattr(explanations, "_host_resolves", no_network)
    start = time.perf_counter()
    found = load_explanations(NP_ID, cache_dir=tmp_path)
    assert len(found) == 0 and time.perf_counter() - start < 1
    assert load_explanations(None).get(1) is None


def test_network_failure_warns_and_keeps_what_came(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(explanations, "_host_resolves", lambda host: True)

    def flaky(url, timeout_s=1.0):
        if "batch-0" in url:
            return batch([7])
        raise OSError("connection reset")

    monkeypatch.setattr(explanations, "_fetch_url", flaky)
    with pytest.warns(UserWarning, match="connection reset"):
        found = load_explanations(NP_ID, cache_dir=tmp_path)
    assert found.get(7) == "latent 7 <b>"
    assert not (
        tmp_path / "neuronpedia" / "gemma-2-2b" / "20-gemmascope-res-65k" / "complete"
    ).exists()


def test_urls():
    assert (
        neuronpedia_url(NP_ID, 42)
        == "https://www.neuronpedia.org/gemma-2-2b/20-gemmascope-res-65k/42"
    )
