"""Selective ablation: the batched, replay-only path equals the original's way of doing it.

The reference below is the original research code's algorithm written plainly: per context at
batch size 1, one full forward for the ablator's activations, one for the reader's baseline,
and one full forward per ablated latent (the delta −a_i·W_dec[i] added at the ablator hook),
reading the reader SAE at the last token. The fast path must agree within 1e-4 relative.
"""

from __future__ import annotations

import functools

import pytest
import torch

from pivotal_sae.absorption.ablation import (
    AblationEffects,
    ablate_batch,
    decoder_directions,
    plan_ablations,
)
from pivotal_sae.lm.patching import run_patched_naive
from pivotal_sae.saes.sae import Sae


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: thread hand-offs cost more than the work (and the CI machine is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@functools.cache
def tiny_lm(family: str, hidden: int = 64, n_layers: int = 3):
    """A tiny random-weight model of `family` with the MiniLM tokenizer (no download)."""
    import transformers as T

    from pivotal_sae.lm.defaults import default_model_path
    from pivotal_sae.lm.model import LanguageModel

    common = dict(vocab_size=30522, num_hidden_layers=n_layers, attn_implementation="eager")
    if family == "gemma2":
        config = T.Gemma2Config(hidden_size=hidden, intermediate_size=2 * hidden,
                                num_attention_heads=4, num_key_value_heads=2,
                                head_dim=hidden // 4, sliding_window=6, **common)  # fmt: skip
    elif family == "gpt2":
        config = T.GPT2Config(vocab_size=30522, n_embd=hidden, n_layer=n_layers, n_head=4,
                              n_positions=128, bos_token_id=101, eos_token_id=102,
                              attn_implementation="eager")  # fmt: skip
    else:
        config = T.LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden,
                               num_attention_heads=4, num_key_value_heads=2, **common)  # fmt: skip
    torch.manual_seed(0)
    model = T.AutoModel.from_config(config).eval()
    tokenizer = T.AutoTokenizer.from_pretrained(default_model_path())
    return LanguageModel(model, tokenizer, f"tiny-{family}")


@pytest.fixture(scope="module")
def minilm():
    """The real MiniLM, loaded once for this module (the only one that needs it)."""
    from pivotal_sae.lm.model import LanguageModel

    return LanguageModel.load(None, device="cpu")


def contexts(seed: int = 0, batch: int = 3, seq: int = 14):
    """BOS-first token ids, later rows right-padded; BOS and padding not counted."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 29000, (batch, seq), generator=g)
    ids[:, 0] = 101
    mask = torch.ones(batch, seq, dtype=torch.long)
    for row in range(1, batch):
        mask[row, seq - 3 * row :] = 0
    ids[mask == 0] = 0
    count = mask.bool().clone()
    count[:, 0] = False
    return ids, mask, count


def saes(d_model: int, ablator_hook: str, reader_hook: str, seed: int = 0):
    ablator = Sae.random(d_model, 96, architecture="topk", k=12, hook_name=ablator_hook, seed=seed)
    reader = Sae.random(d_model, 80, architecture="topk", k=10, hook_name=reader_hook,
                        seed=seed + 1)  # fmt: skip
    return ablator, reader


@torch.no_grad()
def ablation_reference(
    lm, ablator, reader, ids_BS, mask_BS, count_BS, k, excluded=(), selected=None
):
    """One full forward per ablated latent at batch size 1, as the original did."""
    a_hook, r_hook = ablator.hook_name, reader.hook_name
    effects = torch.zeros(ablator.d_sae, reader.d_sae, dtype=torch.float64)
    how_often = torch.zeros(ablator.d_sae, dtype=torch.int64)
    for b in range(ids_BS.shape[0]):
        real = mask_BS[b].bool()
        ids_1S = ids_BS[b][real][None]
        ones_1S = torch.ones_like(ids_1S)
        acts_Se = ablator.encode(lm.activations(ids_1S, ones_1S, [a_hook])[a_hook][0])
        sums = acts_Se[count_BS[b][real]].double().sum(0).tolist()
        candidates = [i for i in range(ablator.d_sae) if i not in excluded and sums[i] > 0]
        top = sorted(candidates, key=lambda i: -sums[i])[:k]
        if selected is not None and not set(top) & set(selected):
            continue
        base_E = reader.encode(lm.activations(ids_1S, ones_1S, [r_hook])[r_hook][0, -1])
        for i in top:
            delta_1SM = -(acts_Se[:, i, None] * ablator.W_dec[i])[None]
            ablated = run_patched_naive(lm, ids_1S, ones_1S, a_hook, r_hook,
                                        torch.tensor([0]), delta_1SM)  # fmt: skip
            effects[i] += (base_E - reader.encode(ablated[0, -1])).double()
            how_often[i] += 1
    return effects, how_often


def fast(lm, ablator, reader, ids, mask, count, k, excluded=(), selected=None, per_pass=7):
    effects = AblationEffects(ablator.d_sae, reader.d_sae, initial_rows=4)
    excluded_e = torch.zeros(ablator.d_sae, dtype=torch.bool)
    excluded_e[list(excluded)] = True
    selected_e = None
    if selected is not None:
        selected_e = torch.zeros(ablator.d_sae, dtype=torch.bool)
        selected_e[list(selected)] = True
    ablate_batch(lm, ablator, reader, ablator.hook_name, reader.hook_name, ids, mask, count,
                 effects, abridge_ablations_to=k, excluded_e=excluded_e, selected_e=selected_e,
                 variants_per_pass=per_pass)  # fmt: skip
    return effects


def assert_agree(effects: AblationEffects, reference, how_often):
    assert torch.equal(effects.how_often_activated_e, how_often)
    assert how_often.sum() > 0
    dense = effects.dense().double()
    error = float((dense - reference).abs().max() / reference.abs().max())
    assert error < 1e-4, f"relative error {error:.2e}"


HOOKS = [
    ("blocks.0.hook_resid_post", "blocks.2.hook_resid_post"),
    ("blocks.1.hook_mlp_out", "blocks.2.hook_attn_out"),
]


@pytest.mark.parametrize("family", ["gemma2", "gpt2", "llama"])
@pytest.mark.parametrize(("ablator_hook", "reader_hook"), HOOKS)
def test_fast_ablation_equals_reference(family, ablator_hook, reader_hook):
    lm = tiny_lm(family)
    ablator, reader = saes(lm.d_model, ablator_hook, reader_hook)
    ids, mask, count = contexts()
    effects = fast(lm, ablator, reader, ids, mask, count, k=5, excluded=(3, 7))
    assert_agree(effects, *ablation_reference(lm, ablator, reader, ids, mask, count, 5, (3, 7)))


def test_selected_features_skip_contexts_without_them():
    lm = tiny_lm("llama")
    ablator, reader = saes(lm.d_model, *HOOKS[0])
    ids, mask, count = contexts(seed=3, batch=4)
    reference_all, _ = ablation_reference(lm, ablator, reader, ids, mask, count, 4)
    # A latent ablated in some contexts but not all: selecting it keeps exactly those.
    one = [(ids[b : b + 1], mask[b : b + 1], count[b : b + 1]) for b in range(4)]
    per_context = [ablation_reference(lm, ablator, reader, *c, 4)[1] > 0 for c in one]
    chosen = next(i for i in range(ablator.d_sae)
                  if 0 < sum(bool(p[i]) for p in per_context) < 4)  # fmt: skip
    effects = fast(lm, ablator, reader, ids, mask, count, k=4, selected=[chosen])
    reference, how_often = ablation_reference(lm, ablator, reader, ids, mask, count, 4,
                                              selected=[chosen])  # fmt: skip
    assert_agree(effects, reference, how_often)
    assert how_often.sum() < sum(int(p.sum()) for p in per_context)
    assert not torch.equal(reference, reference_all)


def test_minilm_fast_ablation_equals_reference(minilm):
    hooks = ("blocks.3.hook_normalized_resid_post", "blocks.4.hook_normalized_resid_post")
    ablator, reader = saes(minilm.d_model, *hooks, seed=5)
    ids, mask, count = contexts(seed=1, batch=2, seq=20)
    effects = fast(minilm, ablator, reader, ids, mask, count, k=6, per_pass=5)
    assert_agree(effects, *ablation_reference(minilm, ablator, reader, ids, mask, count, 6))


def test_plan_keeps_positive_unexcluded_top_k_and_selected_contexts():
    summed_Be = torch.tensor([[5.0, 0.0, 3.0, 9.0, 1.0], [0.0, 2.0, 0.0, 0.0, 0.0]])
    excluded_e = torch.tensor([False, False, False, True, False])
    plan = plan_ablations(summed_Be, 3, excluded_e)
    assert plan.context_V.tolist() == [0, 0, 0, 1]
    assert plan.latent_V.tolist() == [0, 2, 4, 1]  # 3 excluded; the zero sums never
    selected_e = torch.tensor([False, True, False, False, False])
    plan = plan_ablations(summed_Be, 3, excluded_e, selected_e)
    assert plan.context_V.tolist() == [1] and plan.latent_V.tolist() == [1]
    assert plan.contexts_chosen == 1


def test_decoder_direction_is_what_zeroing_a_latent_removes():
    sae = Sae.random(16, 24, architecture="topk", k=4, seed=2)
    sae.W_dec.mul_(torch.linspace(0.5, 2.0, 24)[:, None])
    sae.info.rescale_acts_by_decoder_norm = True
    x = torch.randn(3, 16)
    acts = sae.encode(x)
    i = int(acts[0].nonzero()[0])
    zeroed = acts.clone()
    zeroed[:, i] = 0
    expected = sae.decode(zeroed) - sae.decode(acts)
    delta = -acts[:, i, None] * decoder_directions(sae, torch.tensor([i]))
    torch.testing.assert_close(delta, expected)


def test_effects_store_rows_only_for_ablated_latents():
    g = torch.Generator().manual_seed(0)
    effects = AblationEffects(1000, 6, initial_rows=2)
    dense = torch.zeros(1000, 6)
    for latents in ([5, 900, 3], [3, 77], [900, 5, 4, 12, 600]):
        ids = torch.tensor(latents)
        values = torch.randn(len(latents), 6, generator=g)
        effects.reserve(ids)
        effects.add(ids, values)
        dense[ids] += values
    assert effects.n_rows == 7 and effects.rows_RE.shape[0] < 1000
    torch.testing.assert_close(effects.dense(), dense)
    torch.testing.assert_close(effects[torch.tensor([900, 1, 3])], dense[[900, 1, 3]])
    assert effects.how_often_activated_e[[3, 5, 900, 1]].tolist() == [2, 2, 2, 0]
    copy = AblationEffects(1000, 6)
    copy.load_state_dict(effects.state_dict())
    torch.testing.assert_close(copy.dense(), dense)
    copy.merge_(effects)
    torch.testing.assert_close(copy.dense(), 2 * dense)
    assert torch.equal(copy.how_often_activated_e, 2 * effects.how_often_activated_e)
