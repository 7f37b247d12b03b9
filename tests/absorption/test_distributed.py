"""Counts, examples and effects summed across two gloo ranks equal one process's, also when
reduced more than once (as the jobs do at every checkpoint)."""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pivotal_sae.absorption.ablation import AblationEffects
from pivotal_sae.absorption.cooccurrence import DenseCooccurrence, SparseCooccurrence
from pivotal_sae.absorption.examples import TopExamples

D_SAE, S, N_CONTEXTS, READER = 17, 6, 12, 5
#: Which contexts each rank takes before the first and the second reduction.
PHASES = [range(0, 8), range(8, 12)]


def _inputs():
    generator = torch.Generator().manual_seed(7)
    acts_BSE = torch.relu(torch.randn(N_CONTEXTS, S, D_SAE, generator=generator) - 0.8)
    ids_BS = torch.randint(0, 50, (N_CONTEXTS, S), generator=generator)
    # Ties across ranks: context 9 repeats context 2, so the order (value, then id) matters.
    acts_BSE[9] = acts_BSE[2]
    effects_BKE = torch.randn(N_CONTEXTS, 3, READER, generator=generator)
    latents_BK = torch.stack([torch.randperm(D_SAE, generator=generator)[:3]
                              for _ in range(N_CONTEXTS)])  # fmt: skip
    return acts_BSE, ids_BS, effects_BKE, latents_BK


def _add(held, contexts: list[int]) -> None:
    acts_BSE, ids_BS, effects_BKE, latents_BK = _inputs()
    dense, sparse, examples, effects = held
    index = torch.tensor(contexts, dtype=torch.int64)
    for counter in (dense, sparse):
        counter.update(acts_BSE[index].reshape(-1, D_SAE), contexts=len(contexts),
                       token_ids_T=ids_BS[index].reshape(-1))  # fmt: skip
    examples.update(acts_BSE[index], ids_BS[index], torch.ones(len(contexts), S, dtype=torch.bool),
                    index)  # fmt: skip
    for context in contexts:
        effects.reserve(latents_BK[context])
        effects.add(latents_BK[context], effects_BKE[context])


def _holders():
    return (DenseCooccurrence(D_SAE), SparseCooccurrence(D_SAE), TopExamples(D_SAE, 3, 2, 1),
            AblationEffects(D_SAE, READER, initial_rows=2))  # fmt: skip


def _worker(rank: int, world: int, store: str, out: str) -> None:
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - gloo chatter
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    held = _holders()
    dense, sparse, examples, effects = held
    for phase in PHASES:
        _add(held, [i for i in phase if (i - phase.start) % world == rank])
        dense.all_reduce_()
        sparse.all_reduce_()
        examples.all_reduce_()
        effects.all_reduce_()
    # Reducing again must not double count: the other ranks now hold nothing.
    dense.all_reduce_()
    effects.all_reduce_()
    sparse.all_reduce_(keep_on_all_ranks=True)
    ids_R, rows_RE = effects.rows()
    torch.save(
        {
            "dense": dense.to_dense(),
            "sparse": sparse.to_dense(),
            "tokens": dense.tokens_counted,
            "sparse_tokens": sparse.tokens_counted,
            "dense_token_firing": dense.token_firing.state_dict(),
            "sparse_token_firing": sparse.token_firing.state_dict(),
            "contexts": sparse.contexts_processed,
            "examples": examples.state_dict(),
            "effect_ids": ids_R,
            "effect_rows": rows_RE,
            "how_often": effects.how_often_activated_e,
        },
        f"{out}.{rank}",
    )
    dist.destroy_process_group()


def test_two_ranks_equal_one_process(tmp_path):
    out = str(tmp_path / "result")
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), out), nprocs=2, join=True)
    single = _holders()
    _add(single, list(range(N_CONTEXTS)))
    dense, _, examples, effects = single
    first, second = torch.load(f"{out}.0"), torch.load(f"{out}.1")
    assert torch.equal(first["dense"], dense.to_dense())
    assert torch.equal(first["sparse"], dense.to_dense())
    assert torch.equal(second["sparse"], dense.to_dense())  # keep_on_all_ranks
    assert (first["tokens"], first["contexts"]) == (N_CONTEXTS * S, N_CONTEXTS)
    assert second["sparse_tokens"] == N_CONTEXTS * S
    assert second["dense"].sum() == 0 and second["tokens"] == 0
    for name, tensor in dense.token_firing.state_dict().items():  # firing per token id
        assert torch.equal(first["dense_token_firing"][name], tensor), name
        assert torch.equal(first["sparse_token_firing"][name], tensor), name
        assert torch.equal(second["sparse_token_firing"][name], tensor), name  # kept
        assert second["dense_token_firing"][name].numel() == 0, name
    for name, tensor in examples.state_dict().items():
        assert torch.equal(first["examples"][name], tensor), name
        assert torch.equal(second["examples"][name], tensor), name
    ids_R, rows_RE = effects.rows()
    assert torch.equal(first["effect_ids"], ids_R)
    torch.testing.assert_close(first["effect_rows"], rows_RE, rtol=1e-5, atol=1e-6)
    assert torch.equal(first["how_often"], effects.how_often_activated_e)
    assert second["effect_ids"].numel() == 0 and second["how_often"].sum() == 0
