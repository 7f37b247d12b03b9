"""The sorted sparse stores' merge against the plain way: concatenate, then sum by key."""

import pytest
import torch

from pivotal_sae.absorption.sparse_counts import add_sorted_counts, sum_by_key


def random_store(g: torch.Generator, n: int, high: int) -> tuple[torch.Tensor, torch.Tensor]:
    keys = torch.randint(high, (n,), generator=g)
    return sum_by_key(keys, torch.randint(1, 5, (n,), generator=g))


@pytest.mark.parametrize("seed", range(6))
def test_merge_equals_concatenate_and_sum(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    high = [8, 50, 1 << 40][seed % 3]  # mostly hits, a mix, almost all new
    keys, counts = random_store(g, int(torch.randint(1, 400, (1,), generator=g)), high)
    for _ in range(4):
        new_keys, new_counts = random_store(g, int(torch.randint(0, 300, (1,), generator=g)), high)
        want = sum_by_key(torch.cat([keys, new_keys]), torch.cat([counts, new_counts]))
        keys, counts = add_sorted_counts(keys.clone(), counts.clone(), new_keys, new_counts)
        assert torch.equal(keys, want[0]) and torch.equal(counts, want[1])


def test_merge_edges() -> None:
    keys, counts = torch.tensor([10, 20, 30]), torch.tensor([1, 1, 1])
    # new keys before, between and after every stored key, and one stored key hit
    got = add_sorted_counts(keys, counts, torch.tensor([0, 15, 20, 99]), torch.tensor([5, 6, 7, 8]))
    assert got[0].tolist() == [0, 10, 15, 20, 30, 99]
    assert got[1].tolist() == [5, 1, 6, 8, 1, 8]
    empty = torch.zeros(0, dtype=torch.int64)
    assert add_sorted_counts(empty, empty, torch.tensor([3]), torch.tensor([2]))[0].tolist() == [3]
    same = add_sorted_counts(torch.tensor([3]), torch.tensor([1]), empty, empty)
    assert same[0].tolist() == [3] and same[1].tolist() == [1]
