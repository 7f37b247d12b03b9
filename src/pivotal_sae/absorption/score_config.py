"""Configuration of `absorption-score` and `plant-absorption`: the ground truths of issue 14.

Field docstrings are the `--help` text; every check that needs no model or file is in
`__post_init__` and raises `UserError` before anything is loaded or written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pivotal_sae.errors import UserError
from pivotal_sae.lm.options import ModelOptions


def _check(conditions: list[tuple[bool, str]]) -> None:
    for ok, message in conditions:
        if not ok:
            raise UserError(message)


@dataclass
class ScoreSaeOptions:
    sae_path: list[Path] | None = None
    """SAE directories in SAELens format, each scored (default, with the default model: the
    default SAEs at blocks 3 and 4)."""

    sae_release: str | None = None
    """SAELens pretrained release (with --sae-id), instead of --sae-path."""

    sae_id: str | None = None
    """SAE id within --sae-release."""

    def check_score_sae_options(self) -> None:
        _check(
            [
                (
                    not (self.sae_path and self.sae_release),
                    "give either --sae-path or --sae-release, not both",
                ),
                (
                    (self.sae_release is None) == (self.sae_id is None),
                    "--sae-release and --sae-id go together",
                ),
            ]
        )


@dataclass
class AbsorptionScoreConfig(ModelOptions, ScoreSaeOptions):
    """Chanin et al.'s absorption score (SAEBench 0.6) for token categories.

    Per category: a linear probe at the SAE's hook, the category's main latents by k-sparse
    probing, and on the probe's true positives the full-absorption rate, the absorption fraction
    and the absorbing latents. Writes scores.json, records.json, absorption_score.png and
    report.md into the run directory."""

    categories: list[str] | None = None
    """Built-in categories to score (default: all of them and first-letters): months, weekdays,
    number-words, digits, us-states, countries, colours, body-parts, family, units, animals,
    professions, first-letters."""

    category_file: Path | None = None
    """A file of your own categories, one a line: its name, then its words (spaces or commas);
    scored besides --categories."""

    prompt_template: str = "auto"
    """Prompt around each word, with {word} once; activations are read at the word's token.
    auto: the bare word for encoders ([CLS] word [SEP]); 'Word: {word}' for causal LMs, and for
    first letters SAEBench's '{word} has the first letter:' after in-context examples."""

    icl_examples: int = 10
    """In-context examples before first-letter prompts of causal LMs (SAEBench: 10)."""

    n_background_words: int = 2000
    """Vocabulary words in no category, added as negatives for the semantic categories' probes."""

    max_first_letter_words: int = 6000
    """Vocabulary words sampled for the first-letter task (0: all single-token words)."""

    min_words: int = 6
    """Categories with fewer single-token words are dropped (listed in scores.json)."""

    test_fraction: float = 0.3
    """Share of each category's words (and of the background) held out for testing."""

    min_probe_f1: float = 0.6
    """Categories whose probe has a lower test F1 are dropped and listed (SAEBench: 0.6)."""

    max_k: int = 10
    """Largest k of the k-sparse probes (SAEBench: 10)."""

    f1_jump_threshold: float = 0.03
    """Main latents: grow k while the k-sparse probe's F1 rises by more than this (SAEBench)."""

    full_absorption_cos_threshold: float = 0.025
    """Full absorption: the top latent's decoder cosine with the probe is at least this."""

    fraction_cos_threshold: float = 0.1
    """Absorption fraction: latents count as absorbers from this decoder cosine with the probe."""

    projection_proportion: float = 0.4
    """Absorbers must carry at least this share of the activation's probe projection."""

    max_absorbing_latents: int = 3
    """Absorption fraction: at most this many absorbing latents per word."""

    probe_c: float = 1.0
    """Inverse L2 strength of the logistic-regression probes (scikit-learn's C)."""

    l1_decay: float = 0.01
    """L1 strength of the probe over all latents that ranks them for k-sparse probing."""

    seed: int = 0
    """Seed of the split, the word samples and the L1 probe."""

    batch_size: int = 256
    """Prompts per model forward pass."""

    out: Path | None = None
    """Run directory to create (default: runs/<timestamp>-absorption-score)."""

    def __post_init__(self) -> None:
        self.check_model_options()
        self.check_score_sae_options()
        _check(
            [
                (
                    0 < self.test_fraction < 1,
                    f"--test-fraction must be in (0, 1); got {self.test_fraction}",
                ),
                (
                    0 <= self.min_probe_f1 <= 1,
                    f"--min-probe-f1 must be in [0, 1]; got {self.min_probe_f1}",
                ),
                (1 <= self.max_k <= 100, f"--max-k must be between 1 and 100; got {self.max_k}"),
                (self.f1_jump_threshold >= 0, "--f1-jump-threshold must be at least 0"),
                (
                    -1 <= self.full_absorption_cos_threshold <= 1,
                    "--full-absorption-cos-threshold must be in [-1, 1]",
                ),
                (
                    -1 <= self.fraction_cos_threshold <= 1,
                    "--fraction-cos-threshold must be in [-1, 1]",
                ),
                (0 < self.projection_proportion <= 1, "--projection-proportion must be in (0, 1]"),
                (self.max_absorbing_latents >= 1, "--max-absorbing-latents must be at least 1"),
                (self.min_words >= 2, f"--min-words must be at least 2; got {self.min_words}"),
                (self.n_background_words >= 0, "--n-background-words must be at least 0"),
                (self.max_first_letter_words >= 0, "--max-first-letter-words must be at least 0"),
                (self.icl_examples >= 0, "--icl-examples must be at least 0"),
                (self.probe_c > 0, "--probe-c must be positive"),
                (self.l1_decay >= 0, "--l1-decay must be at least 0"),
                (self.batch_size >= 1, "--batch-size must be at least 1"),
                (
                    self.prompt_template == "auto" or self.prompt_template.count("{word}") == 1,
                    f"--prompt-template needs {{word}} exactly once (got {self.prompt_template!r})",
                ),
            ]
        )
        from pivotal_sae.absorption.categories import BUILTIN_CATEGORIES, FIRST_LETTERS

        known = [*BUILTIN_CATEGORIES, FIRST_LETTERS]
        for name in self.categories or []:
            if name not in known:
                raise UserError(f"unknown category {name!r}; choose from {', '.join(known)}")


