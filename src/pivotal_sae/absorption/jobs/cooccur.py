"""`pivotal-sae cooccur`: exact co-occurrence counts of the ablator SAE's latents, plus each
latent's top activating contexts, in one pass over the corpus.

The loop, top to bottom: a batch of contexts → the model up to the ablator hook (early exit) →
the SAE's activations → the counter (pairs of active latents of every counted token, on the
model's device) and the top examples → a checkpoint every --save-frequency contexts.

Under torchrun each rank counts its share of the contexts; at every checkpoint and at the end
the ranks' counts are summed into rank 0 and their examples merged (`CooccurrenceState.reduce`),
and rank 0 alone writes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pivotal_sae import distributed
from pivotal_sae.absorption.config import CooccurConfig, CooccurrenceJobConfig
from pivotal_sae.absorption.cooccurrence import (
    DenseCooccurrence,
    SparseCooccurrence,
    make_cooccurrence_counter,
)
from pivotal_sae.absorption.examples import TopExamples
from pivotal_sae.absorption.jobs import setup
from pivotal_sae.absorption.jobs.checkpoints import Checkpoints, SaveSchedule
from pivotal_sae.absorption.results import (
    load_cooccurrence_counter,
    load_top_examples,
    results_file,
    save_cooccurrences,
    save_top_examples,
)
from pivotal_sae.lm.contexts import ContextBatch, Contexts
from pivotal_sae.runs import check_fits

STAGE = "cooccur"


@dataclass
class CooccurrenceState:
    counter: DenseCooccurrence | SparseCooccurrence
    examples: TopExamples
    metadata: dict[str, Any] = field(default_factory=dict)
    """What the results files say about the run (model, corpus, SAE, counts)."""

    def file_metadata(self) -> dict[str, Any]:
        return {
            **self.metadata,
            "tokens_counted": self.counter.tokens_counted,
            "contexts_processed": self.counter.contexts_processed,
        }

    def checkpoint_seconds(self) -> float:
        """A guess at the time to write a checkpoint, at the ~0.7 GB/s measured for the 8.6 GB of
        a 65,536-latent counter on the H100 machine of BENCHMARKS.md."""
        tensors = [*self.counter.state_dict().values(), *self.examples.state_dict().values()]
        return sum(t.numel() * t.element_size() for t in tensors) / 0.7e9

    def reduce(self, *, final: bool = False) -> None:
        """Sum all ranks' counts into rank 0 (the others restart from zero, so reducing again
        stays exact) and merge the examples on every rank. After the `final` reduction every
        rank holds the totals (the ablation stage's exclusion needs the firing counts)."""
        if distributed.current().distributed:
            self.counter.all_reduce_(keep_on_all_ranks=final)
            self.examples.all_reduce_()

    def writers(self, metadata: dict[str, Any]) -> dict[str, Any]:
        return {
            "top_examples": lambda p: save_top_examples(p, self.examples, metadata),
            "cooccurrences": lambda p: save_cooccurrences(p, self.counter, metadata),
        }


@torch.no_grad()
def count_batch(
    models: setup.Models,
    batch: ContextBatch,
    counter: DenseCooccurrence | SparseCooccurrence,
    examples: TopExamples | None = None,
) -> None:
    """Add one batch of contexts to the counts (and the top examples)."""
    lm, hook = models.lm, models.ablator_hook
    hidden_BSM = lm.activations(batch.input_ids_BS, batch.attention_mask_BS, [hook])[hook]
    sparse = models.ablator.encode_sparse(hidden_BSM)
    if sparse is None:
        acts_BSE = models.ablator.encode(hidden_BSM)
        on_device = batch.to(acts_BSE.device)
        mask_BS = on_device.count_mask_BS
        counter.update(acts_BSE[mask_BS], contexts=len(batch),
                       token_ids_T=on_device.input_ids_BS[mask_BS])  # fmt: skip
    else:  # count from the kept latents; nothing (tokens × latents) is built for the counts
        values_BSK, indices_BSK = sparse
        on_device = batch.to(values_BSK.device)
        mask_BS = on_device.count_mask_BS
        counter.update_sparse(values_BSK[mask_BS], indices_BSK[mask_BS], contexts=len(batch),
                              token_ids_T=on_device.input_ids_BS[mask_BS])  # fmt: skip
        if examples is None:
            return
        acts_BSE = values_BSK.new_zeros(*values_BSK.shape[:-1], models.ablator.d_sae)
        acts_BSE.scatter_(-1, indices_BSK, values_BSK)
    if examples is not None:
        examples.update(
            acts_BSE,
            on_device.input_ids_BS,
            on_device.count_mask_BS,
            on_device.context_index_B,
            on_device.attention_mask_BS,
        )


def count_contexts(
    models: setup.Models,
    contexts: Contexts,
    state: CooccurrenceState,
    *,
    start: int,
    batch_size: int,
    save_every: int | None,
    save: Any,
) -> int:
    """Count contexts `start ...`, calling `save(contexts_done)` on schedule; returns the
    number of contexts done. Under torchrun this rank counts its share, in lockstep with the
    others, and `save` reduces."""
    ranks = distributed.current()
    schedule = SaveSchedule(save_every, start, expected_cost=state.checkpoint_seconds())
    done = start
    total_tokens = (contexts.n_prompts or 0) * (contexts.seq_len - 1)
    batches = contexts.batches(batch_size, start=start, rank=ranks.rank,
                               world_size=ranks.world_size)  # fmt: skip
    with setup.progress(total_tokens, "tok", "co-occurrence") as bar:
        bar.update(state.counter.tokens_counted)
        for batch, done in distributed.lockstep(batches):
            if batch is not None:
                before = state.counter.tokens_counted
                count_batch(models, batch, state.counter, state.examples)
                # rank 0's own tokens times the ranks: an estimate, the bar only shows a rate
                bar.update((state.counter.tokens_counted - before) * ranks.world_size)
            if schedule.due(done):
                schedule.save(done, save)
    return done


def cooccurrence_stage(
    config: CooccurrenceJobConfig,
    models: setup.Models,
    contexts: Contexts,
    run_dir: Path,
    metadata: dict[str, Any],
    *,
    resuming: bool,
) -> CooccurrenceState:
    """Run (or resume, or find finished) the counting stage; final files go into `run_dir`."""
    device = models.ablator.device
    suffix = ".safetensors.zst" if config.compress else ".safetensors"
    meta = {**metadata, "sae": setup.sae_identity(models.ablator),
            "hook_name": models.ablator_hook}  # fmt: skip
    finished = results_file(run_dir, "cooccurrences") if resuming else None
    if finished is not None:
        examples_file = results_file(run_dir, "top_examples")
        assert examples_file is not None, "top examples are written before the counts"
        state = CooccurrenceState(
            load_cooccurrence_counter(finished, device),
            load_top_examples(examples_file, device),
            meta,
        )
        # Killed between the final file and the summary: finish what that run left undone.
        if distributed.is_main():
            finish_stage(run_dir, state, seconds=None, tokens_before=None)
        return state
    checkpoints = Checkpoints(run_dir)
    latest = checkpoints.latest(STAGE) if resuming else None
    # The checkpoint holds the sum over all ranks so far: rank 0 alone takes it up.
    if latest is not None and distributed.is_main():
        state = CooccurrenceState(
            load_cooccurrence_counter(latest.files["cooccurrences"], device),
            load_top_examples(latest.files["top_examples"], device),
            meta,
        )
    else:
        d_sae = models.ablator.d_sae
        state = CooccurrenceState(
            make_cooccurrence_counter(d_sae, device, config.layout),
            TopExamples(d_sae, config.n_examples, device=device),
            meta,
        )
    start = 0 if latest is None else latest.contexts_done
    started, tokens_before = time.perf_counter(), state.counter.tokens_counted
    count_contexts(
        models,
        contexts,
        state,
        start=start,
        batch_size=config.batch_size,
        save_every=config.save_frequency,
        save=lambda done: save_checkpoint(checkpoints, state, done, meta),
    )
    seconds = time.perf_counter() - started
    state.reduce(final=True)
    if not distributed.is_main():
        return state
    # Examples first: the counts file marks the stage finished.
    save_top_examples(run_dir / f"top_examples{suffix}", state.examples, meta)
    save_cooccurrences(run_dir / f"cooccurrences{suffix}", state.counter, meta)
    finish_stage(run_dir, state, seconds=seconds, tokens_before=tokens_before)
    return state


def finish_stage(
    run_dir: Path, state: CooccurrenceState, *, seconds: float | None, tokens_before: int | None
) -> None:
    """After the final files: the summary entry, then the checkpoints go. Also run on resume
    when a killed run had written the files but not this (timings then unknown: None)."""
    counter = state.counter
    if seconds is None or tokens_before is None:
        if STAGE in setup.read_summary(run_dir):
            Checkpoints(run_dir).clear(STAGE)
            return
        speed = None
    else:
        speed = round((counter.tokens_counted - tokens_before) / max(seconds, 1e-9))
    setup.update_summary(run_dir, STAGE, {
        "tokens_counted": counter.tokens_counted,
        "contexts_processed": counter.contexts_processed,
        "d_sae": counter.d_sae,
        "layout": counter.layout,
        "latents_that_fired": int((counter.firing_counts_e > 0).sum()),
        "mean_l0": float(counter.firing_counts_e.sum()) / max(counter.tokens_counted, 1),
        "distinct_pairs": counter.distinct_pairs(),
        # the per-token-id firing store: 16 bytes each, on the counter's device
        "token_firing_entries": counter.token_firing.distinct_entries(),
        "wall_seconds": None if seconds is None else round(seconds, 2),
        "tokens_per_second": speed,
        **distributed.summary_entry(),
    })  # fmt: skip
    Checkpoints(run_dir).clear(STAGE)


def check_memory(config: Any, models: setup.Models) -> None:
    """Refuse up front top examples that cannot fit (E × K rows of windows, twice while
    merging a batch in)."""
    probe = TopExamples(1, 1, device="cpu")
    per_example = 20 + 8 * probe.window  # value, context, position; a window of ids and acts
    needed = 2 * models.ablator.d_sae * config.n_examples * per_example
    check_fits(needed, f"--n-examples {config.n_examples} for {models.ablator.d_sae} latents",
               models.ablator.device)  # fmt: skip


def save_checkpoint(
    checkpoints: Checkpoints, state: CooccurrenceState, done: int, meta: dict[str, Any]
) -> None:
    state.reduce()
    if distributed.is_main():
        checkpoints.save(STAGE, done, state.writers(meta))


def run_cooccur(config: CooccurConfig) -> Path:
    config, run_dir, resuming = setup.start_run(config, "cooccur")
    with distributed.launch(config.device):  # the run's own --device, when resumed
        return _cooccur(config, run_dir, resuming)


def _cooccur(config: CooccurConfig, run_dir: Path, resuming: bool) -> Path:
    models = setup.load_models(config, with_reader=False)
    check_memory(config, models)
    _, contexts = setup.open_contexts(config, models.lm, config.n_prompts)
    if not resuming:
        setup.create_run_dir(run_dir, "cooccur", config)
    else:
        setup.tidy_resumed_run(run_dir)
    metadata = setup.run_metadata(models, contexts)
    state = cooccurrence_stage(config, models, contexts, run_dir, metadata, resuming=resuming)
    setup.say(
        f"co-occurrences of {state.counter.d_sae} latents over "
        f"{state.counter.tokens_counted:,} tokens in {run_dir}"
    )
    return run_dir
