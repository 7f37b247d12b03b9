"""`pivotal-sae absorption-score`: load, check everything, then score each SAE on each task."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from pivotal_sae.absorption.categories import is_causal, read_category_file
from pivotal_sae.absorption.category_score import (
    ScoreSettings,
    absorption_records,
    mean_scores,
    score_categories,
)
from pivotal_sae.absorption.category_tasks import (
    Task,
    first_letter_task,
    member_activations,
    semantic_task,
)
from pivotal_sae.absorption.score_config import AbsorptionScoreConfig
from pivotal_sae.absorption.score_report import write_score_outputs
from pivotal_sae.configs import config_to_dict
from pivotal_sae.errors import UserError
from pivotal_sae.lm.model import LanguageModel
from pivotal_sae.runs import default_run_dir, prepare_new_run_dir, write_manifest
from pivotal_sae.saes.loading import load_sae
from pivotal_sae.saes.sae import Sae

JOB = "absorption-score"


def settings_of(config: AbsorptionScoreConfig) -> ScoreSettings:
    return ScoreSettings(
        min_probe_f1=config.min_probe_f1,
        max_k=config.max_k,
        f1_jump_threshold=config.f1_jump_threshold,
        full_absorption_cos_threshold=config.full_absorption_cos_threshold,
        fraction_cos_threshold=config.fraction_cos_threshold,
        projection_proportion=config.projection_proportion,
        max_absorbing_latents=config.max_absorbing_latents,
        probe_c=config.probe_c,
        l1_decay=config.l1_decay,
        seed=config.seed,
    )


def sae_sources(config: Any) -> list[dict[str, Any]]:
    """load_sae keyword sets for each SAE to score; the default SAEs when none is named."""
    if config.sae_release is not None:
        return [{"release": config.sae_release, "sae_id": config.sae_id}]
    paths = config.sae_path if isinstance(config.sae_path, list) else [config.sae_path]
    paths = [p for p in paths if p is not None]
    if paths:
        return [{"path": p} for p in paths]
    if config.model is not None:
        raise UserError("with --model, name the SAE: --sae-path DIR, or --sae-release R --sae-id I")
    from pivotal_sae.training.job import ensure_default_saes

    return [{"path": p} for p in ensure_default_saes().values()]


def load_checked(
    config: Any, sources: list[dict[str, Any]]
) -> tuple[LanguageModel, list[tuple[Sae, str]]]:
    """The model (`config.model`, `.device`, `.dtype`) and each SAE with the model hook it
    reads, checked against the model."""
    from pivotal_sae.runs import resolve_device

    lm = LanguageModel.load(config.model, device=resolve_device(config.device), dtype=config.dtype)
    saes = []
    for source in sources:
        sae = load_sae(**source, device=lm.device, dtype=torch.float32, option="--sae")
        saes.append((sae, lm.check_sae(sae).name))
    return lm, saes


def run_absorption_score(config: AbsorptionScoreConfig) -> Path:
    started = time.perf_counter()
    user_categories = read_category_file(config.category_file) if config.category_file else []
    lm, saes = load_checked(config, sae_sources(config))
    tasks = category_tasks(config, lm, user_categories)
    if not tasks:
        raise UserError("no category has enough single-token words to score (see --min-words)")
    run_dir = Path(config.out or default_run_dir(JOB))
    prepare_new_run_dir(run_dir)
    write_manifest(run_dir, JOB, config_to_dict(config))
    write_score_outputs(run_dir, score_saes(config, lm, tasks, saes, started))
    print(f"pivotal-sae: absorption scores in {run_dir}")
    return run_dir


def category_tasks(
    config: AbsorptionScoreConfig, lm: LanguageModel, user_categories: list[Any]
) -> list[Task]:
    """The semantic and first-letter tasks that have categories to score."""
    causal = is_causal(lm.config)
    tasks = (
        semantic_task(config, lm.tokenizer, causal, user_categories),
        first_letter_task(config, lm.tokenizer, causal),
    )
    return [t for t in tasks if t is not None and t.categories]


def score_saes(
    config: AbsorptionScoreConfig,
    lm: LanguageModel,
    tasks: list[Task],
    saes: list[tuple[Sae, str]],
    started: float,
) -> dict[str, Any]:
    """Every (task, SAE) scored: the summary `write_score_outputs` writes."""
    settings = settings_of(config)
    hooks = list(dict.fromkeys(hook for _, hook in saes))
    results: list[dict[str, Any]] = []
    for task in tasks:
        acts = member_activations(lm, task.members, hooks, config.batch_size)
        for sae, hook in saes:
            results.append(score_task(task, acts[hook], sae, hook, settings))
    return {
        "model": lm.name,
        "causal": is_causal(lm.config),
        "settings": asdict(settings),
        "wall_time_s": round(time.perf_counter() - started, 1),
        "runs": results,
    }


def score_task(task: Task, acts_NM: torch.Tensor, sae: Sae, hook: str,
               settings: ScoreSettings) -> dict[str, Any]:  # fmt: skip
    t0 = time.perf_counter()
    categories = score_categories(task.categories, task.words, task.labels_NC, task.train_N,
                                  acts_NM, sae, settings)  # fmt: skip
    return {
        "sae": sae.label,
        "hook": hook,
        "d_sae": sae.d_sae,
        "task": task.name,
        "template": task.template,
        "n_items": len(task.members),
        "n_train": int(task.train_N.sum()),
        "means": mean_scores(categories),
        "dropped_before_probing": task.dropped,
        "categories": [c.to_dict() for c in categories],
        "records": absorption_records(categories),
        "wall_time_s": round(time.perf_counter() - t0, 1),
    }


SCORE_DIR = "absorption_score"


def score_stage(lm: LanguageModel, sae: Sae, hook: str, run_dir: Path) -> dict[str, Any]:
    """The category score of one SAE inside another job's run (absorb): the default categories
    and settings of `absorption-score`, written to RUN/absorption_score/. A folder with its
    summary is a finished stage (a resumed run keeps it); an unfinished one is redone."""
    import json

    from pivotal_sae.absorption.score_report import REPORT, SCORES

    folder = run_dir / SCORE_DIR
    if (folder / REPORT).is_file():  # written last
        return json.loads((folder / SCORES).read_text())
    started = time.perf_counter()
    config = AbsorptionScoreConfig()
    summary = score_saes(config, lm, category_tasks(config, lm, []), [(sae, hook)], started)
    folder.mkdir(exist_ok=True)
    write_score_outputs(folder, summary)
    return summary


def category_pairs(summary: dict[str, Any]) -> set[frozenset[int]]:
    """The (main latent, absorbing latent) pairs a category score found, unordered."""
    return {
        frozenset((main, record["absorbing_latent"]))
        for run in summary["runs"]
        for record in run["records"]
        for main in record["main_latents"]
        if main != record["absorbing_latent"]
    }