@dataclass
class PlantAbsorptionConfig(ModelOptions):
    """Plant absorption with a known answer in a real SAE.

    Picks parent and child latents (seeded) or takes them from --parents/--children, edits the
    encoder so the parent is silent on --rate of the child's tokens and moves the parent's
    direction into the child's decoder, checks that reconstructions of other tokens hold, and
    writes the edited SAE (SAELens format) and answer_key.json."""

    sae_path: Path | None = None
    """The SAE to edit, in SAELens format (default, with the default model: the default SAE at
    blocks.3.hook_normalized_resid_post)."""

    sae_release: str | None = None
    """SAELens pretrained release of the SAE to edit (with --sae-id)."""

    sae_id: str | None = None
    """SAE id within --sae-release."""

    rate: float = 0.6
    """Share of the child's tokens (where the parent fired) on which the parent goes silent:
    0.2-1.0 gives partial to full absorption."""

    direction: Literal["separating", "child-encoder"] = "separating"
    """What the parent's encoder subtracts: the direction that separates the child's tokens from
    all others with the least change elsewhere, or the child's own encoder column."""

    n_pairs: int = 5
    """Parent/child pairs to plant (distinct latents), unless --parents and --children are given."""

    parents: list[int] | None = None
    """Parent latents (with --children, one each)."""

    children: list[int] | None = None
    """Child latents, in the order of --parents."""

    n_words: int = 6000
    """Vocabulary words (bare-word prompts) used to pick pairs and calibrate the rate."""

    seed: int = 0
    """Seed of the pair choice and the word sample."""

    batch_size: int = 256
    """Prompts per model forward pass."""

    out: Path | None = None
    """Directory to create (default: runs/<timestamp>-plant-absorption): sae/ and
    answer_key.json."""

    def __post_init__(self) -> None:
        self.check_model_options()
        _check(
            [
                (
                    not (self.sae_path and self.sae_release),
                    "give either --sae-path or --sae-release, not both",
                ),
                (
                    (self.sae_release is None) == (self.sae_id is None),
                    "--sae-release and --sae-id go together",
                ),
                (
                    0 < self.rate <= 1,
                    f"--rate must be in (0, 1] (share of child tokens absorbed); got {self.rate}",
                ),
                (self.n_pairs >= 1, f"--n-pairs must be at least 1; got {self.n_pairs}"),
                (
                    (self.parents is None) == (self.children is None),
                    "--parents and --children go together",
                ),
                (
                    len(self.parents or []) == len(self.children or []),
                    "give as many --children as --parents",
                ),
                (self.n_words >= 10, "--n-words must be at least 10"),
                (self.batch_size >= 1, "--batch-size must be at least 1"),
            ]
        )
