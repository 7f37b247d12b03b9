"""`pivotal-sae train-sae`: SAEs on a language model's activations, read once for all hooks.

The loop is visible top to bottom: contexts → activations at every hook in one forward pass
(stopping after the deepest hook) → a shuffling buffer → one training step per hook's SAE →
metrics to TensorBoard and metrics.jsonl. TopK SAEs train through SAELens's `SAETrainer` (see
`topk_trainer`); the hierarchical SAE trains through `hierarchical_trainer`. At the end each
SAE is saved in SAELens format, read back with our own `Sae`, and scored on held-out contexts.

Under torchrun each rank reads its share of the training contexts into its own buffer and takes
--batch-size / ranks tokens per step; gradients are averaged across ranks inside backward
(`distributed.average_gradients`) and the dead-latent counters are combined after each step, so
every rank holds the same SAE. Rank 0 alone logs, saves and evaluates.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from pivotal_sae import distributed
from pivotal_sae.configs import config_to_dict
from pivotal_sae.curves import write_run_plots
from pivotal_sae.errors import UserError
from pivotal_sae.lm.buffer import ActivationBuffer
from pivotal_sae.lm.contexts import Contexts
from pivotal_sae.lm.corpus import open_corpus
from pivotal_sae.lm.model import LanguageModel
from pivotal_sae.progress import progress, say
from pivotal_sae.runs import (
    JsonlLog,
    atomic_save_safetensors,
    atomic_write_json,
    check_fits,
    check_new_run_dir,
    default_run_dir,
    prepare_new_run_dir,
    remove_partial_writes,
    write_manifest,
)
from pivotal_sae.saes.loading import read_sae_dir
from pivotal_sae.training import defaults
from pivotal_sae.training.config import TrainSaeConfig
from pivotal_sae.training.resume import TrainingCheckpoints, finished, resumed_config

_RECIPE_FIELDS = ("d_sae", "k", "n_prompts", "n_eval_prompts", "lr", "batch_size", "arch",
                  "max_tokens_in_prompt", "keep_bos", "buffer_tokens", "seed", "dtype")  # fmt: skip


def run_train_sae(config: TrainSaeConfig) -> Path:
    """The command's job: train (or, for the cached defaults, reuse) SAEs; return the run dir."""
    check_ranks(config, distributed.ranks_from_env(config.device))  # before joining the group
    with distributed.launch(config.device) as ranks:
        return _run_train_sae(config, ranks)


def _run_train_sae(config: TrainSaeConfig, ranks: distributed.Ranks) -> Path:
    if config.resume is not None:
        config = resumed_config(config)
        assert config.out is not None
        summary = train(config, config.out, resuming=True)
        if ranks.is_main:
            print(f"pivotal-sae: SAEs in {config.out} ({_scores(summary)})")
        return config.out
    if config.model is None and not config.hook:
        if config.out is None and _is_default_recipe(config):
            train_default_saes(force=config.force, device=config.device)
            return defaults.default_sae_root()
        config = dataclasses.replace(config, hook=list(defaults.DEFAULT_HOOKS))
    out = config.out or default_run_dir("train-sae")
    summary = train(config, out)
    if ranks.is_main:
        print(f"pivotal-sae: SAEs in {out} ({_scores(summary)})")
    return out


def _is_default_recipe(config: TrainSaeConfig) -> bool:
    reference = TrainSaeConfig()
    return all(getattr(config, f) == getattr(reference, f) for f in _RECIPE_FIELDS) and not (
        config.corpus or config.dataset_id
    )


def train_default_saes(
    force: bool = False, device: str = "auto", **overrides: Any
) -> dict[str, Path]:
    """Train the default SAEs into the cache (atomically: a killed run leaves no half cache).

    `overrides` change the recipe (tests use it to train tiny stand-ins quickly).
    """
    root = defaults.default_sae_root()
    dirs = defaults.default_sae_dirs(root)
    if not force and all((d / "cfg.json").is_file() for d in dirs.values()):
        print(f"pivotal-sae: default SAEs already trained in {root}", file=sys.stderr)
        return dirs
    staging = root.with_name(f".{root.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    config = TrainSaeConfig(
        hook=list(defaults.DEFAULT_HOOKS), out=staging, device=device, **overrides
    )
    try:
        summary = train(config, staging)
        if root.exists():
            shutil.rmtree(root)
        root.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"pivotal-sae: default SAEs cached in {root} ({_scores(summary)})", file=sys.stderr)
    return dirs


