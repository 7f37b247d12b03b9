"""The default SAEs: two TopK SAEs on MiniLM's residual stream, trained on first use.

No SAE ships with the project. The first job that needs the default SAEs trains them (a few
minutes on two CPU cores; `pivotal_sae.training.job.ensure_default_saes`) into the per-user
cache, `$PIVOTAL_SAE_CACHE` or `~/.cache/pivotal-sae`, and every later command finds them there.
The cache key names the training recipe, so changing the recipe trains afresh instead of reusing
SAEs trained another way. Readers (the explorer, `sae-info`) only look them up: they never train.
"""

from __future__ import annotations

from pathlib import Path

from pivotal_sae.errors import UserError
from pivotal_sae.lm.defaults import cache_dir

#: Residual stream after blocks 3 and 4 of the 6-block model. BERT normalizes after adding,
#: so what flows to the next block is TransformerLens's `hook_normalized_resid_post`; its
#: `hook_resid_post` is the sum before that LayerNorm, where one dimension holds ~44% of the
#: variance at block 4 (docs/models.md), which starves most SAE latents.
DEFAULT_HOOKS = ("blocks.3.hook_normalized_resid_post", "blocks.4.hook_normalized_resid_post")
DEFAULT_D_SAE = 4096
DEFAULT_K = 32
#: Bump when the default recipe changes, so caches of the old recipe are not reused.
DEFAULT_RECIPE = "minilm-sotu-topk4096-k32-v2"


def default_sae_root() -> Path:
    return cache_dir() / "default-saes" / DEFAULT_RECIPE


def default_sae_dirs(root: Path | None = None) -> dict[str, Path]:
    """Hook name → SAELens-format directory of each default SAE (whether trained yet or not)."""
    root = root or default_sae_root()
    return {hook: root / hook / "sae" for hook in DEFAULT_HOOKS}


def default_saes_trained() -> bool:
    return all((d / "cfg.json").is_file() for d in default_sae_dirs().values())


def find_default_saes() -> dict[str, Path]:
    """The default SAEs' directories, or a one-line `UserError` saying how to train them."""
    if not default_saes_trained():
        raise UserError(
            f"the default SAEs are not trained yet (looked in {default_sae_root()}); "
            "run `pivotal-sae train-sae` once, or name SAEs with --sae-path / --sae-release"
        )
    return default_sae_dirs()
