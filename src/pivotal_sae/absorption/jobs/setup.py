"""What every absorption job does first: resolve --resume, load SAEs, model and contexts,
check everything a user can get wrong, and only then create the run directory.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from pivotal_sae import distributed
from pivotal_sae.absorption.config import ModelJobConfig, defaults_of
from pivotal_sae.configs import config_to_dict
from pivotal_sae.errors import UserError
from pivotal_sae.lm.contexts import Contexts
from pivotal_sae.lm.corpus import Corpus, open_corpus
from pivotal_sae.lm.model import LanguageModel, parse_dtype
from pivotal_sae.progress import progress as progress  # the jobs' bars, re-exported
from pivotal_sae.progress import say as say  # jobs call setup.say
from pivotal_sae.runs import (
    atomic_write_json,
    check_new_run_dir,
    code_version,
    default_run_dir,
    prepare_new_run_dir,
    read_manifest,
    remove_partial_writes,
    write_manifest,
)
from pivotal_sae.saes.loading import load_sae
from pivotal_sae.saes.sae import Sae
from pivotal_sae.training import defaults
from pivotal_sae.training.info import training_scores

SUMMARY = "summary.json"
#: Options a resumed run may change: where it runs, not what it computes.
RESUMABLE_CHANGES = ("resume", "out", "device")


@dataclass
class Models:
    """The language model, the SAEs and the hooks they read, all checked against each other."""

    lm: LanguageModel
    ablator: Sae
    ablator_hook: str
    reader: Sae | None = None
    reader_hook: str | None = None

    def with_reader(self) -> tuple[Sae, str]:
        """The reader SAE and its hook, for jobs that loaded them (`with_reader=True`)."""
        if self.reader is None or self.reader_hook is None:
            raise ValueError("these models were loaded without a reader SAE")
        return self.reader, self.reader_hook


JobConfig = TypeVar("JobConfig", bound=ModelJobConfig)


def start_run(config: JobConfig, job: str) -> tuple[JobConfig, Path, bool]:
    """`(config, run_dir, resuming)`. With --resume the run's own options come back from its
    manifest; flags given beside --resume must agree with them (only --device may change)."""
    if config.resume is None:
        run_dir = Path(config.out or default_run_dir(job))
        check_new_run_dir(run_dir)  # before any work: --out must be a place for a new run
        return config, run_dir, False
    run_dir = Path(config.resume)
    saved = read_manifest(run_dir, job).get("config", {})
    given, plain = config_to_dict(config), defaults_of(type(config))
    for name, value in given.items():
        if name in RESUMABLE_CHANGES or value == plain.get(name) or value == saved.get(name):
            continue
        flag = "--" + name.replace("_", "-")
        raise UserError(
            f"--resume continues {run_dir} with the options it was started with; {flag} "
            f"{value} differs from its {saved.get(name)} (leave it out)"
        )
    kwargs = {k: v for k, v in saved.items() if k in {f.name for f in dataclasses.fields(config)}}
    kwargs.update(resume=None, out=str(run_dir))
    if config.device != plain.get("device"):
        kwargs["device"] = config.device
    try:
        resumed = _from_dict(type(config), kwargs)
    except (TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"{run_dir / 'manifest.json'} is damaged: its config does not make a "
                        f"run ({exc})") from None  # fmt: skip
    except UserError as exc:
        raise UserError(f"{run_dir / 'manifest.json'} is damaged: {exc}") from None
    return resumed, run_dir, True


def _from_dict(config_cls: type, values: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(config_cls)
    for name, value in values.items():
        if value is not None and "Path" in str(hints.get(name)):
            values[name] = Path(value)
    return config_cls(**values)


def create_run_dir(run_dir: Path, job: str, config: ModelJobConfig) -> None:
    """A new run directory with its manifest; refuses one that already holds files. Under
    torchrun only rank 0 writes."""
    if not distributed.is_main():
        return
    prepare_new_run_dir(run_dir)
    write_manifest(run_dir, job, config_to_dict(config))


def _sae_flags(config: ModelJobConfig, role: str) -> dict[str, Any]:
    return {
        "path": getattr(config, f"{role}_sae_path"),
        "release": getattr(config, f"{role}_sae_release"),
        "sae_id": getattr(config, f"{role}_sae_id"),
    }


def default_sae_dir(config: ModelJobConfig, role: str) -> Path:
    """With no SAE flags and the default model: the cached default SAE (trained on first use)."""
    if config.model is not None:
        raise UserError(
            f"with --model, name the {role} SAE: --{role}-sae-path DIR, or "
            f"--{role}-sae-release R --{role}-sae-id I"
        )
    hook = defaults.DEFAULT_HOOKS[0 if role == "ablator" else 1]
    # Under torchrun every rank would train them at once: there a missing cache is an error.
    if distributed.current().distributed:
        return defaults.find_default_saes()[hook]
    from pivotal_sae.training.job import ensure_default_saes

    return ensure_default_saes()[hook]


def load_models(config: ModelJobConfig, *, with_reader: bool) -> Models:
    """Model and SAEs, checked: hooks exist on the model, widths match, and (for ablation) the
    reader hook is at or after the ablator hook."""
    roles = ["ablator", "reader"] if with_reader else ["ablator"]
    flags = {role: _sae_flags(config, role) for role in roles}
    for role in roles:  # the default SAEs may need training: before loading anything else
        if all(v is None for v in flags[role].values()):
            flags[role]["path"] = default_sae_dir(config, role)
    device = distributed.device_for(config.device)
    lm = LanguageModel.load(config.model, device=device, dtype=config.dtype)
    sae_dtype = lm.dtype if config.sae_dtype == "auto" else parse_dtype(config.sae_dtype)
    ablator = load_sae(**flags["ablator"], device=lm.device, dtype=sae_dtype,
                       option="--ablator-sae")  # fmt: skip
    ablator_site = lm.check_sae(ablator, "ablator SAE")
    models = Models(lm, ablator, ablator_site.name)
    if with_reader:
        reader = load_sae(**flags["reader"], device=lm.device, dtype=torch.float32,
                          option="--reader-sae")  # fmt: skip
        reader_site = lm.check_sae(reader, "reader SAE")
        from pivotal_sae.lm.patching import check_hook_order

        check_hook_order(ablator_site, reader_site)
        models.reader, models.reader_hook = reader, reader_site.name
    return models


def open_contexts(
    config: ModelJobConfig, lm: LanguageModel, n_prompts: int
) -> tuple[Corpus, Contexts]:
    lm.check_context_length(config.max_tokens_in_prompt)
    corpus = open_corpus(config.corpus, dataset_id=config.dataset_id, split=config.split,
                         text_column=config.text_column)  # fmt: skip
    contexts = Contexts(corpus, lm.tokenizer, config.max_tokens_in_prompt, n_prompts,
                        keep_bos=config.keep_bos)  # fmt: skip
    return corpus, contexts


def check_latent_ids(ids: list[int] | None, d_sae: int, flag: str) -> None:
    bad = [i for i in ids or [] if not 0 <= i < d_sae]
    if bad:
        raise UserError(
            f"{flag} {bad[0]} is not a latent of the ablator SAE, which has {d_sae} "
            f"(ids 0..{d_sae - 1})"
        )


def sae_identity(sae: Sae) -> dict[str, Any]:
    """How results metadata names an SAE (`check_same_sae` compares these keys)."""
    info = sae.info
    return {
        "release": info.release,
        "sae_id": info.sae_id,
        "path": info.path,
        "neuronpedia_id": info.neuronpedia_id,
        "hook_name": info.hook_name,
        "d_sae": info.d_sae,
        "architecture": info.architecture,
        "model_name": info.model_name,
        "label": info.label,
        "training_scores": training_scores(sae),
    }


def run_metadata(models: Models, contexts: Contexts) -> dict[str, Any]:
    meta = {
        "model": models.lm.name,
        "corpus": contexts.describe(),
        "code_version": code_version(),
        "ablator_hook": models.ablator_hook,
    }
    if models.reader_hook is not None:
        meta["reader_hook"] = models.reader_hook
    return meta


def read_summary(run_dir: Path) -> dict[str, Any]:
    """The stages recorded in `run_dir`'s summary.json so far ({} if none, or unreadable: the
    run rewrites it)."""
    path = run_dir / SUMMARY
    try:
        summary = json.loads(path.read_text()) if path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        summary = {}
    return summary if isinstance(summary, dict) else {}


def check_summary(run_dir: Path) -> None:
    """Refuse, before any work, to add to a summary.json that is not this program's."""
    path = run_dir / SUMMARY
    if not path.exists():
        return
    try:
        summary = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        summary = None
    if not isinstance(summary, dict):
        raise UserError(f"{path} is not a run summary (a JSON object); move it away or choose "
                        "another --out")  # fmt: skip


def update_summary(run_dir: Path, stage: str, values: dict[str, Any]) -> dict[str, Any]:
    """summary.json holds one entry per stage run in the directory (cooccur, ablate, pairs)."""
    summary = read_summary(run_dir)
    summary[stage] = values
    atomic_write_json(run_dir / SUMMARY, summary)
    return summary


def tidy_resumed_run(run_dir: Path) -> None:
    """Before a resumed run continues: remove what interrupted writes left behind."""
    if distributed.is_main():
        remove_partial_writes(run_dir)