def ensure_default_saes() -> dict[str, Path]:
    """The default SAEs' directories, training them first if they are not in the cache yet.

    Jobs call this; readers (the explorer, `sae-info`) call `defaults.find_default_saes`.
    """
    if defaults.default_saes_trained():
        return defaults.default_sae_dirs()
    print(
        f"pivotal-sae: training the default SAEs into {defaults.default_sae_root()} "
        "(first use only; a few minutes on CPU)",
        file=sys.stderr,
    )
    return train_default_saes()


def _scores(summary: dict[str, Any]) -> str:
    """ "FVU 0.21, 0.25; L0 32, 32; dead 0.4 %, 1.1 %": each SAE's held-out scores, in order."""
    saes = summary["saes"].values()
    fvu = ", ".join(f"{s['fvu']:.3g}" for s in saes)
    l0 = ", ".join(f"{s['l0']:.3g}" for s in saes)
    dead = ", ".join(f"{100 * s['dead_fraction']:.1f} %" for s in saes)
    return f"held-out FVU {fvu}; L0 {l0}; dead latents {dead}"


def hook_dir(out: Path, hooks: list[str], hook: str) -> Path:
    """DIR for one hook, DIR/<hook> for several; the SAE itself is in `<that>/sae`."""
    return out if len(hooks) == 1 else out / hook


