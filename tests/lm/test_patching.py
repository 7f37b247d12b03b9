"""The fast patched run (replaying only the blocks between two hooks) equals the naive one."""

from __future__ import annotations

import pytest
import torch
from tiny_models import FAMILIES, padded_batch

from pivotal_sae.errors import UserError
from pivotal_sae.lm.patching import run_patched_naive

PAIRS = [
    ("blocks.0.hook_resid_post", "blocks.2.hook_resid_post"),  # block boundary → deeper block
    ("blocks.1.hook_resid_pre", "blocks.1.hook_mlp_out"),  # same block
    ("blocks.1.hook_mlp_out", "blocks.2.hook_attn_out"),  # mid-block ablator
    ("blocks.1.hook_mlp_out", "blocks.1.hook_resid_post"),  # the block's own output
    ("blocks.0.hook_attn_out", "blocks.0.hook_resid_post"),
    ("blocks.0.hook_resid_post", "blocks.1.hook_resid_pre"),  # the same tensor, two names
    ("blocks.1.hook_resid_post", "blocks.1.hook_resid_post"),  # reader = ablator
]


def _check(lm, ablator, reader, seed=0):
    ids, mask = padded_batch(seed=seed)
    g = torch.Generator().manual_seed(seed)
    context_index_V = torch.tensor([0, 2, 2, 1, 0])
    delta_VSM = torch.randn(5, ids.shape[1], lm.d_model, generator=g)
    baseline = lm.patch_baseline(ids, mask, ablator, reader)
    fast = lm.run_patched(baseline, context_index_V, delta_VSM)
    naive = run_patched_naive(lm, ids, mask, ablator, reader, context_index_V, delta_VSM)
    real = mask[context_index_V].bool()
    error = (fast - naive)[real].abs().max() / naive[real].abs().max()
    assert error < 1e-4, f"{ablator} → {reader}: relative error {error:.2e}"
    unpatched = lm.activations(ids, mask, [reader])[reader][context_index_V]
    assert not torch.allclose(fast[real], unpatched[real])  # the delta did something
    return baseline


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("ablator", "reader"), PAIRS)
def test_fast_patching_equals_naive(family, ablator, reader, tiny_lm):
    _check(tiny_lm(family), ablator, reader)


def test_bert_post_ln_hooks(tiny_lm):
    lm = tiny_lm("bert")
    _check(lm, "blocks.0.hook_resid_post", "blocks.0.hook_normalized_resid_post")
    _check(lm, "blocks.0.hook_normalized_resid_post", "blocks.2.hook_mlp_out")


def test_minilm_fast_patching_equals_naive(minilm):
    _check(minilm, "blocks.3.hook_resid_post", "blocks.4.hook_resid_post")
    _check(minilm, "blocks.2.hook_mlp_out", "blocks.3.hook_attn_out", seed=1)


@pytest.mark.parametrize("ablator", ["blocks.1.hook_resid_post", "blocks.1.hook_mlp_out"])
def test_patched_runs_skip_blocks_below_the_ablator(tiny_lm, ablator):
    # A pre-norm block only adds its MLP output to the residual: patching starts a block later.
    lm = tiny_lm("gemma2")
    ids, mask = padded_batch()
    baseline = lm.patch_baseline(ids, mask, ablator, "blocks.2.hook_mlp_out")
    assert baseline.ablator_acts_BSM.shape == (3, ids.shape[1], lm.d_model)
    calls = []
    handles = [
        block.register_forward_pre_hook(lambda m, a, i=i: calls.append(i))
        for i, block in enumerate(lm.hooks.layers)
    ]
    try:
        delta = torch.zeros(2, ids.shape[1], lm.d_model)
        patched = lm.run_patched(baseline, torch.tensor([1, 2]), delta)
    finally:
        for h in handles:
            h.remove()
    assert calls == [2]
    torch.testing.assert_close(patched, baseline.reader_acts_BSM[[1, 2]])


def test_reader_shallower_than_ablator_is_a_user_error(tiny_lm):
    lm = tiny_lm("llama")
    ids, mask = padded_batch()
    with pytest.raises(UserError, match=r"reader hook blocks\.0\.hook_resid_post is not after"):
        lm.patch_baseline(ids, mask, "blocks.1.hook_resid_pre", "blocks.0.hook_resid_post")
    with pytest.raises(UserError):
        lm.patch_baseline(ids, mask, "blocks.1.hook_mlp_out", "blocks.1.hook_attn_out")
