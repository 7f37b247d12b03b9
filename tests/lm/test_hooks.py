"""Hook names resolve to the tensors TransformerLens defines, for every supported family."""

from __future__ import annotations

import pytest
import torch
from tiny_models import FAMILIES, padded_batch

from pivotal_sae.errors import UserError


def _all_acts(lm, ids, mask):
    return lm.activations(ids, mask, lm.hook_names(), early_exit=False)


@pytest.mark.parametrize("family", FAMILIES)
def test_residual_hooks_equal_output_hidden_states(family, tiny_lm):
    lm = tiny_lm(family)
    ids, mask = padded_batch()
    acts = _all_acts(lm, ids, mask)
    with torch.no_grad():
        hidden = lm.base(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    hidden = hidden.hidden_states
    block_output = "hook_normalized_resid_post" if family == "bert" else "hook_resid_post"
    for layer in range(lm.n_layers):
        assert torch.equal(acts[f"blocks.{layer}.hook_resid_pre"], hidden[layer])
        if layer < lm.n_layers - 1 or family == "bert":  # HF applies the final norm to the last
            assert torch.equal(acts[f"blocks.{layer}.{block_output}"], hidden[layer + 1])


@pytest.mark.parametrize("family", FAMILIES)
def test_hooks_add_up_as_transformerlens_defines_them(family, tiny_lm):
    """resid_mid = resid_pre + attn_out; resid_post = resid_mid + mlp_out (family variants)."""
    lm = tiny_lm(family)
    ids, mask = padded_batch()
    acts = _all_acts(lm, ids, mask)
    for layer in range(lm.n_layers):
        a = {k.split(".", 2)[2]: v for k, v in acts.items() if k.startswith(f"blocks.{layer}.")}
        if family == "gpt_neox":  # parallel attention and MLP read the same input
            want = a["hook_resid_pre"] + a["hook_attn_out"] + a["hook_mlp_out"]
            torch.testing.assert_close(a["hook_resid_post"], want)
            continue
        torch.testing.assert_close(a["hook_resid_mid"], a["hook_resid_pre"] + a["hook_attn_out"])
        if family == "bert":  # post-LN: the MLP adds to the normalized resid_mid
            norm = lm.hooks.layers[layer].attention.output.LayerNorm
            want = norm(a["hook_resid_mid"]) + a["hook_mlp_out"]
        else:
            want = a["hook_resid_mid"] + a["hook_mlp_out"]
        torch.testing.assert_close(a["hook_resid_post"], want)


def test_gemma2_mlp_out_is_after_post_feedforward_norm(tiny_lm):
    lm = tiny_lm("gemma2")
    ids, mask = padded_batch()
    seen = {}
    block = lm.hooks.layers[1]
    handle = block.post_feedforward_layernorm.register_forward_hook(
        lambda m, args, out: seen.update(norm_out=out, mlp_out=args[0])
    )
    try:
        acts = lm.activations(ids, mask, ["blocks.1.hook_mlp_out"])
    finally:
        handle.remove()
    assert torch.equal(acts["blocks.1.hook_mlp_out"], seen["norm_out"])
    assert not torch.allclose(seen["mlp_out"], seen["norm_out"])


@pytest.mark.parametrize("family", FAMILIES)
def test_early_exit_is_identical_and_skips_later_blocks(family, tiny_lm):
    lm = tiny_lm(family)
    ids, mask = padded_batch()
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_attn_out"]
    calls = []
    handles = [
        block.register_forward_pre_hook(lambda m, a, i=i: calls.append(i))
        for i, block in enumerate(lm.hooks.layers)
    ]
    try:
        fast = lm.activations(ids, mask, hooks)
        assert calls == [0, 1]
        calls.clear()
        full = lm.activations(ids, mask, hooks, early_exit=False)
        assert calls == list(range(lm.n_layers))
    finally:
        for h in handles:
            h.remove()
    for hook in hooks:
        assert torch.equal(fast[hook], full[hook])


def test_unknown_hook_lists_valid_names(tiny_lm):
    lm = tiny_lm("llama")
    with pytest.raises(UserError) as info:
        lm.resolve("blocks.9.hook_resid_post")
    message = str(info.value)
    assert "blocks.{0..2}" in message and "hook_mlp_out" in message and "\n" not in message
    with pytest.raises(UserError):
        lm.resolve("blocks.1.hook_z")


def test_hf_hook_names_resolve_to_transformerlens_sites(tiny_lm):
    lm = tiny_lm("llama")
    assert lm.resolve("layers.1").name == "blocks.1.hook_resid_post"
    assert lm.resolve("layers.1.output").name == "blocks.1.hook_resid_post"
    assert lm.resolve("layers.2.mlp").name == "blocks.2.hook_mlp_out"
    site = lm.resolve("layers.0.mlp.down_proj")
    assert site.layer == 0 and site.where == "output"


def test_minilm_hooks_match_hidden_states(minilm):
    ids, mask = padded_batch(seq=10)
    acts = minilm.activations(
        ids, mask, ["blocks.3.hook_normalized_resid_post", "blocks.3.hook_resid_pre"]
    )
    with torch.no_grad():
        hidden = minilm.base(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    assert torch.equal(acts["blocks.3.hook_normalized_resid_post"], hidden.hidden_states[4])
    assert torch.equal(acts["blocks.3.hook_resid_pre"], hidden.hidden_states[3])
    assert minilm.n_layers == 6 and minilm.d_model == 384
