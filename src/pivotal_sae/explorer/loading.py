"""Build an `Explorer` from command-line options: the model, the SAEs, their explanations.

Which SAEs: the one named by --sae-path / --sae-release + --sae-id, else the SAEs the --run
directory names (its ablator and reader), else the default SAEs; with both flags and --run,
the flagged SAE and the run's. Which model: --model, else the run's model, else the default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pivotal_sae.absorption.explanations import Explanations, load_explanations, read_explanations
from pivotal_sae.errors import UserError
from pivotal_sae.explorer.engine import Explorer, LoadedSae
from pivotal_sae.explorer.run_data import RunData
from pivotal_sae.lm.defaults import DEFAULT_MODEL_NAME
from pivotal_sae.saes.sae import Sae
from pivotal_sae.training.defaults import find_default_saes

SaeSpec = dict[str, Any]
"""How to load an SAE: `path`, or `release` + `sae_id`; plus an optional `role`."""


def _same_sae(spec: SaeSpec, sae: Sae) -> bool:
    """Whether an SAE identity from run metadata names this loaded SAE."""
    info = sae.info
    if spec.get("path") and info.path:
        return Path(spec["path"]).expanduser().resolve() == Path(info.path).resolve()
    if spec.get("release") and info.release:
        return (spec["release"], spec.get("sae_id")) == (info.release, info.sae_id)
    return False


def sae_specs(options: Any, run: RunData | None) -> list[SaeSpec]:
    specs: list[SaeSpec] = []
    if options.sae_path is not None:
        specs.append({"path": options.sae_path})
    elif options.sae_release is not None:
        specs.append({"release": options.sae_release, "sae_id": options.sae_id})
    if run is not None:
        for role in ("ablator", "reader"):
            spec = run.sae_spec(role)
            if spec and (spec.get("path") or spec.get("release")):
                specs.append({**spec, "role": role})
    if not specs:
        specs = [{"path": path} for path in find_default_saes().values()]
    return specs


def _load_one(spec: SaeSpec, device: Any, run: RunData | None) -> Sae:
    from pivotal_sae.saes.loading import load_sae

    try:
        return load_sae(
            path=spec.get("path"),
            release=spec.get("release"),
            sae_id=spec.get("sae_id"),
            device=device,
            option="--sae",
        )
    except UserError as exc:
        if spec.get("role") and run is not None:
            raise UserError(
                f"--run {run.path} names its {spec['role']} SAE, which cannot be loaded: {exc}"
            ) from None
        raise


def _unique_name(sae: Sae, taken: set[str]) -> str:
    base = sae.info.sae_id if sae.info.release and sae.info.sae_id else sae.hook_name
    name, n = base, 2
    while name in taken:
        name, n = f"{base}~{n}", n + 1
    return name


def explanations_for(sae: Sae, path: Path | None, n_saes: int) -> Explanations:
    """An SAE's explanations: from `path` (records matched by Neuronpedia id; with one SAE
    and no id, all records), else from the cache or a download (offline: none)."""
    np_id = sae.info.neuronpedia_id
    if path is None:
        return load_explanations(np_id) if np_id else Explanations()
    if np_id:
        try:
            return read_explanations(path, np_id)
        except UserError:
            if n_saes == 1:
                raise
            return Explanations()  # the export belongs to another of the loaded SAEs
    return read_explanations(path) if n_saes == 1 else Explanations()


def build_explorer(
    options: Any,
    *,
    run: RunData | None = None,
    explanations: Path | None = None,
    max_prompt_chars: int = 4000,
    max_prompt_tokens: int = 512,
) -> tuple[Explorer, str | None]:
    """The explorer, and the name of the loaded SAE the run's latent ids belong to."""
    from pivotal_sae.lm.model import LanguageModel
    from pivotal_sae.runs import resolve_device

    device = resolve_device(options.device)
    model = options.model
    if model is None and run is not None and run.model_name not in (None, DEFAULT_MODEL_NAME):
        model = run.model_name
    if explanations is not None and not explanations.exists():
        raise UserError(f"--explanations {explanations}: no such file or directory")
    specs = sae_specs(options, run)
    loaded: list[tuple[Sae, str | None]] = []
    for spec in specs:
        sae = _load_one(spec, device, run)
        same = next((i for i, (s, _) in enumerate(loaded) if _same_sae(_identity(s), sae)), None)
        if same is None:
            loaded.append((sae, spec.get("role")))
        elif spec.get("role") and loaded[same][1] is None:
            loaded[same] = (loaded[same][0], spec["role"])
    lm = LanguageModel.load(model, device=device, dtype=options.dtype)
    saes: list[LoadedSae] = []
    for sae, role in loaded:
        lm.check_sae(sae)
        hook = sae.hook_name if sae.hook_name in lm.hook_names() else sae.info.hf_hook_name
        name = _unique_name(sae, {s.name for s in saes})
        texts = explanations_for(sae, explanations, len(loaded))
        saes.append(LoadedSae(name, sae, hook or sae.hook_name, role, texts))
    run_sae = _run_sae(run, saes) if run is not None else None
    explorer = Explorer(
        lm, saes, max_prompt_chars=max_prompt_chars, max_prompt_tokens=max_prompt_tokens
    )
    return explorer, run_sae


def _identity(sae: Sae) -> SaeSpec:
    return {"path": sae.info.path, "release": sae.info.release, "sae_id": sae.info.sae_id}


def _run_sae(run: RunData, saes: list[LoadedSae]) -> str:
    """Name of the loaded SAE whose latents the run's ids count; fill in its explanations
    from pairs.json where nothing else explained them."""
    spec = run.sae_spec("ablator")
    match = next((s for s in saes if s.role == "ablator"), None)
    if match is None and spec is not None:
        match = next((s for s in saes if _same_sae(spec, s.sae)), None)
    if match is None and spec is None:  # files of the original scripts name no SAE
        match = next((s for s in saes if s.d_sae == run.d_sae), None)
    if match is None or (run.d_sae is not None and match.d_sae != run.d_sae):
        named = (spec or {}).get("path") or (spec or {}).get("release") or f"{run.d_sae} latents"
        raise UserError(
            f"--run {run.path} was made with another SAE ({named}) than the ones loaded; "
            "name that SAE with --sae-path or --sae-release/--sae-id"
        )
    for latent, text in run.explanations.items():
        match.explanations.by_index.setdefault(latent, [text])
    return match.name
