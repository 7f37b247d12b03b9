"""A shuffling buffer of token activations, so SAE batches mix many contexts and documents.

Consecutive tokens of one context are strongly correlated; training on them in order makes
SAE batches unrepresentative. The buffer keeps up to `capacity` tokens, and whenever it is full
it shuffles and hands out half of them as batches, keeping the other half to mix with what
arrives next (as SAELens's mixing buffer does). Several hooks share one permutation, so row i of
each hook's batch is the same token.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch


class ActivationBuffer:
    def __init__(self, capacity: int, batch_size: int, seed: int = 0) -> None:
        if capacity < 2 * batch_size:
            raise ValueError(f"buffer of {capacity} tokens cannot serve batches of {batch_size}")
        self.capacity = capacity
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def batches(
        self, chunks: Iterable[dict[str, torch.Tensor]]
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Shuffled `{hook: acts_NM}` batches of `batch_size` tokens (a short tail is dropped)."""
        pending: list[dict[str, torch.Tensor]] = []
        held = 0
        for chunk in chunks:
            pending.append(chunk)
            held += len(next(iter(chunk.values())))
            if held >= self.capacity:
                store = self._shuffled(pending)
                n_out = (held // 2) // self.batch_size * self.batch_size
                yield from self._split(store, n_out)
                pending = [{hook: acts[n_out:] for hook, acts in store.items()}]
                held -= n_out
        if pending and held:
            store = self._shuffled(pending)
            yield from self._split(store, held // self.batch_size * self.batch_size)

    def _shuffled(self, pending: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        store = {hook: torch.cat([c[hook] for c in pending]) for hook in pending[0]}
        n = len(next(iter(store.values())))
        order = torch.randperm(n, generator=self.generator).to(next(iter(store.values())).device)
        return {hook: acts[order] for hook, acts in store.items()}

    def _split(
        self, store: dict[str, torch.Tensor], n_out: int
    ) -> Iterator[dict[str, torch.Tensor]]:
        for start in range(0, n_out, self.batch_size):
            yield {hook: acts[start : start + self.batch_size] for hook, acts in store.items()}
