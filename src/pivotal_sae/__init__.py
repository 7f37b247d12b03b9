"""Pivotal SAE."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pivotal_sae.absorption.results import load_results

__all__ = ["load_results"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `import pivotal_sae` (and the CLI's --help) does not pull in torch.
    if name == "load_results":
        from pivotal_sae.absorption.results import load_results

        return load_results
    raise AttributeError(f"module 'pivotal_sae' has no attribute {name!r}")
