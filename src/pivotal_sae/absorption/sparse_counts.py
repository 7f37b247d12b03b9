"""Exact sparse counts as the co-occurrence and token-firing counters keep them: sorted unique
int64 keys (a pair code, a latent-and-token code) with int64 counts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup


def sum_by_key(keys_N: torch.Tensor, counts_N: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys in any order, repeats allowed: the sorted unique keys and each one's summed count."""
    keys_U, inverse_N = keys_N.unique(sorted=True, return_inverse=True)
    return keys_U, torch.zeros_like(keys_U).index_add_(0, inverse_N, counts_N.to(torch.int64))


def add_sorted_counts(
    keys: torch.Tensor, counts: torch.Tensor, keys_U: torch.Tensor, counts_U: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Add sorted unique `(keys_U, counts_U)` into the sorted unique store `(keys, counts)`; returns
    the new store (`counts` is added to in place where the keys are already there).

    A linear merge, no sort: each new key goes in after the stored keys smaller than it, and
    each stored key moves right by the number of new keys smaller than it. Beside the result it
    holds one int64 per stored key (its new position), so a flush costs a pass over the store
    rather than a sort of it."""
    if keys.numel() == 0:
        return keys_U, counts_U.to(torch.int64)
    pos_U = torch.searchsorted(keys, keys_U)
    hit_U = keys[pos_U.clamp(max=keys.numel() - 1)] == keys_U
    counts.index_add_(0, pos_U[hit_U], counts_U[hit_U].to(torch.int64))
    if bool(hit_U.all()):
        return keys, counts
    fresh_U = ~hit_U
    before_N = pos_U[fresh_U]  # stored keys smaller than each new key (ascending)
    n_new = before_N.numel()
    at_S = torch.bincount(before_N, minlength=keys.numel() + 1)[:-1].cumsum_(0)
    at_S += torch.arange(keys.numel(), device=keys.device)
    merged_keys = keys.new_empty(keys.numel() + n_new)
    merged_counts = counts.new_empty(keys.numel() + n_new)
    merged_keys[at_S] = keys
    merged_counts[at_S] = counts
    del at_S
    at_N = before_N + torch.arange(n_new, device=keys.device)
    merged_keys[at_N] = keys_U[fresh_U]
    merged_counts[at_N] = counts_U[fresh_U].to(torch.int64)
    return merged_keys, merged_counts


def gather_counts(
    keys: torch.Tensor,
    counts: torch.Tensor,
    group: ProcessGroup | None,
    device: torch.device,
    out_device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's store gathered over `device` (each rank holds different keys; every rank
    must call) and summed on `out_device` (default `device`): the union, the same on every
    rank."""
    import torch.distributed as dist

    world = dist.get_world_size(group)
    size = torch.tensor([keys.numel()], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size, group=group)
    padded = torch.zeros(2, max(int(s) for s in sizes), dtype=torch.int64, device=device)
    padded[0, : keys.numel()] = keys.to(device)
    padded[1, : keys.numel()] = counts.to(device)
    gathered = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded, group=group)
    both = torch.cat([g[:, : int(n)] for g, n in zip(gathered, sizes, strict=True)], dim=1)
    both = both.to(out_device or device)
    return sum_by_key(both[0], both[1])
