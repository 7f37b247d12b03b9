"""Random inputs for the absorption tests: sparse activations with a realistic shape."""

from __future__ import annotations

import pytest
import torch


def sparse_acts(n_tokens: int, d_sae: int, density: float, generator: torch.Generator):
    """Non-negative activations, each latent active with probability `density`; a few tokens
    have no active latent at all."""
    mask = torch.rand(n_tokens, d_sae, generator=generator) < density
    mask[:: max(1, n_tokens // 7)] = False
    return torch.rand(n_tokens, d_sae, generator=generator) * mask


@pytest.fixture
def generator(request) -> torch.Generator:
    """A fresh seed per test (printed on failure via the test id) so inputs are new each run
    but a failure can be replayed."""
    seed = torch.seed() % 2**31
    request.node.user_properties.append(("seed", seed))
    print(f"seed={seed}")
    return torch.Generator().manual_seed(seed)