def train(config: TrainSaeConfig, out: Path, resuming: bool = False) -> dict[str, Any]:
    """Train, save and score the SAEs; returns the summary (under torchrun: on rank 0, and an
    empty dict on the other ranks). `resuming`: continue the run in `out` from its newest
    checkpoint (see `training.resume`)."""
    hooks = list(dict.fromkeys(config.hook or defaults.DEFAULT_HOOKS))
    ranks = distributed.current()
    checkpoints = TrainingCheckpoints(out)
    # Everything a user can get wrong is checked before the run directory is created.
    resume_from = None
    if resuming:
        if finished(out):
            return _tidy_finished_run(out, checkpoints)
        resume_from = checkpoints.latest_step()
    else:
        check_new_run_dir(out)
    corpus = open_corpus(
        config.corpus,
        dataset_id=config.dataset_id,
        split=config.split,
        text_column=config.text_column,
    )
    lm = LanguageModel.load(
        config.model, device=distributed.device_for(config.device), dtype=config.dtype
    )
    for hook in hooks:
        lm.resolve(hook)
    lm.check_context_length(config.max_tokens_in_prompt)
    check_memory(config, lm, len(hooks))
    n_eval = config.n_eval_prompts
    eval_contexts = Contexts(
        corpus, lm.tokenizer, config.max_tokens_in_prompt, n_eval, keep_bos=config.keep_bos
    )
    train_contexts = Contexts(
        corpus,
        lm.tokenizer,
        config.max_tokens_in_prompt,
        n_eval + config.n_prompts,
        keep_bos=config.keep_bos,
    )
    check_training_tokens(train_contexts, config)
    eval_acts = collect_activations(lm, eval_contexts, hooks, config.context_batch_size)
    if len(eval_acts[hooks[0]]) == 0:
        raise UserError("the corpus gives no tokens to evaluate on; give it more text")
    trainers = _make_trainers(config, lm, hooks, eval_acts, corpus.name)
    done_steps = 0
    if resuming and resume_from is not None:
        done_steps, _, folder = resume_from
        checkpoints.restore(folder, trainers)
    if ranks.is_main and not resuming:
        prepare_new_run_dir(out)
        write_manifest(out, "train-sae", config_to_dict(config))
    elif ranks.is_main:
        remove_partial_writes(out)
        JsonlLog(out / "metrics.jsonl").truncate_after(done_steps)

    from torch.utils.tensorboard import SummaryWriter

    log = JsonlLog(out / "metrics.jsonl") if ranks.is_main else None
    # purge_step: TensorBoard drops what an interrupted run logged after the checkpoint.
    writer = (SummaryWriter(str(out / "tensorboard"), purge_step=done_steps + 1 if resuming
                            else None) if ranks.is_main else None)  # fmt: skip
    # Each rank: its own share of the contexts, buffer and shuffle; world × batch = --batch-size.
    world = ranks.world_size
    buffer = ActivationBuffer(config.buffer_tokens // world, config.batch_size // world,
                              seed=config.seed + ranks.rank)  # fmt: skip
    tokens, started = 0, time.perf_counter()
    say(f"training {_saes(hooks)} on {config.n_prompts:,} contexts"
        + (f", resuming after step {done_steps:,}" if resuming else ""))  # fmt: skip
    # The bar counts tokens read through the model (the buffer fills before the first step, so
    # a bar of trained tokens would start with an hours-long estimate); one bar for all SAEs.
    label = f"train-sae ({len(hooks)} SAEs)" if len(hooks) > 1 else "train-sae"
    with progress(config.n_prompts * (config.max_tokens_in_prompt - 1), "tok", label) as bar:
        chunks = _chunks(lm, train_contexts, hooks, config.context_batch_size, start=n_eval)
        chunks = _counted(chunks, bar, hooks[0])
        for step, batch in enumerate(_while_all_ranks_have(buffer.batches(chunks)), 1):
            tokens += config.batch_size
            if step <= done_steps:
                continue  # trained before the checkpoint: read again only to refill the buffer
            for hook, trainer in trainers.items():
                output = trainer.train_step(batch[hook])
                if log is not None and writer is not None and step % config.log_every == 0:
                    metrics = trainer.metrics(output)
                    log.append({"step": step, "tokens": tokens, "hook": hook, **metrics})
                    for name, value in metrics.items():
                        writer.add_scalar(f"{hook}/{name}", value, step)
            if ranks.is_main and step % config.save_every == 0:
                checkpoints.save(step, tokens, trainers)
    if writer is not None:
        writer.close()
    if log is not None:
        log.close()
    if tokens == 0:
        raise UserError(
            f"the corpus gave fewer than --batch-size ({config.batch_size}) training tokens "
            "after the held-out contexts; give it more text or lower --n-eval-prompts"
        )
    seconds = time.perf_counter() - started
    if not ranks.is_main:
        return {}
    summary: dict[str, Any] = {
        "tokens": tokens,
        # of this session: a resumed run reads the steps before its checkpoint but does not train
        "tokens_per_second": (tokens - done_steps * config.batch_size) / seconds,
        "wall_seconds": seconds,
        "eval_tokens": len(eval_acts[hooks[0]]),
        **distributed.summary_entry(),
        "saes": {},
    }
    for hook, trainer in trainers.items():
        directory = hook_dir(out, hooks, hook)
        staging = directory / ".sae.tmp"
        trainer.save(staging)
        shutil.rmtree(directory / "sae", ignore_errors=True)  # saved before a kill, redone
        os.replace(staging, directory / "sae")
        scores = evaluate(read_sae_dir(directory / "sae", device=lm.device), eval_acts[hook])
        record_training_scores(directory / "sae", {**scores, "eval_tokens": len(eval_acts[hook])})
        entry = {
            "hook": hook,
            **scores,
            "tokens": tokens,
            "tokens_per_second": summary["tokens_per_second"],
            "sae_dir": str((directory / "sae").relative_to(out)),  # the run dir may be renamed
        }
        summary["saes"][hook] = entry
        if len(hooks) > 1:
            atomic_write_json(directory / "summary.json", entry)
    if len(hooks) == 1:
        summary = {**summary["saes"][hooks[0]], **summary}
    # Plots before the summary: the summary marks the run finished (a resume only tidies).
    write_run_plots(out, f"train-sae {out.name}", {"tokens": f"{tokens:,}", "SAEs": len(hooks)})
    atomic_write_json(out / "summary.json", summary)
    checkpoints.clear()
    return summary


def _tidy_finished_run(out: Path, checkpoints: TrainingCheckpoints) -> dict[str, Any]:
    """`--resume` of a run killed after its summary was written: only tidying is left."""
    try:
        summary = json.loads((out / "summary.json").read_text())
        _scores(summary)
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        raise UserError(f"{out / 'summary.json'} is damaged (not a train-sae summary)") from None
    if distributed.current().is_main:
        remove_partial_writes(out)
        checkpoints.clear()
    say(f"{out} had finished training; tidied up")
    return dict(summary)


def check_memory(config: TrainSaeConfig, lm: LanguageModel, n_hooks: int) -> None:
    """Refuse up front SAEs or buffers that cannot fit: per hook the encoder and decoder with
    their gradients and Adam moments, the shuffling buffer and a step's latents."""
    latents = config.d_sae * (config.n_children + 1 if config.arch == "hierarchical" else 1)
    per_hook = 4 * (8 * latents * lm.d_model + (config.buffer_tokens + 2 * config.batch_size)
                    * lm.d_model + 3 * config.batch_size * latents)  # fmt: skip
    check_fits(n_hooks * per_hook, f"training {n_hooks} SAE(s) of --d-sae {config.d_sae} with "
               f"--batch-size {config.batch_size} and --buffer-tokens {config.buffer_tokens}",
               lm.device)  # fmt: skip


