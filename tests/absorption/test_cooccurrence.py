"""Co-occurrence counters against the per-token loop; checkpoints; promotion; ranks."""

from __future__ import annotations

import pytest
import torch

from pivotal_sae.absorption import cooccurrence
from pivotal_sae.absorption.cooccurrence import (
    DenseCooccurrence,
    SparseCooccurrence,
    make_cooccurrence_counter,
)
from pivotal_sae.errors import UserError

from .conftest import sparse_acts
from .references import cooccurrence_loop


def counters(d_sae: int) -> dict[str, DenseCooccurrence | SparseCooccurrence]:
    return {
        "scatter": DenseCooccurrence(d_sae, kernel="scatter"),
        "matmul": DenseCooccurrence(d_sae, kernel="matmul"),
        "auto": DenseCooccurrence(d_sae),
        "int64": DenseCooccurrence(d_sae, count_dtype=torch.int64, kernel="scatter"),
        "sparse": SparseCooccurrence(d_sae, flush_pairs=500),
    }


@pytest.mark.parametrize(("d_sae", "density"), [(1, 0.5), (23, 0.15), (97, 0.05)])
def test_counters_match_loop(d_sae, density, generator):
    acts_TE = sparse_acts(150, d_sae, density, generator)
    expected = cooccurrence_loop(acts_TE)
    for name, counter in counters(d_sae).items():
        counter.update(acts_TE[:40], contexts=1)
        counter.update(acts_TE[40:40], contexts=0)  # an empty step changes nothing
        counter.update(acts_TE[40:], contexts=2)
        assert torch.equal(counter.to_dense(), expected), name
        assert torch.equal(counter.firing_counts_e, expected.diagonal()), name
        assert (counter.tokens_counted, counter.contexts_processed) == (150, 3)


def test_sparse_input_matches_dense_input(generator):
    acts_TE = sparse_acts(120, 41, 0.1, generator)
    k = int((acts_TE > 0).sum(1).max()) + 3  # some slots hold inactive entries
    values_TK, indices_TK = acts_TE.topk(k, dim=1)
    expected = cooccurrence_loop(acts_TE)
    for name, counter in counters(41).items():
        counter.update_sparse(values_TK, indices_TK)
        assert torch.equal(counter.to_dense(), expected), name


def test_chunked_steps_match(generator, monkeypatch):
    monkeypatch.setattr(cooccurrence, "PAIRS_PER_CHUNK", 37)
    acts_TE = sparse_acts(90, 30, 0.2, generator)
    for name, counter in counters(30).items():
        counter.update(acts_TE)
        assert torch.equal(counter.to_dense(), cooccurrence_loop(acts_TE)), name


def test_lookup(generator):
    acts_TE = sparse_acts(100, 25, 0.2, generator)
    expected = cooccurrence_loop(acts_TE)
    i = torch.randint(0, 25, (200,), generator=generator)
    j = torch.randint(0, 25, (200,), generator=generator)
    for name, counter in counters(25).items():
        counter.update(acts_TE)
        assert torch.equal(counter.lookup(i, j), expected[i, j]), name
        assert torch.equal(
            counter.lookup(i.view(10, 20), j.view(10, 20)), expected[i, j].view(10, 20)
        )


def test_int32_storage_is_promoted_before_it_could_wrap(generator, monkeypatch):
    monkeypatch.setattr(cooccurrence, "INT32_MAX", 100)
    acts_TE = sparse_acts(150, 12, 0.3, generator)
    counter = DenseCooccurrence(12)
    counter.update(acts_TE[:100])
    assert counter.packed_counts.dtype == torch.int32
    counter.update(acts_TE[100:])
    assert counter.packed_counts.dtype == torch.int64
    assert torch.equal(counter.to_dense(), cooccurrence_loop(acts_TE))


def test_checkpoint_resume_equals_uninterrupted(generator):
    acts_TE = sparse_acts(120, 19, 0.2, generator)
    for name in ("scatter", "sparse"):
        whole, first = counters(19)[name], counters(19)[name]
        whole.update(acts_TE, contexts=4)
        first.update(acts_TE[:50], contexts=2)
        resumed = counters(19)[name]
        resumed.load_state_dict({k: v.clone() for k, v in first.state_dict().items()})
        resumed.update(acts_TE[50:], contexts=2)
        assert torch.equal(resumed.to_dense(), whole.to_dense()), name
        assert resumed.tokens_counted == whole.tokens_counted
        assert resumed.contexts_processed == whole.contexts_processed


def test_state_of_another_width_is_refused():
    state = DenseCooccurrence(5).state_dict()
    with pytest.raises(UserError, match="5 latents"):
        DenseCooccurrence(6).load_state_dict(state)


def test_layout_choice():
    assert make_cooccurrence_counter(100).layout == "packed"
    assert make_cooccurrence_counter(100, dense_limit_bytes=1000).layout == "sparse"
    # 65,536 latents in int32 packed storage fit the 9 GB budget.
    assert cooccurrence.packed_size(65_536) * 4 < 9e9
    with pytest.raises(UserError):
        make_cooccurrence_counter(10, layout="nope")


def test_distinct_pairs_agree_between_layouts():
    g = torch.Generator().manual_seed(5)
    acts_TE = torch.rand(64, 40, generator=g) * (torch.rand(64, 40, generator=g) < 0.15)
    dense, sparse = DenseCooccurrence(40), SparseCooccurrence(40)
    dense.update(acts_TE)
    sparse.update(acts_TE)
    full_ee = ((acts_TE > 0).double().T @ (acts_TE > 0).double()) > 0
    expected = int(torch.triu(full_ee).sum())
    assert dense.distinct_pairs() == sparse.distinct_pairs() == expected
