"""Latent explanations from Neuronpedia's bulk exports, read locally or downloaded and cached.

The export is gzipped JSON lines, one file per batch, at
`https://neuronpedia-datasets.s3.us-east-1.amazonaws.com/v1/{model}/{sae}/explanations/batch-{i}.jsonl.gz`;
each record has `modelId`, `layer` (the SAE id), `index` (a string) and `description`. Plain
`.jsonl` files and the JSON array of the retired `/api/explanation/export` endpoint (what the
original scripts cached) are read too.

Downloads go to `$PIVOTAL_SAE_CACHE/neuronpedia/{model}/{sae}/` (default
`~/.cache/pivotal-sae`). Offline (`HF_HUB_OFFLINE=1`, `PIVOTAL_SAE_OFFLINE=1`, or no route to
the host) there are simply no explanations: reports then show ids and links only.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import socket
import threading
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pivotal_sae.errors import UserError
from pivotal_sae.runs import atomic_write_bytes

S3_BATCH_URL = (
    "https://neuronpedia-datasets.s3.us-east-1.amazonaws.com/v1/{model}/{sae}/explanations/"
    "batch-{i}.jsonl.gz"
)
S3_HOST = "neuronpedia-datasets.s3.us-east-1.amazonaws.com"
PAGE_URL = "https://www.neuronpedia.org/{model}/{sae}/{index}"
TIMEOUT_S = 10.0
DNS_TIMEOUT_S = 3.0
MAX_BATCHES = 10_000
COMPLETE_MARKER = "complete"
ID_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def split_neuronpedia_id(neuronpedia_id: str) -> tuple[str, str]:
    """'gemma-2-2b/20-gemmascope-res-65k' → ('gemma-2-2b', '20-gemmascope-res-65k')."""
    parts = neuronpedia_id.strip("/").split("/")
    # Each part names a folder of the cache and a piece of a URL: plain names only.
    if len(parts) != 2 or not all(ID_PART.fullmatch(p) and p not in (".", "..") for p in parts):
        raise UserError(
            "a Neuronpedia id looks like 'gemma-2-2b/20-gemmascope-res-65k', "
            f"not {neuronpedia_id!r}"
        )
    return parts[0], parts[1]


def neuronpedia_url(neuronpedia_id: str, index: int) -> str:
    model, sae = split_neuronpedia_id(neuronpedia_id)
    return PAGE_URL.format(model=model, sae=sae, index=index)


@dataclass
class Explanations:
    """Descriptions by latent index (several explainers may describe one latent)."""

    by_index: dict[int, list[str]] = field(default_factory=dict)
    source: str = "none"
    """Where they came from: a path, the cache, or 'none'."""

    def get(self, index: int) -> str | None:
        found = self.by_index.get(int(index))
        return found[0] if found else None

    def all(self, index: int) -> list[str]:
        return list(self.by_index.get(int(index), []))

    def __len__(self) -> int:
        return len(self.by_index)


def _records_in(path: Path) -> Iterator[dict]:
    raw = path.read_bytes()
    if path.suffix == ".gz" or raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise UserError(f"{path} is not a readable gzip file ({exc})") from None
    text = raw.decode("utf-8", errors="replace")
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} is not valid JSON ({exc.msg})") from None
        yield from (r for r in records if isinstance(r, dict))
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} line {number} is not valid JSON ({exc.msg})") from None
        if isinstance(record, dict):
            yield record


def parse_records(
    records: Iterable[dict], model: str | None = None, sae: str | None = None
) -> tuple[dict[int, list[str]], set[tuple[str, str]]]:
    """Descriptions by index for the SAE `model/sae` (records naming another SAE are skipped),
    plus the (modelId, layer) pairs seen, to explain an empty result."""
    by_index: dict[int, list[str]] = {}
    seen: set[tuple[str, str]] = set()
    for record in records:
        seen.add((str(record.get("modelId", "")), str(record.get("layer", ""))))
        if model and record.get("modelId") not in (None, model):
            continue
        if sae and record.get("layer") not in (None, sae):
            continue
        try:
            index = int(record["index"])
        except (KeyError, TypeError, ValueError):
            continue
        description = record.get("description")
        if isinstance(description, str) and description.strip():
            by_index.setdefault(index, []).append(description.strip())
    return by_index, seen


def read_explanations(path: Path, neuronpedia_id: str | None = None) -> Explanations:
    """Read a local export: one file, or every .jsonl.gz/.jsonl/.json file in a folder."""
    path = Path(path)
    if path.is_dir():
        files = sorted(
            p for p in path.iterdir() if p.name.endswith((".jsonl.gz", ".jsonl", ".json"))
        )
    elif path.is_file():
        files = [path]
    else:
        raise UserError(f"explanations path {path} does not exist")
    model, sae = split_neuronpedia_id(neuronpedia_id) if neuronpedia_id else (None, None)
    by_index: dict[int, list[str]] = {}
    seen: set[tuple[str, str]] = set()
    for file in files:
        found, saw = parse_records(_records_in(file), model, sae)
        seen |= saw
        for index, descriptions in found.items():
            by_index.setdefault(index, []).extend(descriptions)
    if not by_index and seen and neuronpedia_id:
        other = ", ".join(sorted("/".join(s) for s in seen)[:3])
        raise UserError(
            f"{path} holds explanations for {other}, not for {neuronpedia_id}; "
            "pass the export of the ablator SAE"
        )
    return Explanations(by_index, str(path))


def cache_root() -> Path:
    return Path(os.environ.get("PIVOTAL_SAE_CACHE") or Path.home() / ".cache" / "pivotal-sae")


def offline_by_env() -> bool:
    flags = (os.environ.get(name, "") for name in ("HF_HUB_OFFLINE", "PIVOTAL_SAE_OFFLINE"))
    return any(v.strip().lower() in ("1", "true", "yes", "on") for v in flags)


def _host_resolves(host: str, timeout_s: float = DNS_TIMEOUT_S) -> bool:
    """DNS lookups ignore socket timeouts and can hang ~20 s without a network; bound them."""
    answer: list[bool] = []

    def resolve() -> None:
        try:
            socket.getaddrinfo(host, 443)
            answer.append(True)
        except OSError:
            answer.append(False)

    worker = threading.Thread(target=resolve, daemon=True)
    worker.start()
    worker.join(timeout_s)
    return bool(answer and answer[0])


def _fetch_url(url: str, timeout_s: float = TIMEOUT_S) -> bytes | None:
    """The body at `url`, or None where there is no such object (403/404 from S3)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        if exc.code in (403, 404):
            return None
        raise


