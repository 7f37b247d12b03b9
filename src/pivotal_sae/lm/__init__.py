"""The language-model side: model adapter (hooks, early exit, patching), corpora and contexts.

Names are imported lazily so that `import pivotal_sae.lm` (and the CLI's `--help`) does not pay
for transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LanguageModel": "pivotal_sae.lm.model",
    "PatchBaseline": "pivotal_sae.lm.patching",
    "run_patched_naive": "pivotal_sae.lm.patching",
    "HookSite": "pivotal_sae.lm.hooks",
    "Corpus": "pivotal_sae.lm.corpus",
    "open_corpus": "pivotal_sae.lm.corpus",
    "Contexts": "pivotal_sae.lm.contexts",
    "ContextBatch": "pivotal_sae.lm.contexts",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pivotal_sae.lm' has no attribute {name!r}")
