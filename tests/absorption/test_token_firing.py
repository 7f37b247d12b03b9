"""Firing per token id and the token-conditioned expectation, against loops."""

from __future__ import annotations

import pytest
import torch

from pivotal_sae.absorption.cooccurrence import DenseCooccurrence, SparseCooccurrence
from pivotal_sae.absorption.results import load_cooccurrence_counter, save_cooccurrences


def token_expectation_loop(acts_TE, ids_T, i, j):
    """Σ over token ids v of f_i(v) f_j(v) / n(v), one token at a time."""
    fired: dict[tuple[int, int], int] = {}
    seen: dict[int, int] = {}
    for token, v in zip(acts_TE.tolist(), ids_T.tolist(), strict=True):
        seen[v] = seen.get(v, 0) + 1
        for latent, value in enumerate(token):
            if value > 0:
                fired[latent, v] = fired.get((latent, v), 0) + 1
    return sum(fired.get((i, v), 0) * fired.get((j, v), 0) / n for v, n in seen.items())


def case(seed: int, tokens: int = 300, e: int = 12, vocab: int = 20):
    g = torch.Generator().manual_seed(seed)
    ids_T = torch.randint(0, vocab, (tokens,), generator=g)
    # latents prefer some token ids, so the token null differs from independence
    likes_EV = torch.rand(e, vocab, generator=g) < 0.3
    acts_TE = torch.rand(tokens, e, generator=g) * likes_EV[:, ids_T].T
    acts_TE[acts_TE < 0.4] = 0.0
    return acts_TE, ids_T


@pytest.mark.parametrize("layout", [DenseCooccurrence, SparseCooccurrence])
@pytest.mark.parametrize("seed", [0, 1])
def test_token_conditioned_expectation_matches_a_loop(layout, seed, tmp_path) -> None:
    acts_TE, ids_T = case(seed)
    counter = layout(acts_TE.shape[1])
    for chunk in range(0, len(ids_T), 70):  # several updates, as batches come
        counter.update(
            acts_TE[chunk : chunk + 70], contexts=1, token_ids_T=ids_T[chunk : chunk + 70]
        )
    counter.token_firing.flush_entries = 1  # (also exercise merging in the loaded copy)
    assert counter.counts_tokens
    pairs = torch.tensor([[0, 1], [2, 5], [3, 3], [7, 11], [4, 9]])
    expected = [token_expectation_loop(acts_TE, ids_T, int(a), int(b)) for a, b in pairs]
    got = counter.token_firing.expected_cooccurrence(pairs[:, 0], pairs[:, 1])
    assert got.tolist() == pytest.approx(expected, rel=1e-12)
    # independence ignores the tokens: here the two differ
    independent = counter.expected_cooccurrence(pairs[:, 0], pairs[:, 1])
    assert not torch.allclose(got, independent)
    # saved and loaded (also as a checkpoint) it is the same
    save_cooccurrences(tmp_path / "c.safetensors", counter, {})
    loaded = load_cooccurrence_counter(tmp_path / "c.safetensors")
    assert loaded.counts_tokens
    assert torch.equal(loaded.token_firing.expected_cooccurrence(pairs[:, 0], pairs[:, 1]), got)


def test_sparse_top_k_updates_count_the_same_as_dense() -> None:
    acts_TE, ids_T = case(3)
    values_TK, indices_TK = acts_TE.topk(12, dim=1)
    dense, sparse = DenseCooccurrence(12), DenseCooccurrence(12)
    dense.update(acts_TE, token_ids_T=ids_T)
    sparse.update_sparse(values_TK, indices_TK, token_ids_T=ids_T)
    for name, tensor in dense.token_firing.state_dict().items():
        assert torch.equal(sparse.token_firing.state_dict()[name], tensor), name


def test_counts_without_token_ids_say_so(tmp_path) -> None:
    acts_TE, _ = case(4)
    counter = DenseCooccurrence(acts_TE.shape[1])
    counter.update(acts_TE)
    assert not counter.counts_tokens
    save_cooccurrences(tmp_path / "old.safetensors", counter, {})
    assert not load_cooccurrence_counter(tmp_path / "old.safetensors").counts_tokens
