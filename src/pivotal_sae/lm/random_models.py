"""Random-weight models shaped like real ones, for benchmarks and tests (no download needed).

Weights are random, so activations have the right shapes and costs but no meaning. The
tokenizer is the embedded MiniLM WordPiece tokenizer (vocabulary 30,522), which every family's
embedding accepts once its vocabulary is set to that size.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from pivotal_sae.lm.model import LanguageModel, parse_dtype

VOCAB = 30522

#: Published shapes (hidden, intermediate, layers, heads, kv heads, head dim).
SHAPES: dict[str, dict[str, int]] = {
    "gemma-2-2b": dict(hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                       num_attention_heads=8, num_key_value_heads=4, head_dim=256),
    "gemma-2-small": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=64),
}  # fmt: skip


def random_gemma2(
    shape: str = "gemma-2-small",
    *,
    n_layers: int | None = None,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
    seed: int = 0,
    **overrides: Any,
) -> LanguageModel:
    """A random Gemma-2 (eager attention, as Gemma needs) built directly on `device`."""
    from transformers import AutoTokenizer, Gemma2Config, Gemma2Model

    from pivotal_sae.lm.defaults import default_model_path

    options = {**SHAPES[shape], **overrides}
    if n_layers is not None:
        options["num_hidden_layers"] = n_layers
    config = Gemma2Config(vocab_size=VOCAB, sliding_window=4096, **options)
    config._attn_implementation = "eager"  # Gemma-2's soft-capped attention needs eager
    torch.manual_seed(seed)
    with torch.device(device):
        model = cast(nn.Module, Gemma2Model(config)).to(parse_dtype(dtype)).eval()
    tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    return LanguageModel(model, tokenizer, f"random-{shape}")
