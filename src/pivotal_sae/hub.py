"""The Hugging Face hub, asked about once and quickly, before any job reaches for it.

Without a network the Hugging Face clients retry each request for half a minute and print a
dozen lines. `check_hub_sources(config)` runs after a command's own checks of its arguments and
local files, and before the job: it names what the command would fetch from the hub (a model
id, an SAELens release, a streamed dataset), and where something is neither on disk nor in the
local Hugging Face cache while the hub is switched off or unreachable, fails with one line. When
everything is cached but the hub is unreachable, it switches the clients to offline mode so
that they read the cache without retrying. Imports nothing heavy (no torch, no SAELens).
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import os
import socket
import sys
import threading
import urllib.parse
from pathlib import Path
from typing import Any

from pivotal_sae.errors import UserError

#: How long the reachability probe may take (DNS lookup, then TCP connect), in seconds.
PROBE_TIMEOUT_S = 2.0
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def offline_by_env() -> bool:
    """HF_HUB_OFFLINE is set to a true value."""
    value = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


@functools.cache
def _endpoint_reachable(endpoint: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """A TCP connection to the hub opens within `timeout_s` (DNS lookups ignore socket timeouts
    and can hang ~20 s without a network, so the whole probe runs in a bounded thread)."""
    url = urllib.parse.urlsplit(endpoint)
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    answer: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                answer.append(True)
        except OSError:
            answer.append(False)

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout_s)
    return bool(answer and answer[0])


def unavailable_reason() -> str | None:
    """Why the hub cannot be used now, or None where it can (or a proxy decides)."""
    if offline_by_env():
        return "the hub is switched off (HF_HUB_OFFLINE)"
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return None  # the proxy, not us, knows whether the hub is reachable
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    if not _endpoint_reachable(endpoint):
        return f"the hub ({endpoint}) cannot be reached"
    return None


def hub_cache_dir() -> Path:
    """The local Hugging Face hub cache, as `huggingface_hub` computes it."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "huggingface"
    )
    return Path(home).expanduser() / "hub"


def repo_cached(repo_id: str, kind: str = "models") -> bool:
    """Some snapshot of the hub repository is in the local cache."""
    return (hub_cache_dir() / f"{kind}--{repo_id.replace('/', '--')}" / "snapshots").is_dir()


def go_offline() -> None:
    """Make the Hugging Face clients read their cache without trying the network."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:  # already imported: it read the variable at import time
        constants.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]


# ---------------------------------------------------------------------- SAELens releases
@functools.cache
def pretrained_directory() -> dict[str, Any]:
    """SAELens's list of pretrained releases, read from its YAML without importing SAELens."""
    import yaml

    spec = importlib.util.find_spec("sae_lens")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("--sae-release needs the sae-lens package (pip install sae-lens)")
    yaml_path = Path(next(iter(spec.submodule_search_locations))) / "pretrained_saes.yaml"
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(yaml_path) as f:
        return yaml.load(f, Loader=loader)


def release_repo_id(release: str, sae_id: str | None, option: str = "--sae") -> str:
    """The hub repository of an SAELens release's SAE, or a `UserError` naming valid choices."""
    releases = pretrained_directory()
    if release not in releases:
        close = difflib.get_close_matches(release, list(releases), n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UserError(
            f"unknown {option}-release {release!r}: SAELens lists no such release{hint}"
        )
    ids = [entry["id"] for entry in releases[release].get("saes", [])]
    if sae_id is None or sae_id not in ids:
        shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
        what = (
            f"{option}-id {sae_id!r} is not in"
            if sae_id
            else f"{option}-release needs {option}-id;"
        )
        raise UserError(f"{what} release {release} (ids: {shown})")
    return str(releases[release]["repo_id"])


# ---------------------------------------------------------------------- a command's sources
def _is_hub_id(name: str) -> bool:
    """Hub ids are `name` or `org/name` and are not an existing path."""
    return not (
        Path(name).expanduser().exists()
        or name.startswith((".", "/", "~"))
        or name.count("/") > 1
        or name.endswith("/")
    )


def hub_sources(config: Any) -> list[tuple[str, str, str | None]]:
    """(what, how to do without the hub, cached repository or None) for each hub source that a
    command's config names. Knows the options of `lm.options` and `absorption.config`."""
    sources: list[tuple[str, str, str | None]] = []
    model = getattr(config, "model", None)
    if isinstance(model, str) and _is_hub_id(model):
        sources.append((f"model {model!r}", "pass --model DIR with a local copy", model))
    for prefix in ("", "ablator_", "reader_"):
        release = getattr(config, f"{prefix}sae_release", None)
        if release is None:
            continue
        sae_id = getattr(config, f"{prefix}sae_id", None)
        option = "--" + f"{prefix}sae".replace("_", "-")
        repo_id = release_repo_id(release, sae_id, option=option)
        sources.append(
            (f"SAE {release}/{sae_id}", f"download its weights and pass {option}-path DIR", repo_id)
        )
    dataset_id = getattr(config, "dataset_id", None)
    if isinstance(dataset_id, str) and _is_hub_id(dataset_id):
        # Streaming always reads from the hub, cached or not.
        sources.append((f"dataset {dataset_id!r}", "use --corpus PATH for local text", None))
    return sources


def check_hub_sources(config: Any) -> None:
    """Fail in seconds with one line where the command needs the hub and cannot have it."""
    sources = hub_sources(config)
    if not sources:
        return
    reason = unavailable_reason()
    if reason is None:
        return
    for what, instead, repo_id in sources:
        if repo_id is None or not repo_cached(repo_id):
            cache = "" if repo_id is None else " and it is not in the local Hugging Face cache"
            raise UserError(
                f"cannot fetch {what}: {reason}{cache}; run once online to cache it, or {instead}"
            )
    go_offline()
