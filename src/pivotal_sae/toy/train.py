"""`pivotal-sae toy train`: train one SAE on the toy hierarchy and score it (SPEC §1, Training).

The loop reads top to bottom: build everything from the config (or from a checkpoint), then per
step draw a batch, take an Adam step, keep the running statistics, log cheap metrics every
`log_every` steps, and every `eval_every` steps evaluate on a fixed validation batch of 10,000
rows, step ReduceLROnPlateau on the validation total loss, checkpoint and plot.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from pivotal_sae.configs import config_to_dict
from pivotal_sae.errors import UserError
from pivotal_sae.runs import (
    MANIFEST,
    JsonlLog,
    atomic_write_json,
    default_run_dir,
    prepare_new_run_dir,
    read_manifest,
    remove_partial_writes,
    resolve_device,
    write_manifest,
)
from pivotal_sae.saes.hierarchical import HierarchicalSae
from pivotal_sae.saes.topk import TopKSae
from pivotal_sae.saes.toy_io import build_toy_sae
from pivotal_sae.toy import checkpoint
from pivotal_sae.toy.config import VALIDATION_ROWS, ToyTrainConfig
from pivotal_sae.toy.data import (
    ToyBatch,
    ToyFeatures,
    draw_choices,
    make_features,
    sample_batch,
    sum_features,
)
from pivotal_sae.toy.metrics import activation_metrics, weight_metrics
from pivotal_sae.toy.revival import DeadLatentTracker
from pivotal_sae.toy.step import after_step_, losses, optimize
from pivotal_sae.toy.world_train import train_world_run
from pivotal_sae.toy.worlds import check_world

JOB = "toy-train"
PLATEAU_FACTOR = 0.3


def stream_seed(seed: int, stream: str) -> int:
    """Independent seeds per random stream, so e.g. adding a data option never moves the init."""
    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(seed: int, stream: str) -> torch.Generator:
    return torch.Generator().manual_seed(stream_seed(seed, stream))


def lr_multiplier(step: int, config: ToyTrainConfig) -> float:
    """Linear warm-up over the first steps and linear decay to 0 over the last share of them."""
    assert config.warmup_steps is not None and config.lr_decay_frac is not None
    scale = min(1.0, step / config.warmup_steps) if config.warmup_steps else 1.0
    decay_steps = math.ceil(config.lr_decay_frac * config.max_step)
    if decay_steps:
        scale *= min(1.0, (config.max_step - step + 1) / decay_steps)
    return scale


@dataclass
class ToyLab:
    """Everything a run holds in memory besides the loop counters."""

    config: ToyTrainConfig
    device: torch.device
    features: ToyFeatures
    validation: ToyBatch
    sae: TopKSae
    optimizer: torch.optim.Adam
    plateau: torch.optim.lr_scheduler.ReduceLROnPlateau
    tracker: DeadLatentTracker
    data_rng: torch.Generator
    base_lr: float
    param_names: tuple[str, ...] = field(init=False)
    """The SAE's parameter names in the optimizer's order (as `named_parameters` gives them)."""

    def __post_init__(self) -> None:
        self.param_names = tuple(name for name, _ in self.sae.named_parameters())


def build_lab(config: ToyTrainConfig, device: torch.device) -> ToyLab:
    features = make_features(
        config.dataset_num_features,
        config.n_children,
        config.model_dim,
        config.perturbation_size,
        generator(config.seed, "features"),
    ).to(device)
    validation = sample_batch(
        features,
        VALIDATION_ROWS,
        config.dataset_k,
        config.parent_only_prob,
        generator(config.seed, "validation"),
    )
    sae = build_toy_sae(
        config.arch,
        config.model_dim,
        config.sae_hidden_dim,
        config.sae_k,
        n_children=config.n_children,
        prefixes=tuple(config.matryoshka_prefixes) if config.matryoshka_prefixes else None,
        relu=bool(config.relu),
        init="tied" if config.init_encoder_from_decoder else "linear",
        parent_recon_coeff=float(config.parent_recon_coeff or 0.0),
        balance=bool(config.balance_rate),
        generator=generator(config.seed, "init"),
    ).to(device)
    if config.handcode_sae:
        assert isinstance(sae, HierarchicalSae)
        sae.set_to_ground_truth_(features.parents_AM, features.perturbations_ANM)
    if config.normalize_decoder:
        sae.normalize_decoder_()
    optimizer = torch.optim.Adam(sae.parameters(), lr=config.lr, fused=True)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=PLATEAU_FACTOR, patience=0, min_lr=config.min_lr
    )
    return ToyLab(
        config,
        device,
        features,
        validation,
        sae,
        optimizer,
        plateau,
        DeadLatentTracker(sae, config.dead_share),
        generator(config.seed, "data"),
        config.lr,
    )


def training_state(
    lab: ToyLab, step: int, window: dict[str, list[torch.Tensor]] | None = None
) -> dict[str, Any]:
    return {
        "log_window": {k: torch.stack(v) for k, v in (window or {}).items() if v},
        "step": step,
        "optimizer": lab.optimizer.state_dict(),
        "plateau": lab.plateau.state_dict(),
        "base_lr": lab.base_lr,
        "data_rng": lab.data_rng.get_state(),
        "dead_tracker": lab.tracker.state_dict(),
    }


def restore(lab: ToyLab, directory: Path) -> tuple[int, dict[str, list[torch.Tensor]]]:
    """Load a checkpoint into `lab`: the step it was taken at and the loss window (the steps
    since the last log record, so the next record averages the same steps as without a kill)."""
    from safetensors.torch import load_file

    weights = directory / "sae_weights.safetensors"
    try:
        lab.sae.load_state_dict(load_file(str(weights)))
    except Exception as exc:  # safetensors and torch raise several kinds for a damaged file
        raise UserError(f"{weights} is damaged and cannot be read ({type(exc).__name__})") from None
    lab.sae.to(lab.device)
    state = checkpoint.load_training_state(directory, lab.device)
    try:
        lab.optimizer.load_state_dict(state["optimizer"])
        lab.plateau.load_state_dict(state["plateau"])
        lab.base_lr = float(state["base_lr"])
        lab.data_rng.set_state(state["data_rng"].cpu())
        lab.tracker.load_state_dict(state["dead_tracker"])
        step = int(state["step"])
        window = {k: list(v.unbind()) for k, v in state.get("log_window", {}).items()}
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise UserError(
            f"{directory / checkpoint.STATE} is damaged ({type(exc).__name__}: {exc})"
        ) from None
    return step, window


@torch.no_grad()
def evaluate(lab: ToyLab, step: int) -> dict[str, Any]:
    lab.sae.eval()
    _, parts = losses(lab, lab.validation.x_BM, training=False)
    lab.sae.train()
    record: dict[str, Any] = {"step": step, "kind": "eval"}
    record.update({f"val_{k}": v.item() for k, v in parts.items() if k != "out"})
    record.update(weight_metrics(lab.sae, lab.features))
    record.update(activation_metrics(lab.sae, parts["out"], lab.validation, lab.features))
    record["lr"] = lab.base_lr
    return record


def write_scalars(writer: Any, record: dict[str, Any], step: int) -> None:
    """The record's numbers as TensorBoard scalars `kind/key[/sub]`, all in one event.

    `add_scalar` builds an event per value (~30 µs each, a third of the logging cost at the
    original's every-10-steps cadence); one `Summary` holding every value reads the same in
    TensorBoard.
    """
    from tensorboard.compat.proto.summary_pb2 import Summary

    values = []
    for key, value in record.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and key != "step":
            values.append((f"{record['kind']}/{key}", value))
        elif isinstance(value, dict):
            values.extend((f"{record['kind']}/{key}/{sub}", v) for sub, v in value.items())
    summary = Summary(value=[Summary.Value(tag=t, simple_value=float(v)) for t, v in values])
    writer.file_writer.add_summary(summary, step)


def open_run(config: ToyTrainConfig) -> tuple[ToyTrainConfig, Path, torch.device, Path | None]:
    """Check everything that can be wrong before anything is written; then create the run.
    A resumed run killed before its first checkpoint starts again from step 0."""
    device = resolve_device(config.device)
    if config.resume is not None:
        run_dir = config.resume
        config = saved_config(run_dir).replace(
            device=str(device), resume=run_dir, out=run_dir, hierarchical=False
        )
        latest_dir = None
        if checkpoint.has_checkpoint(run_dir):
            _, latest_dir = checkpoint.latest_checkpoint(run_dir)
        remove_partial_writes(run_dir)
        return config, run_dir, device, latest_dir
    run_dir = config.out or default_run_dir(f"toy-{config.arch}")
    prepare_new_run_dir(run_dir)
    config = config.replace(out=run_dir)
    write_manifest(run_dir, JOB, config_to_dict(config))
    return config, run_dir, device, None


def saved_config(run_dir: Path) -> ToyTrainConfig:
    """The configuration a run was started with, or a UserError naming its damaged manifest."""
    saved = read_manifest(run_dir, job=JOB).get("config")
    if not saved:
        raise UserError(f"{run_dir / MANIFEST} is damaged: it records no config")
    fields = {f.name: f for f in dataclasses.fields(ToyTrainConfig)}
    kwargs = {k: v for k, v in saved.items() if k in fields}
    for name in ("out", "resume"):
        if isinstance(kwargs.get(name), str):
            kwargs[name] = Path(kwargs[name])
    try:
        return ToyTrainConfig(**kwargs)
    except (TypeError, ValueError, AttributeError) as exc:
        raise UserError(
            f"{run_dir / MANIFEST} is damaged: its config does not make a run ({exc})"
        ) from None
    except UserError as exc:
        raise UserError(f"{run_dir / MANIFEST} is damaged: {exc}") from None


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Toy tensors are tens of elements wide, so intra-op threads only add synchronisation; on a
    busy 2-core machine two threads made each step about 20x slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train(config: ToyTrainConfig) -> dict[str, Any]:
    """Run (or resume) a toy training job; returns the summary also written to summary.json."""
    if config.world != "seed":
        # Checked before open_run, so a refused world writes nothing.
        check_world(config.world, str(resolve_device(config.device)), config.sae_hidden_dim)
    config, run_dir, device, resume_from = open_run(config)
    if resume_from is not None and (run_dir / "summary.json").is_file():
        step, _ = checkpoint.latest_checkpoint(run_dir)
        if step >= config.max_step:  # a finished run: resuming it would only rewrite it
            print(f"pivotal-sae toy train: {run_dir} finished all {config.max_step:,} steps "
                  "already; nothing changed", flush=True)  # fmt: skip
            return json.loads((run_dir / "summary.json").read_text())
    with one_thread():
        if config.world != "seed":
            return train_world_run(config, run_dir, device)
        return _train(config, run_dir, device, resume_from)


def _train(
    config: ToyTrainConfig, run_dir: Path, device: torch.device, resume_from: Path | None
) -> dict[str, Any]:
    from torch.utils.tensorboard import SummaryWriter

    from pivotal_sae.toy.plots import RunPlots

    lab = build_lab(config, device)
    start, window = restore(lab, resume_from) if resume_from else (0, {})
    log = JsonlLog(run_dir / "metrics.jsonl")
    log.truncate_after(start if resume_from else -1)  # from step 0: nothing of before stays
    if resume_from is None:
        shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)
    writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start + 1 if start else None)
    plots = RunPlots(run_dir / "plots") if config.plots else None  # imports matplotlib (~0.7 s)
    print(f"pivotal-sae toy train: {'resuming' if start else 'writing'} {run_dir}", flush=True)

    def checkpoint_and_report(step: int) -> dict[str, Any]:
        record = evaluate(lab, step)
        for group in lab.optimizer.param_groups:
            group["lr"] = lab.base_lr
        lab.plateau.step(record["val_total_loss"])
        lab.base_lr = lab.optimizer.param_groups[0]["lr"]
        log.append(record)
        write_scalars(writer, record, step)
        if plots:
            plots.round(step, lab.sae, lab.features)
        checkpoint.save_checkpoint(run_dir, step, lab.sae, training_state(lab, step, window))
        return record

    if plots and resume_from is None:
        plots.feature_similarity(lab.features)  # depends on the data only
    # Timed from here: the initial evaluation and plots are part of the job, setup is not.
    began = time.perf_counter()
    if resume_from is None:
        record = checkpoint_and_report(0)
    sae = lab.sae
    bar = tqdm(total=config.max_step, initial=start, unit="step", disable=None, file=sys.stderr)
    for step in range(start + 1, config.max_step + 1):
        lr = lab.base_lr * lr_multiplier(step, config)
        for group in lab.optimizer.param_groups:
            group["lr"] = lr
        choices = draw_choices(
            config.batch_size,
            config.dataset_num_features,
            config.n_children,
            config.dataset_k,
            config.parent_only_prob,
            lab.data_rng,
        )
        x_BM = sum_features(lab.features, choices)
        parts, out = optimize(lab, x_BM)
        after_step_(lab, x_BM, out, step)
        for key, value in parts.items():
            window.setdefault(key, []).append(value)
        bar.update()

        if step % config.log_every == 0 or step == config.max_step:
            record = {"step": step, "kind": "train", "lr": lr}
            record.update({f"train_{k}": torch.stack(v).mean().item() for k, v in window.items()})
            if isinstance(sae, HierarchicalSae) and "aux_loss" not in window:
                with torch.no_grad():
                    record["train_aux_loss"] = sae.alignment_loss(out).item()
            record.update(weight_metrics(sae, lab.features))
            window.clear()
            log.append(record)
            write_scalars(writer, record, step)
        if step % config.eval_every == 0 or step == config.max_step:
            record = checkpoint_and_report(step)
            bar.set_postfix(val_mse=f"{record['val_reconstruction_mse']:.2e}", refresh=False)
    bar.close()
    elapsed = time.perf_counter() - began
    writer.close()
    log.close()
    final = evaluate(lab, config.max_step)
    summary = summarize(final, config, steps_run=config.max_step - start, seconds=elapsed)
    atomic_write_json(run_dir / "summary.json", summary)
    if plots:
        plots.finish(run_dir, summary)
    return summary


SUMMARY_KEYS = (
    "pair_detection_rate",
    "adjusted_pair_detection_rate",
    "single_detection_rate",
    "adjusted_single_detection_rate",
    "mmcs_min",
    "mmcs_mean",
    "adjusted_mmcs_min",
    "adjusted_mmcs_mean",
    "dead_latents",
    "dead_latents_by_kind",
    "val_reconstruction_mse",
    "val_total_loss",
    "absorption_rate",
)


def summarize(
    final: dict[str, Any], config: ToyTrainConfig, steps_run: int, seconds: float
) -> dict[str, Any]:
    summary = {key: final.get(key) for key in SUMMARY_KEYS}
    summary.update(
        {
            "steps": config.max_step,
            "steps_this_session": steps_run,
            "steps_per_second": steps_run / seconds if steps_run and seconds > 0 else None,
            "wall_seconds": seconds,
            "arch": config.arch,
            "recipe": config.recipe,
            "seed": config.seed,
            "final_lr": final["lr"],
            "run_dir": str(config.out),
        }
    )
    return summary
