"""Counts and examples summed across two gloo ranks equal one process's."""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pivotal_sae.absorption.cooccurrence import DenseCooccurrence, SparseCooccurrence
from pivotal_sae.absorption.examples import TopExamples

D_SAE, S = 17, 6


def _inputs():
    generator = torch.Generator().manual_seed(7)
    acts_BSE = torch.relu(torch.randn(8, S, D_SAE, generator=generator) - 0.8)
    ids_BS = torch.randint(0, 50, (8, S), generator=generator)
    return acts_BSE, ids_BS


def _worker(rank: int, world: int, store: str, out: str) -> None:
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - gloo chatter
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    acts_BSE, ids_BS = _inputs()
    mine = slice(rank * 4, rank * 4 + 4)
    dense, sparse = DenseCooccurrence(D_SAE), SparseCooccurrence(D_SAE)
    examples = TopExamples(D_SAE, 3, 2, 1)
    for counter in (dense, sparse):
        counter.update(acts_BSE[mine].reshape(-1, D_SAE), contexts=4)
    examples.update(
        acts_BSE[mine], ids_BS[mine], torch.ones(4, S, dtype=torch.bool), torch.arange(8)[mine]
    )
    for held in (dense, sparse, examples):
        held.all_reduce_()
    # Reducing again must not double count: the other ranks now hold nothing.
    dense.all_reduce_()
    torch.save(
        {
            "dense": dense.to_dense(),
            "sparse": sparse.to_dense(),
            "tokens": dense.tokens_counted,
            "contexts": sparse.contexts_processed,
            "examples": examples.state_dict(),
        },
        f"{out}.{rank}",
    )
    dist.destroy_process_group()


def test_two_ranks_equal_one_process(tmp_path):
    out = str(tmp_path / "result")
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), out), nprocs=2, join=True)
    acts_BSE, ids_BS = _inputs()
    single = DenseCooccurrence(D_SAE)
    single.update(acts_BSE.reshape(-1, D_SAE), contexts=8)
    examples = TopExamples(D_SAE, 3, 2, 1)
    examples.update(acts_BSE, ids_BS, torch.ones(8, S, dtype=torch.bool), torch.arange(8))
    first, second = torch.load(f"{out}.0"), torch.load(f"{out}.1")
    assert torch.equal(first["dense"], single.to_dense())
    assert torch.equal(first["sparse"], single.to_dense())
    assert (first["tokens"], first["contexts"]) == (8 * S, 8)
    assert second["dense"].sum() == 0 and second["tokens"] == 0
    for name, tensor in examples.state_dict().items():
        assert torch.equal(first["examples"][name], tensor), name
        assert torch.equal(second["examples"][name], tensor), name
