"""`pivotal-sae absorb`: the whole absorption search in one run directory.

Stages, each resumable: co-occurrence counts and top examples on the first
--cooccurrence-prompts contexts → selective ablation on the first --n-prompts contexts (the
exclusion uses the stage-1 firing counts) → pairs and the report. A finished stage leaves its
results file in the run directory; `--resume` skips it and continues the next from its last
checkpoint. Under torchrun the first two stages run on every rank (each its share of the
contexts) and rank 0 alone searches the pairs and writes the report.
"""

from __future__ import annotations

import time
from pathlib import Path

from pivotal_sae import distributed
from pivotal_sae.absorption.config import AbsorbConfig
from pivotal_sae.absorption.dashboard import sample_of_contexts
from pivotal_sae.absorption.jobs import setup
from pivotal_sae.absorption.jobs.ablate import ablation_stage, check_ablation_inputs
from pivotal_sae.absorption.jobs.cooccur import check_memory, cooccurrence_stage
from pivotal_sae.absorption.jobs.pairs import (
    explanations_given,
    pairs_stage,
    plural,
    rows_to_search,
    tokenizer_text,
)


def run_absorb(config: AbsorbConfig) -> Path:
    config, run_dir, resuming = setup.start_run(config, "absorb")
    with distributed.launch(config.device):  # the run's own --device, when resumed
        return _absorb(config, run_dir, resuming)


def _absorb(config: AbsorbConfig, run_dir: Path, resuming: bool) -> Path:
    started = time.perf_counter()
    models = setup.load_models(config, with_reader=True)
    check_ablation_inputs(config, models)
    check_memory(config, models)
    rows_to_search(config, models.ablator.d_sae)
    explanations = explanations_given(config, models.ablator.info.neuronpedia_id)
    _, counted = setup.open_contexts(config, models.lm, config.cooccurrence_prompts)
    _, ablated = setup.open_contexts(config, models.lm, config.n_prompts)
    if not resuming:
        setup.create_run_dir(run_dir, "absorb", config)
    else:
        setup.tidy_resumed_run(run_dir)
    setup.say(f"model and SAEs loaded and checked; writing {run_dir}")

    metadata = setup.run_metadata(models, ablated)
    state = cooccurrence_stage(
        config, models, counted, run_dir, {**metadata, "corpus": counted.describe()},
        resuming=resuming,
    )  # fmt: skip
    counter = state.counter
    firing = (counter.firing_counts_e, counter.tokens_counted,
              f"this run's co-occurrence counts ({counter.tokens_counted:,} tokens)")  # fmt: skip
    effects, effects_meta = ablation_stage(
        config, models, ablated, run_dir, metadata, resuming=resuming, firing=firing
    )
    if not distributed.is_main():
        return run_dir
    graded_by = None
    if not config.no_absorption_score:
        from pivotal_sae.absorption.jobs.score import category_pairs, score_stage

        setup.say("category score of the ablator SAE")
        scores = score_stage(models.lm, models.ablator, models.ablator_hook, run_dir)
        graded_by = category_pairs(scores), scores
    setup.say("searching pairs and writing the report")
    found = pairs_stage(
        config, run_dir, effects, counter, effects_meta=effects_meta,
        cooc_meta=state.file_metadata(), examples=state.examples,
        W_dec_EM=models.ablator.W_dec.detach(), token_text=tokenizer_text(models.lm.tokenizer),
        device=models.lm.device, explanations=explanations, graded_by=graded_by,
        sample=sample_of_contexts(models.lm, models.ablator, counted),
    )  # fmt: skip
    wall = {"wall_seconds": round(time.perf_counter() - started, 2), "resumed": resuming}
    summary = setup.update_summary(run_dir, "absorb", wall)
    setup.say(
        f"{found.headline()}; {plural(summary['ablate']['latents_ablated'], 'latent')} "
        f"ablated; report in {run_dir / 'report.html'}"
    )
    return run_dir