def check_training_tokens(contexts: Contexts, config: TrainSaeConfig) -> None:
    """Before the run directory exists: the corpus must give at least one step's tokens after
    the held-out contexts (read by tokenizing only, stopping as soon as there are enough)."""
    skip = 1 if contexts.bos_id is not None and not config.keep_bos else 0
    tokens = 0
    for index, ids in enumerate(contexts.token_lists()):
        if index >= config.n_eval_prompts:
            tokens += max(len(ids) - skip, 0)
            if tokens >= config.batch_size:
                return
    raise UserError(
        f"the corpus gave fewer than --batch-size ({config.batch_size}) training tokens "
        "after the held-out contexts; give it more text or lower --n-eval-prompts"
    )


def check_ranks(config: TrainSaeConfig, ranks: distributed.Ranks) -> None:
    if not ranks.distributed:
        return
    if config.batch_size % ranks.world_size or config.buffer_tokens % ranks.world_size:
        raise UserError(
            f"--batch-size {config.batch_size} and --buffer-tokens {config.buffer_tokens} must "
            f"be multiples of the {ranks.world_size} ranks (each rank takes its share)"
        )
    if config.model is None and not config.hook and config.out is None:
        raise UserError(
            "the default SAEs are trained by one process: run `pivotal-sae train-sae` without "
            "torchrun, or give --out (or --hook) to train new ones"
        )
    if config.arch != "topk":
        raise UserError(
            f"--arch {config.arch} trains in one process only (its child-ratio statistics are "
            "not shared across ranks); run it without torchrun"
        )


def _while_all_ranks_have(batches: Iterator[Any]) -> Iterator[Any]:
    """This rank's batches while every rank still has one: steps stay in lockstep, since each
    step's gradients are averaged over all ranks."""
    if not distributed.current().distributed:
        yield from batches
        return
    while True:
        batch = next(batches, None)
        (all_have,) = distributed.all_reduce_ints([batch is not None], "min")
        if not all_have:
            return
        yield batch


def collect_activations(
    lm: LanguageModel, contexts: Contexts, hooks: list[str], batch_size: int
) -> dict[str, torch.Tensor]:
    """Activations of all `contexts` (on every rank the same: the held-out tokens set the input
    scale and the decoder bias's start, which must agree across ranks)."""
    parts = []
    for batch in contexts.batches(batch_size):
        acts = lm.activations(batch.input_ids_BS, batch.attention_mask_BS, hooks)
        counted = batch.count_mask_BS.to(lm.device)
        parts.append({hook: acts[hook][counted].float() for hook in hooks})
    return {
        hook: torch.cat([p[hook] for p in parts]) if parts else torch.empty(0, lm.d_model)
        for hook in hooks
    }


