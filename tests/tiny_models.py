"""Tiny random-weight models of each supported family (the fixtures that wrap them live in
conftest.py)."""

from __future__ import annotations

import torch

torch.set_num_threads(2)

FAMILIES = ["gemma2", "gpt2", "llama", "gpt_neox", "gpt_neox_sequential", "bert"]


def tiny_model(family: str, n_layers: int = 3, hidden: int = 64):
    """A random-weight model from a config built in code (no download), eager attention."""
    import transformers as T

    common = dict(vocab_size=30522, num_hidden_layers=n_layers, attn_implementation="eager")
    if family == "gemma2":
        config = T.Gemma2Config(
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=hidden // 4,
            sliding_window=4,
            **common,
        )
    elif family == "gpt2":
        config = T.GPT2Config(
            vocab_size=30522,
            n_embd=hidden,
            n_layer=n_layers,
            n_head=4,
            n_positions=256,
            bos_token_id=101,
            eos_token_id=102,
            attn_implementation="eager",
        )
    elif family == "llama":
        config = T.LlamaConfig(
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_attention_heads=4,
            num_key_value_heads=2,
            **common,
        )
    elif family.startswith("gpt_neox"):
        config = T.GPTNeoXConfig(
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_attention_heads=4,
            use_parallel_residual=family == "gpt_neox",
            **common,
        )
    elif family == "bert":
        config = T.BertConfig(
            hidden_size=hidden, intermediate_size=2 * hidden, num_attention_heads=4, **common
        )
    else:
        raise ValueError(family)
    torch.manual_seed(0)
    return T.AutoModel.from_config(config).eval()


def padded_batch(seed: int = 0, batch: int = 3, seq: int = 12, vocab: int = 30000):
    """Random token ids with CLS first and the later rows right-padded."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab, (batch, seq), generator=g)
    ids[:, 0] = 101
    mask = torch.ones(batch, seq, dtype=torch.long)
    for row in range(1, batch):
        mask[row, seq - 2 * row :] = 0
    ids[mask == 0] = 0
    return ids, mask