def download_explanations(neuronpedia_id: str, cache_dir: Path | None = None) -> Path | None:
    """Fetch every batch of the export into the cache; the folder, or None if unreachable.

    Batches already cached are not fetched again; a folder is marked complete once the batch
    after the last one is reported missing, so later runs skip the network altogether.
    """
    model, sae = split_neuronpedia_id(neuronpedia_id)
    folder = (cache_dir or cache_root()) / "neuronpedia" / model / sae
    if (folder / COMPLETE_MARKER).is_file():
        return folder
    if offline_by_env() or not _host_resolves(S3_HOST):
        return folder if folder.is_dir() and any(folder.iterdir()) else None
    for i in range(MAX_BATCHES):
        target = folder / f"batch-{i}.jsonl.gz"
        if target.is_file():
            continue
        try:
            body = _fetch_url(S3_BATCH_URL.format(model=model, sae=sae, i=i))
        except (OSError, ValueError) as exc:
            warnings.warn(
                f"stopped downloading Neuronpedia explanations for {neuronpedia_id}: {exc}",
                stacklevel=2,
            )
            break
        if body is None:
            if i > 0:
                atomic_write_bytes(folder / COMPLETE_MARKER, b"")
            break
        atomic_write_bytes(target, body)
    return folder if folder.is_dir() and any(folder.glob("batch-*.jsonl.gz")) else None


def load_explanations(
    neuronpedia_id: str | None,
    path: Path | None = None,
    *,
    download: bool = True,
    cache_dir: Path | None = None,
) -> Explanations:
    """Explanations for the SAE `neuronpedia_id`: from `path` when given (errors are the
    user's), else from the cache, downloading first when allowed and online. Never fails
    for want of a network: it returns no explanations instead."""
    if path is not None:
        return read_explanations(Path(path), neuronpedia_id)
    if not neuronpedia_id:
        return Explanations()
    if download:
        folder = download_explanations(neuronpedia_id, cache_dir)
    else:
        model, sae = split_neuronpedia_id(neuronpedia_id)
        folder = (cache_dir or cache_root()) / "neuronpedia" / model / sae
    if folder is None or not folder.is_dir():
        return Explanations()
    try:
        return read_explanations(folder, neuronpedia_id)
    except UserError as exc:
        warnings.warn(f"ignoring the cached explanations in {folder}: {exc}", stacklevel=2)
        return Explanations()