def _chunks(
    lm: LanguageModel, contexts: Contexts, hooks: list[str], batch_size: int, start: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Float32 activations of the counted tokens (no padding, no BOS) at every hook; under
    torchrun, of this rank's share of the contexts from `start`."""
    ranks = distributed.current()
    for batch in contexts.batches(batch_size, start=start, rank=ranks.rank,
                                  world_size=ranks.world_size):  # fmt: skip
        acts = lm.activations(batch.input_ids_BS, batch.attention_mask_BS, hooks)
        counted = batch.count_mask_BS.to(lm.device)
        yield {hook: acts[hook][counted].float() for hook in hooks}


def _make_trainers(
    config: TrainSaeConfig,
    lm: LanguageModel,
    hooks: list[str],
    eval_acts: dict[str, torch.Tensor],
    dataset: str,
) -> dict[str, Any]:
    total_tokens = config.n_prompts * (config.max_tokens_in_prompt - 1)
    trainers: dict[str, Any] = {}
    for i, hook in enumerate(hooks):
        acts = eval_acts[hook]
        # SAELens's "expected_average_only_in": scale inputs to mean norm sqrt(d_in).
        scale = math.sqrt(lm.d_model) / float(acts.norm(dim=-1).mean())
        common = dict(
            d_in=lm.d_model, d_sae=config.d_sae, k=config.k, hook_name=hook,
            model_name=lm.name, context_size=config.max_tokens_in_prompt, dataset=dataset,
            lr=config.lr, batch_size=config.batch_size, total_tokens=total_tokens,
            scaling_factor=scale, b_dec_init=acts.mean(0) * scale, device=lm.device,
            seed=config.seed + i,
        )  # fmt: skip
        if config.arch == "hierarchical":
            from pivotal_sae.training.hierarchical_trainer import HierarchicalTrainer

            trainers[hook] = HierarchicalTrainer(n_children=config.n_children, **common)
        else:
            trainers[hook] = _TopK(common)
    return trainers


class _TopK:
    """The TopK arm of the loop: a SAELens trainer behind the three calls the loop makes."""

    def __init__(self, options: dict[str, Any]) -> None:
        from pivotal_sae.training.topk_trainer import make_topk_trainer

        self.trainer = make_topk_trainer(**options)
        distributed.average_gradients(self.trainer.sae)

    def train_step(self, batch_NM: torch.Tensor) -> Any:
        self.trainer.maybe_reset_sparsity()
        output = self.trainer.step(batch_NM)
        self.trainer.n_training_steps += 1
        if distributed.current().distributed:
            from pivotal_sae.training.topk_trainer import share_dead_latents

            share_dead_latents(self.trainer)
        return output

    def metrics(self, output: Any) -> dict[str, float]:
        from pivotal_sae.training.topk_trainer import step_metrics

        return step_metrics(self.trainer, output)

    def save_state(self, directory: Path) -> None:
        """Everything the next steps depend on: weights, Adam, schedule, firing counters."""
        directory.mkdir(parents=True, exist_ok=True)
        atomic_save_safetensors(directory / "sae_weights.safetensors",
                                self.trainer.sae.state_dict())  # fmt: skip
        self.trainer.save_trainer_state(directory)

    def load_state(self, directory: Path) -> None:
        from safetensors.torch import load_file

        self.trainer.sae.load_state_dict(load_file(str(directory / "sae_weights.safetensors")))
        self.trainer.load_trainer_state(directory)

    def save(self, directory: Path) -> None:
        from pivotal_sae.training.topk_trainer import finish_and_save

        shutil.rmtree(directory, ignore_errors=True)
        finish_and_save(self.trainer, str(directory))


def record_training_scores(sae_dir: Path, scores: dict[str, float]) -> None:
    """Keep the held-out scores in the SAE's own cfg.json (metadata `training_scores`, which
    SAELens loads and ignores), so that whoever reads the SAE later can show them."""
    cfg = json.loads((sae_dir / "cfg.json").read_text())
    cfg.setdefault("metadata", {})["training_scores"] = scores
    atomic_write_json(sae_dir / "cfg.json", cfg)


@torch.no_grad()
def evaluate(sae: Any, acts_NM: torch.Tensor, chunk: int = 8192) -> dict[str, float]:
    """FVU, mean L0 and the share of latents that never fire, on held-out activations."""
    error = torch.zeros((), dtype=torch.float64)
    fired_E = torch.zeros(sae.d_sae, dtype=torch.bool, device=sae.device)
    l0_sum = 0.0
    for start in range(0, len(acts_NM), chunk):
        x = acts_NM[start : start + chunk].to(sae.device, sae.dtype)
        latents = sae.encode(x)
        error += (sae.decode(latents) - x).double().pow(2).sum().cpu()
        active = latents > 0
        fired_E |= active.any(0)
        l0_sum += float(active.sum())
    x64 = acts_NM.double()
    variance = (x64 - x64.mean(0)).pow(2).sum()
    return {
        "fvu": float(error / variance),
        "l0": l0_sum / len(acts_NM),
        "dead_fraction": float((~fired_E).float().mean()),
    }


def _saes(hooks: list[str]) -> str:
    return (
        f"an SAE at {hooks[0]}" if len(hooks) == 1 else f"{len(hooks)} SAEs at {', '.join(hooks)}"
    )


def _counted(
    chunks: Iterator[dict[str, torch.Tensor]], bar: Any, hook: str
) -> Iterator[dict[str, torch.Tensor]]:
    """The chunks, counting their tokens on `bar` (this rank's times the ranks: an estimate)."""
    world = distributed.current().world_size
    for chunk in chunks:
        bar.update(len(chunk[hook]) * world)
        yield chunk
