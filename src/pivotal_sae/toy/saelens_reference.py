"""SAELens's own trainer on a synthetic world, stoppable on time and resumable.

`SyntheticSAERunner.run()` trains in one go: it cannot stop at a time limit, and SAELens cannot
resume it from a checkpoint, so a budget longer than one device call (200M samples take ~25
minutes at SAELens's rate; a call may run 10) cannot be reached through it. This drives the same
`SAETrainer`, built from the same runner config, through the trainer's public per-step seams
(`maybe_reset_sparsity`, `step`, `save_trainer_state`, `load_trainer_state`, the ones SAELens's
own multi-SAE coordinator uses), the way `SAETrainer.fit` does:
same SAE, optimizer, learning-rate schedule, gradient clipping, dead-latent bookkeeping and
bfloat16 autocast. Two things differ, both only when asked for:

- `per_draw` > 1 draws that many batches from the world at once under the iterator's autocast
  and splits them (rows are independent, so the data's distribution is unchanged; only the order
  of random draws differs from the runner's). With `per_draw` 1 the draws are the runner's own,
  and the trained SAE is bit-identical to `run()`'s on the CPU (tests/toy/test_worlds.py).
- `max_seconds` stops between draws and `checkpoint` saves everything the next call needs (SAE,
  trainer state, random states), so the run resumed there draws exactly what the uninterrupted
  one would have and ends at the same SAE.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from sae_lens.synthetic import SyntheticModel


def pooled_draws(
    world: SyntheticModel, batch_size: int, per_draw: int, autocast: bool
) -> Iterator[tuple[Tensor, bool]]:
    """Training batches of `world`, `per_draw` of them drawn at once, as SAELens's
    `SyntheticActivationIterator` draws one (the same autocast); yields (batch, last_of_draw)."""
    device_type = world.feature_dict.feature_vectors.device.type
    while True:
        with torch.no_grad(), torch.autocast(device_type, torch.bfloat16, enabled=autocast):
            features = world.activation_generator(batch_size * per_draw)
            hidden_BM = world.feature_dict(features)
        batches = hidden_BM.split(batch_size)
        for i, batch_BM in enumerate(batches):
            yield batch_BM, i == len(batches) - 1


def train_saelens_reference(
    runner_cfg: Any,
    world: SyntheticModel,
    seed: int,
    per_draw: int = 1,
    max_seconds: float | None = None,
    checkpoint: Path | None = None,
    stop_after_draws: int | None = None,
) -> dict[str, Any]:
    """Train the SAE of `runner_cfg` (a `SyntheticSAERunnerConfig`) on `world` as the runner
    would; returns the SAE, this call's samples/s and the samples trained so far.

    `stop_after_draws` stops after that many draws of this call (for tests; `max_seconds` is the
    clock's version of it). A run that stops early leaves its state in `checkpoint` (a folder,
    replaced atomically); the same call again resumes from it, and a run that finishes removes
    it."""
    from sae_lens.synthetic.synthetic_sae_runner import SyntheticSAERunner
    from sae_lens.training.sae_trainer import SAETrainer

    if runner_cfg.sae.normalize_activations != "none":
        raise ValueError("SAEs that normalise their inputs are trained only by the runner")
    torch.manual_seed(seed)
    sae = SyntheticSAERunner(runner_cfg, override_synthetic_model=world).sae
    trainer = SAETrainer(cfg=runner_cfg.to_sae_trainer_config(), sae=sae, data_provider=iter(()))
    identity = {
        "sae": repr(runner_cfg.sae),
        "samples": runner_cfg.training_samples,
        "batch_size": runner_cfg.batch_size,
        "lr": runner_cfg.lr,
        "seed": seed,
        "per_draw": per_draw,
    }
    if checkpoint is not None and (checkpoint / "run.pt").exists():
        saved = torch.load(checkpoint / "run.pt", map_location="cpu", weights_only=True)
        if saved["identity"] != identity:
            raise ValueError(f"checkpoint {checkpoint} is of another run; delete it to start over")
        sae.load_state_dict(saved["sae"])
        trainer.load_trainer_state(checkpoint)
        torch.set_rng_state(saved["rng_cpu"])
        if saved["rng_device"] is not None:
            torch.cuda.set_rng_state(saved["rng_device"], sae.device)
    total = runner_cfg.training_samples
    first = trainer.n_training_samples
    draws = pooled_draws(world, runner_cfg.batch_size, per_draw, runner_cfg.autocast_data)
    finished_draws = 0
    start = time.perf_counter()
    while trainer.n_training_samples < total:
        batch_BM, last_of_draw = next(draws)
        trainer.maybe_reset_sparsity()
        trainer.step(batch_BM)
        trainer.n_training_steps += 1
        if last_of_draw:
            finished_draws += 1
            out_of_time = max_seconds is not None and time.perf_counter() - start > max_seconds
            if out_of_time or finished_draws == stop_after_draws:
                break
    if sae.device.type == "cuda":
        torch.cuda.synchronize(sae.device)
    seconds = time.perf_counter() - start
    done = trainer.n_training_samples
    if done < total and checkpoint is not None:
        save_checkpoint(checkpoint, trainer, sae, identity)
    if done >= total:
        finish(trainer)
        if checkpoint is not None:
            shutil.rmtree(checkpoint, ignore_errors=True)
    return {
        "sae": sae,
        "samples_per_s": (done - first) / max(seconds, 1e-9),
        "samples": done,
    }


def save_checkpoint(checkpoint: Path, trainer: Any, sae: Any, identity: dict[str, Any]) -> None:
    """The trainer's own state files plus the SAE and random states, swapped in atomically."""
    partial = checkpoint.with_name(checkpoint.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    trainer.save_trainer_state(partial)
    state = {
        "identity": identity,
        "sae": sae.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_device": torch.cuda.get_rng_state(sae.device) if sae.device.type == "cuda" else None,
    }
    torch.save(state, partial / "run.pt")
    old = checkpoint.with_name(checkpoint.name + ".old")
    if checkpoint.exists():
        checkpoint.rename(old)
    partial.rename(checkpoint)
    shutil.rmtree(old, ignore_errors=True)


def finish(trainer: Any) -> None:
    """What `SAETrainer.fit` does after its loop for an SAE that does not normalise its inputs:
    record the final firing statistics in the SAE's metadata."""
    trainer.set_final_sae_metadata()


def draws_per_batch_pool(world: SyntheticModel, batch_size: int, total: int) -> int:
    """How many batches to draw at once: the pooling our own training uses."""
    from pivotal_sae.toy.synthetic_eval import sample_chunk_batches

    return sample_chunk_batches(world, batch_size, -(-total // batch_size))
