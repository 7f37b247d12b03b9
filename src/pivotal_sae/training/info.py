"""`pivotal-sae sae-info`: what an SAE is, whether it fits a model, and how well it reconstructs.

With no SAE flags it describes the default SAEs (which must have been trained). A model is
loaded when `--model` is given, when the SAE was trained on the default model, or when scoring
(`--n-prompts`); its hook and width are then checked against the SAE.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pivotal_sae.lm.defaults import DEFAULT_MODEL_NAME
from pivotal_sae.saes.loading import load_sae
from pivotal_sae.saes.sae import Sae
from pivotal_sae.training import defaults
from pivotal_sae.training.config import SaeInfoConfig


def training_scores(sae: Sae) -> dict[str, float] | None:
    """Held-out FVU, L0 and dead fraction recorded when the SAE was trained here (`train-sae`
    keeps them in cfg.json; older runs have them in the summary.json beside the SAE)."""
    scores = sae.info.metadata.get("training_scores")
    if scores is None and sae.info.path is not None:
        summary = Path(sae.info.path).parent / "summary.json"
        try:
            recorded = json.loads(summary.read_text())
        except (OSError, ValueError):
            return None
        if isinstance(recorded, dict) and "fvu" in recorded:
            scores = {k: recorded[k] for k in ("fvu", "l0", "dead_fraction") if k in recorded}
    return dict(scores) if isinstance(scores, dict) else None


def describe(sae: Sae) -> dict[str, Any]:
    info = sae.info
    return {
        "label": info.label,
        "architecture": info.architecture,
        "d_in": info.d_in,
        "d_sae": info.d_sae,
        "k": info.k,
        "hook_name": info.hook_name,
        "hf_hook_name": info.hf_hook_name,
        "model_name": info.model_name,
        "neuronpedia_id": info.neuronpedia_id,
        "dtype": str(sae.dtype).removeprefix("torch."),
        "training_scores": training_scores(sae),
    }


def run_sae_info(config: SaeInfoConfig) -> list[dict[str, Any]]:
    from pivotal_sae.runs import resolve_device

    device = resolve_device(config.device)
    if config.sae_path is None and config.sae_release is None:
        saes = [
            load_sae(path=path, device=device) for path in defaults.find_default_saes().values()
        ]
    else:
        saes = [
            load_sae(
                path=config.sae_path,
                release=config.sae_release,
                sae_id=config.sae_id,
                device=device,
            )
        ]
    lm = None
    on_default = all(s.info.model_name == DEFAULT_MODEL_NAME for s in saes)
    if config.model is not None or on_default or config.n_prompts:
        from pivotal_sae.lm.model import LanguageModel

        lm = LanguageModel.load(config.model, device=device, dtype=config.dtype)
    reports = []
    for sae in saes:
        report = describe(sae)
        if lm is not None:
            site = lm.check_sae(sae)
            report["model"] = lm.name
            report["hook_site"] = f"{site.where} of {lm.hooks.module_name(site)}"
            if config.n_prompts:
                report.update(_score(config, lm, sae))
        reports.append(report)
    print(json.dumps(reports if len(reports) > 1 else reports[0], indent=2))
    return reports


def _score(config: SaeInfoConfig, lm: Any, sae: Sae) -> dict[str, Any]:
    from pivotal_sae.lm.contexts import Contexts
    from pivotal_sae.lm.corpus import open_corpus
    from pivotal_sae.training.job import collect_activations, evaluate

    corpus = open_corpus(
        config.corpus,
        dataset_id=config.dataset_id,
        split=config.split,
        text_column=config.text_column,
    )
    contexts = Contexts(
        corpus, lm.tokenizer, config.max_tokens_in_prompt, config.n_prompts,
        keep_bos=config.keep_bos,
    )  # fmt: skip
    acts = collect_activations(lm, contexts, [sae.hook_name], config.batch_size)[sae.hook_name]
    return {"corpus": corpus.name, "tokens": len(acts), **evaluate(sae, acts)}
