"""`pivotal-sae plant-absorption`: edit an SAE with a known answer and write it beside the key."""

from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pivotal_sae.absorption.categories import (
    Member,
    PromptBuilder,
    default_template,
    is_causal,
    vocabulary_words,
)
from pivotal_sae.absorption.category_tasks import member_activations
from pivotal_sae.absorption.jobs.score import load_checked
from pivotal_sae.absorption.planting import check_pairs, choose_pairs, plant_absorption
from pivotal_sae.absorption.score_config import PlantAbsorptionConfig
from pivotal_sae.configs import config_to_dict
from pivotal_sae.errors import UserError
from pivotal_sae.runs import atomic_write_json, default_run_dir, prepare_new_run_dir, write_manifest
from pivotal_sae.saes.loading import save_sae

JOB = "plant-absorption"
ANSWER_KEY = "answer_key.json"


def calibration_words(tokenizer: Any, causal: bool, n_words: int, seed: int) -> list[Member]:
    """`n_words` single-token vocabulary words in the score's default prompt, seeded."""
    builder = PromptBuilder(tokenizer, default_template(causal, False))
    words = vocabulary_words(tokenizer)
    random.Random(seed).shuffle(words)
    members: list[Member] = []
    seen: set[int] = set()
    for word in words:
        member = builder.member(word)
        if member is not None and member.token_id not in seen:
            seen.add(member.token_id)
            members.append(member)
            if len(members) == n_words:
                break
    return members


def run_plant_absorption(config: PlantAbsorptionConfig) -> Path:
    lm, saes = load_checked(config, [plant_source(config)])
    sae, hook = saes[0]
    if config.parents is not None:
        check_pairs(list(zip(config.parents, config.children or [], strict=True)), sae.d_sae)
    members = calibration_words(lm.tokenizer, is_causal(lm.config), config.n_words, config.seed)
    acts_NM = member_activations(lm, members, [hook], config.batch_size)[hook]
    if config.parents is not None:
        pairs = list(zip(config.parents, config.children or [], strict=True))
    else:
        pairs = choose_pairs(sae, acts_NM, config.n_pairs, config.seed)
    edited, planted, check = plant_absorption(sae, acts_NM, pairs, config.rate, config.direction)
    run_dir = Path(config.out or default_run_dir(JOB))
    prepare_new_run_dir(run_dir)
    write_manifest(run_dir, JOB, config_to_dict(config))
    save_sae(edited.replace_info(path=str(run_dir / "sae")), run_dir / "sae")
    key = answer_key(sae, hook, members, planted, check, config)
    atomic_write_json(run_dir / ANSWER_KEY, key)
    print(f"pivotal-sae: planted {len(planted)} pairs; edited SAE and {ANSWER_KEY} in {run_dir}")
    return run_dir


def answer_key(sae: Any, hook: str, members: list[Member], planted: list[Any],
               check: dict[str, float], config: Any) -> dict[str, Any]:  # fmt: skip
    pairs = []
    for p in planted:
        entry = asdict(p)
        entry["absorbed_tokens"] = [members[i].word for i in entry.pop("absorbed_token_ids")]
        entry["kept_tokens"] = [members[i].word for i in entry.pop("kept_token_ids")]
        pairs.append(entry)
    return {
        "source_sae": sae.label,
        "hook": hook,
        "d_sae": sae.d_sae,
        "rate": config.rate,
        "seed": config.seed,
        "n_calibration_words": len(members),
        "pairs": pairs,
        "reconstruction_check": check,
    }


def plant_source(config: PlantAbsorptionConfig) -> dict[str, Any]:
    """load_sae keywords of the SAE to edit: the block-3 default SAE when none is named."""
    if config.sae_release is not None:
        return {"release": config.sae_release, "sae_id": config.sae_id}
    if config.sae_path is not None:
        return {"path": config.sae_path}
    if config.model is not None:
        raise UserError("with --model, name the SAE: --sae-path DIR, or --sae-release R --sae-id I")
    from pivotal_sae.training.defaults import DEFAULT_HOOKS
    from pivotal_sae.training.job import ensure_default_saes

    return {"path": ensure_default_saes()[DEFAULT_HOOKS[0]]}
