"""Configuration of `pivotal-sae serve` and `pivotal-sae highlight`: the source of their options.

Cheap checks (port range, bind address versus token, limits, the client's server URL) run in
`__post_init__`, before any model is loaded, so bad input fails in well under a second.
"""

from __future__ import annotations

import ipaddress
import math
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pivotal_sae.errors import UserError
from pivotal_sae.lm.options import ModelOptions, SaeOptions

TOKEN_ENV = "PIVOTAL_SAE_TOKEN"
LOOPBACK_NAMES = ("localhost", "localhost.", "ip6-localhost")


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_run_dir(run: Path) -> None:
    """A fast look at --run before anything heavy loads: is it an absorb run directory?"""
    if not run.is_dir():
        raise UserError(f"--run {run}: no such directory")
    names = ["pairs.json"] + [
        f"{kind}.safetensors{zst}"
        for kind in ("cooccurrences", "effects", "top_examples")
        for zst in ("", ".zst")
    ]
    if not any((run / name).is_file() for name in names):
        raise UserError(
            f"--run {run} is not an absorb run directory: it holds no pairs.json and no "
            "cooccurrences/effects/top_examples.safetensors"
        )


def _token_from_env(token: str | None) -> str | None:
    # The environment keeps the secret out of `ps` listings and shell history.
    token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)
    # An HTTP header carries printable ASCII only: any other token could never match.
    if token is not None and not (token.isascii() and token.isprintable() and token.strip()
                                  and not any(c.isspace() for c in token)):  # fmt: skip
        raise UserError("--token must be printable ASCII without spaces (it travels in an "
                        "HTTP header)")  # fmt: skip
    return token


@dataclass
class ServeConfig(SaeOptions, ModelOptions):
    """Serve the feature explorer: prompt highlighting, absorption pairs and latents, JSON API.

    Loads the model and SAEs once and keeps them (no flags: the embedded MiniLM and its
    default SAEs, or the SAEs of the run given with --run); requests pick among them by name.
    """

    run: Path | None = None
    """An `absorb` run directory whose pairs, examples and counts the pages browse."""

    explanations: Path | None = None
    """Neuronpedia explanation export (a .jsonl.gz/.jsonl/.json file or a folder of them);
    without it, explanations are read from the cache or downloaded when online."""

    host: str = "127.0.0.1"
    """Address to bind. Anything but loopback needs --token."""

    port: int = 8000
    """Port to listen on."""

    token: str | None = None
    """Bearer token every API call must carry (also read from $PIVOTAL_SAE_TOKEN); required
    when --host is not a loopback address."""

    max_prompt_chars: int = 4000
    """Longest prompt accepted, in characters (longer: HTTP 422)."""

    max_prompt_tokens: int = 512
    """Longest prompt accepted, in tokens, BOS included (capped by the model's positions)."""

    max_request_bytes: int = 65536
    """Largest request body accepted, in bytes (larger: HTTP 413)."""

    dashboard_contexts: int = 128
    """Contexts of 64 tokens (embedded corpus) behind each SAE's dashboard histograms, top
    tokens and quantile examples, run once at its first dashboard; 0 leaves those panels out."""

    def __post_init__(self) -> None:
        self.check_model_options()
        self.check_sae_options()
        for name, value, least in (
            ("--dashboard-contexts", self.dashboard_contexts, 0),
            ("--max-prompt-chars", self.max_prompt_chars, 1),
            ("--max-prompt-tokens", self.max_prompt_tokens, 2),
            ("--max-request-bytes", self.max_request_bytes, 1024),
        ):
            if value < least:
                raise UserError(f"{name} must be at least {least} (got {value})")
        if not 1 <= self.port <= 65535:
            raise UserError(f"--port must be between 1 and 65535 (got {self.port})")
        self.token = _token_from_env(self.token)
        if self.token is not None and len(self.token) < 8:
            raise UserError("--token must be at least 8 characters long")
        if not is_loopback(self.host) and self.token is None:
            raise UserError(
                f"--host {self.host} is reachable from other machines; give --token SECRET "
                f"(or set ${TOKEN_ENV}) so only holders of the token can use the server"
            )
        if self.run is not None:
            check_run_dir(self.run)


@dataclass(kw_only=True)
class HighlightConfig(SaeOptions, ModelOptions):
    """Write one prompt's activations of one latent as a self-contained HTML page.

    With --server, asks a running `pivotal-sae serve`; otherwise loads the model and SAE here.
    """

    prompt: str
    """The text to highlight."""

    feature_idx: int
    """Latent index to show."""

    out: Path | None = None
    """HTML file to write (default: highlight-latent-<feature-idx>.html here)."""

    sae: str | None = None
    """Name of the SAE (as `pivotal-sae serve` lists it at /api/saes; default: the first)."""

    server: str | None = None
    """URL of a running `pivotal-sae serve`, e.g. http://127.0.0.1:8000."""

    token: str | None = None
    """Bearer token for --server (also read from $PIVOTAL_SAE_TOKEN)."""

    explanations: Path | None = None
    """Neuronpedia explanation export for the latent (in-process only)."""

    timeout: float = 120.0
    """Seconds to wait for --server."""

    def __post_init__(self) -> None:
        self.check_model_options()
        self.check_sae_options()
        self.token = _token_from_env(self.token)
        if self.feature_idx < 0:
            raise UserError(f"--feature-idx must be non-negative (got {self.feature_idx})")
        if not self.prompt.strip():
            raise UserError("--prompt is empty")
        if self.out is None:
            self.out = Path(f"highlight-latent-{self.feature_idx}.html")
        try:
            self.prompt.encode("utf-8")
        except UnicodeEncodeError:
            raise UserError("--prompt is not valid UTF-8 text") from None
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise UserError(f"--timeout must be a positive number of seconds (got {self.timeout})")
        if self.out.is_dir():
            raise UserError(f"--out {self.out} is a directory; name an .html file")
        if not self.out.expanduser().parent.is_dir():
            raise UserError(f"--out {self.out}: the folder {self.out.parent} does not exist")
        if self.server is not None:
            parts = urlsplit(self.server)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise UserError(f"--server must be an http(s) URL, not {self.server!r}")
            local = (
                self.model is not None
                or self.sae_path is not None
                or self.sae_release is not None
                or self.explanations is not None
            )
            if local:
                raise UserError(
                    "--server uses the server's model, SAEs and explanations; drop --model, "
                    "--sae-path, --sae-release and --explanations, or drop --server"
                )
