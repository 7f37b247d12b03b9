"""Configuration of `pivotal-sae train-sae`: one dataclass, the source of the CLI and its docs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pivotal_sae.errors import UserError
from pivotal_sae.lm.options import CorpusOptions, ModelOptions, SaeOptions


@dataclass
class TrainSaeConfig(CorpusOptions, ModelOptions):
    """Train SAEs on a language model's activations (no flags: the default MiniLM SAEs)."""

    hook: list[str] | None = None
    """Hook(s) to train on, e.g. blocks.3.hook_resid_post; several train one SAE each from one
    pass over the corpus (default: MiniLM's blocks.3 and blocks.4 hook_normalized_resid_post)."""

    arch: Literal["topk", "hierarchical"] = "topk"
    """SAE architecture: TopK, or the toy lab's hierarchical SAE (TopK parents with children)."""

    d_sae: int = 4096
    """Latents per SAE (parent latents for --arch hierarchical)."""

    k: int = 32
    """Active latents per token (TopK)."""

    n_children: int = 2
    """Child latents per parent latent (--arch hierarchical)."""

    n_prompts: int = 4096
    """Training contexts (each --max-tokens-in-prompt tokens)."""

    n_eval_prompts: int = 256
    """Held-out contexts (the first ones of the corpus) for the final FVU, L0 and dead latents."""

    lr: float = 4e-3
    """Adam learning rate (warm-up over the first 5% of steps, linear decay over the last 20%);
    high because default runs are short (a few hundred steps)."""

    batch_size: int = 2048
    """Tokens per SAE training step."""

    context_batch_size: int = 32
    """Contexts per model forward pass."""

    buffer_tokens: int = 65536
    """Tokens held by the shuffling activation buffer."""

    log_every: int = 10
    """Steps between logged metrics (TensorBoard and metrics.jsonl)."""

    seed: int = 0
    """Seed for SAE initialisation and buffer shuffling."""

    save_every: int = 100
    """Training steps between checkpoints (each written whole, so a killed run resumes from the
    last one with --resume)."""

    out: Path | None = None
    """Run directory (default: runs/<timestamp>-train-sae; for the default SAEs, the cache)."""

    resume: Path | None = None
    """Continue the interrupted run in this directory, with the options it was started with."""

    force: bool = field(default=False, metadata={"flag": "--force"})
    """Retrain the default SAEs even if they are already cached."""

    def __post_init__(self) -> None:
        self.check_model_options()
        self.check_corpus_options()
        checks = [
            (self.d_sae >= 1, f"--d-sae must be at least 1 (got {self.d_sae})"),
            (1 <= self.k <= self.d_sae, f"--k must be between 1 and --d-sae (got {self.k})"),
            (self.n_children >= 2, f"--n-children must be at least 2 (got {self.n_children})"),
            (self.n_prompts >= 1, f"--n-prompts must be at least 1 (got {self.n_prompts})"),
            (self.n_eval_prompts >= 1, "--n-eval-prompts must be at least 1"),
            (self.lr > 0, f"--lr must be positive (got {self.lr})"),
            (self.batch_size >= 1, f"--batch-size must be at least 1 (got {self.batch_size})"),
            (self.context_batch_size >= 1, "--context-batch-size must be at least 1"),
            (
                self.buffer_tokens >= 2 * self.batch_size,
                f"--buffer-tokens ({self.buffer_tokens}) must be at least twice --batch-size",
            ),
            (self.log_every >= 1, "--log-every must be at least 1"),
            (self.save_every >= 1, f"--save-every must be at least 1 (got {self.save_every})"),
            (self.out is None or self.resume is None, "give either --out or --resume, not both"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)

    @property
    def is_default(self) -> bool:
        """No model and no hook named: train (or reuse) the default SAEs."""
        return self.model is None and not self.hook


@dataclass
class SaeInfoConfig(CorpusOptions, SaeOptions, ModelOptions):
    """Describe an SAE and check it fits a model (no flags: the default SAEs)."""

    n_prompts: int = 0
    """Also score the SAE (FVU, L0, dead latents) on this many contexts of the corpus."""

    batch_size: int = 32
    """Contexts per model forward pass when scoring."""

    def __post_init__(self) -> None:
        self.check_model_options()
        self.check_corpus_options()
        self.check_sae_options()
        if self.n_prompts < 0:
            raise UserError(f"--n-prompts must be non-negative (got {self.n_prompts})")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1 (got {self.batch_size})")
