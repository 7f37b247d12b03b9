"""`pivotal-sae ablate`: selective ablation effects of the ablator SAE's latents on the reader SAE.

The loop, top to bottom: a batch of contexts → one pass up to the reader hook → the ablator's
activations and each context's top-K latents (excluded latents left out) → the contexts with a
selected latent among them → their K variants through the blocks between the two hooks, as one
batch → reader activations at the last real token → `effects_eE`, `how_often_activated_e` →
a checkpoint every --save-frequency contexts.

Exclusion needs each latent's firing rate: from co-occurrence counts when there are some (the
`absorb` run's own, or --cooccurrence-path), else estimated on the first --exclusion-prompts
contexts before the loop. The excluded ids are stored with the effects, so a resumed run uses
exactly the same set.

Under torchrun each rank ablates in its share of the contexts; at every checkpoint and at the
end the ranks' effects (different rows on different ranks) and counts are summed into rank 0,
which alone writes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from pivotal_sae import distributed
from pivotal_sae.absorption.ablation import AblationEffects, ablate_batch
from pivotal_sae.absorption.config import AblateConfig, AblationJobConfig
from pivotal_sae.absorption.jobs import setup
from pivotal_sae.absorption.jobs.checkpoints import Checkpoints, SaveSchedule
from pivotal_sae.absorption.results import (
    check_same_sae,
    load_cooccurrence_counter,
    read_file,
    results_file,
    save_effects,
)
from pivotal_sae.errors import UserError
from pivotal_sae.lm.contexts import Contexts

STAGE = "ablate"


def excluded_latents(
    firing_e: torch.Tensor, tokens: int, threshold: float, selected: list[int] | None
) -> list[int]:
    """Latents firing on more than `threshold` of the tokens, selected ones spared."""
    if threshold >= 1 or tokens == 0:
        return []
    frequent = (firing_e.double().cpu() / tokens > threshold).nonzero()[:, 0].tolist()
    spared = set(selected or [])
    return [i for i in frequent if i not in spared]


@torch.no_grad()
def estimate_firing(
    models: setup.Models, contexts: Contexts, batch_size: int
) -> tuple[torch.Tensor, int]:
    """Firing counts and counted tokens of the ablator SAE on `contexts` (no pairs); under
    torchrun each rank counts its share and every rank gets the totals."""
    hook, ranks = models.ablator_hook, distributed.current()
    firing_e = torch.zeros(models.ablator.d_sae, dtype=torch.int64, device=models.ablator.device)
    tokens = 0
    batches = contexts.batches(batch_size, rank=ranks.rank, world_size=ranks.world_size)
    for batch, _ in distributed.lockstep(batches):
        if batch is None:
            continue
        hidden = models.lm.activations(batch.input_ids_BS, batch.attention_mask_BS, [hook])[hook]
        acts_BSE = models.ablator.encode(hidden)
        active_TE = acts_BSE[batch.count_mask_BS.to(acts_BSE.device)] > 0
        firing_e += active_TE.sum(0)
        tokens += active_TE.shape[0]
    (tokens,) = distributed.all_reduce_ints([tokens])
    return distributed.all_reduce_sum(firing_e), tokens


def exclusion_from_file(
    path: Path, models: setup.Models, config: AblationJobConfig
) -> tuple[torch.Tensor, int, str]:
    """Firing counts from a co-occurrence results file of the same ablator SAE."""
    _, metadata = read_file(path)
    ours = {"ablator_sae": setup.sae_identity(models.ablator), "d_sae": models.ablator.d_sae}
    check_same_sae(metadata, ours, path, "the ablator SAE")
    counter = load_cooccurrence_counter(path, "cpu")
    if counter.d_sae != models.ablator.d_sae:
        raise UserError(
            f"{path} counts {counter.d_sae} latents but the ablator SAE has "
            f"{models.ablator.d_sae}; they come from different SAEs"
        )
    return (
        counter.firing_counts_e,
        counter.tokens_counted,
        f"{path} ({counter.tokens_counted:,} tokens)",
    )


def effects_metadata(config: AblationJobConfig, models: setup.Models, metadata: dict[str, Any],
                     excluded: list[int], exclusion_source: str) -> dict[str, Any]:  # fmt: skip
    return {
        **metadata,
        "ablator_sae": setup.sae_identity(models.ablator),
        "reader_sae": setup.sae_identity(models.with_reader()[0]),
        "selected_features": sorted(set(config.selected_features or [])) or None,
        "abridge_ablations_to": config.abridge_ablations_to,
        "exclude_latent_threshold": config.exclude_latent_threshold,
        "excluded_latents": excluded,
        "exclusion_source": exclusion_source,
    }


def ablate_contexts(
    models: setup.Models,
    contexts: Contexts,
    effects: AblationEffects,
    counts: dict[str, int],
    *,
    config: AblationJobConfig,
    excluded: list[int],
    start: int,
    save: Any,
) -> int:
    """Ablate in contexts `start ...`, calling `save(contexts_done)` on schedule. `counts`
    (contexts processed / ablated, variants) is updated in place."""
    device, e = models.lm.device, models.ablator.d_sae
    excluded_e = selected_e = None
    if excluded:
        excluded_e = torch.zeros(e, dtype=torch.bool, device=device)
        excluded_e[torch.tensor(excluded, device=device)] = True
    if config.selected_features:
        selected_e = torch.zeros(e, dtype=torch.bool, device=device)
        selected_e[torch.tensor(config.selected_features, device=device)] = True
    schedule = SaveSchedule(config.save_frequency, start)
    done, ranks = start, distributed.current()
    batches = contexts.batches(config.batch_size, start=start, rank=ranks.rank,
                               world_size=ranks.world_size)  # fmt: skip
    with setup.progress(contexts.n_prompts or 0, "ctx", "ablation") as bar:
        bar.update(start)
        reader, reader_hook = models.with_reader()
        for batch, done in distributed.lockstep(batches):
            if batch is not None:
                plan = ablate_batch(
                    models.lm, models.ablator, reader, models.ablator_hook,
                    reader_hook, batch.input_ids_BS, batch.attention_mask_BS,
                    batch.count_mask_BS, effects, abridge_ablations_to=config.abridge_ablations_to,
                    excluded_e=excluded_e, selected_e=selected_e,
                    variants_per_pass=config.variants_per_pass,
                )  # fmt: skip
                counts["contexts_processed"] += len(batch)
                counts["contexts_ablated"] += plan.contexts_chosen
                counts["variants"] += plan.context_V.numel()
            bar.update(done - bar.n)
            bar.set_postfix(ablated=counts["contexts_ablated"], refresh=False)
            if schedule.due(done):
                schedule.save(done, save)
    return done


def reduce_effects(effects: AblationEffects, counts: dict[str, int]) -> None:
    """Sum all ranks' effects and counts into rank 0; the others restart from zero, so reducing
    again later stays exact."""
    if not distributed.current().distributed:
        return
    effects.all_reduce_()
    totals = distributed.all_reduce_ints(list(counts.values()))
    keep = distributed.is_main()
    counts.update({k: v if keep else 0 for k, v in zip(counts, totals, strict=True)})


def _load_effects(path: Path, effects: AblationEffects) -> tuple[dict[str, Any], dict[str, int]]:
    tensors, metadata = read_file(path)
    effects.load_state_dict(tensors)
    counts = {k: int(metadata.get(k, 0)) for k in ("contexts_processed", "contexts_ablated",
                                                    "variants")}  # fmt: skip
    return metadata, counts


def ablation_stage(
    config: AblationJobConfig,
    models: setup.Models,
    contexts: Contexts,
    run_dir: Path,
    metadata: dict[str, Any],
    *,
    resuming: bool,
    firing: tuple[torch.Tensor, int, str] | None = None,
) -> tuple[AblationEffects, dict[str, Any]]:
    """Run (or resume, or find finished) the ablation stage; the final file goes into
    `run_dir`. `firing` = (firing counts, tokens counted, source) decides the exclusion;
    without it the rates are estimated first. Returns the effects and their file's metadata."""
    assert models.reader is not None and models.reader_hook is not None
    effects = AblationEffects(models.ablator.d_sae, models.reader.d_sae, models.lm.device)
    suffix = ".safetensors.zst" if config.compress else ".safetensors"
    finished = results_file(run_dir, "effects") if resuming else None
    if finished is not None:
        file_meta, counts = _load_effects(finished, effects)
        # Killed between the final file and the summary: finish what that run left undone.
        if distributed.is_main() and STAGE not in setup.read_summary(run_dir):
            excluded = file_meta.get("excluded_latents")
            finish_stage(run_dir, models, effects, counts, seconds=None, contexts_before=0,
                         excluded=excluded if isinstance(excluded, list) else [],
                         source=str(file_meta.get("exclusion_source")))  # fmt: skip
        if distributed.is_main():
            Checkpoints(run_dir).clear(STAGE)
        return effects, file_meta
    checkpoints = Checkpoints(run_dir)
    latest = checkpoints.latest(STAGE) if resuming else None
    counts = {"contexts_processed": 0, "contexts_ablated": 0, "variants": 0}
    if latest is not None:
        if distributed.is_main():  # the checkpoint holds all ranks' sums so far
            saved_meta, counts = _load_effects(latest.files["effects"], effects)
        else:
            saved_meta = read_file(latest.files["effects"])[1]
        excluded, source = saved_meta["excluded_latents"], saved_meta["exclusion_source"]
        start = latest.contexts_done
    else:
        if firing is None and config.exclude_latent_threshold < 1:
            estimate = setup.open_contexts(config, models.lm, config.exclusion_prompts)[1]
            firing_e, tokens = estimate_firing(models, estimate, config.batch_size)
            firing = (firing_e, tokens, f"estimated on {tokens:,} tokens")
        excluded = [] if firing is None else excluded_latents(
            firing[0], firing[1], config.exclude_latent_threshold, config.selected_features
        )  # fmt: skip
        source = "none" if firing is None else firing[2]
        start = 0
    meta = effects_metadata(config, models, metadata, excluded, source)

    def save(path: Path) -> None:
        ids_R, rows_RE = effects.rows()
        save_effects(path, rows_RE, effects.how_often_activated_e, {**meta, **counts},
                     row_ids_R=ids_R)  # fmt: skip

    def checkpoint(done: int) -> None:
        reduce_effects(effects, counts)
        if distributed.is_main():
            checkpoints.save(STAGE, done, {"effects": save})

    started = time.perf_counter()
    contexts_before = counts["contexts_processed"]
    ablate_contexts(
        models, contexts, effects, counts, config=config, excluded=excluded, start=start,
        save=checkpoint,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    reduce_effects(effects, counts)
    if not distributed.is_main():
        return effects, {**meta, **counts}
    save(run_dir / f"effects{suffix}")
    finish_stage(run_dir, models, effects, counts, seconds=seconds,
                 contexts_before=contexts_before, excluded=excluded, source=source)  # fmt: skip
    return effects, {**meta, **counts}


def finish_stage(
    run_dir: Path,
    models: setup.Models,
    effects: AblationEffects,
    counts: dict[str, int],
    *,
    seconds: float | None,
    contexts_before: int,
    excluded: list[int],
    source: str,
) -> None:
    """After the final file: the summary entry, then the checkpoints go (timings None when a
    resume finishes a run killed in between)."""
    assert models.reader is not None
    speed = None
    if seconds is not None:
        speed = round((counts["contexts_processed"] - contexts_before) / max(seconds, 1e-9), 2)
    setup.update_summary(run_dir, STAGE, {
        **counts,
        "latents_ablated": int((effects.how_often_activated_e > 0).sum()),
        "excluded_latents": len(excluded),
        "exclusion_source": source,
        "d_sae": models.ablator.d_sae,
        "reader_d_sae": models.reader.d_sae,
        "wall_seconds": None if seconds is None else round(seconds, 2),
        "contexts_per_second": speed,
        **distributed.summary_entry(),
    })  # fmt: skip
    Checkpoints(run_dir).clear(STAGE)


def check_ablation_inputs(config: AblationJobConfig, models: setup.Models) -> None:
    e = models.ablator.d_sae
    setup.check_latent_ids(config.selected_features, e, "--selected-features")
    if config.abridge_ablations_to > e:
        raise UserError(
            f"--abridge-ablations-to {config.abridge_ablations_to} is more than the ablator "
            f"SAE's {e} latents"
        )


def run_ablate(config: AblateConfig) -> Path:
    config, run_dir, resuming = setup.start_run(config, "ablate")
    with distributed.launch(config.device):  # the run's own --device, when resumed
        return _ablate(config, run_dir, resuming)


def _ablate(config: AblateConfig, run_dir: Path, resuming: bool) -> Path:
    models = setup.load_models(config, with_reader=True)
    check_ablation_inputs(config, models)
    _, contexts = setup.open_contexts(config, models.lm, config.n_prompts)
    firing = None
    if config.cooccurrence_path is not None:
        firing = exclusion_from_file(Path(config.cooccurrence_path), models, config)
    if not resuming:
        setup.create_run_dir(run_dir, "ablate", config)
    else:
        setup.tidy_resumed_run(run_dir)
    metadata = setup.run_metadata(models, contexts)
    effects, _ = ablation_stage(config, models, contexts, run_dir, metadata,
                                resuming=resuming, firing=firing)  # fmt: skip
    ablated = int((effects.how_often_activated_e > 0).sum())
    setup.say(f"effects of {ablated:,} ablated latents in {run_dir}")
    return run_dir
