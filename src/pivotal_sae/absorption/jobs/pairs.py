"""`pivotal-sae pairs`: ablator latents that never fire together yet affect the reader alike.

Reads an effects file and the co-occurrence counts of the same ablator SAE (checked), searches
the pairs on the device (`find_effect_pairs`; effects stay row-sparse), adds decoder-similarity
pairs when the ablator SAE can be loaded, and writes pairs.json, pairs.csv, histogram.png,
report.html and the `pairs` entry of summary.json.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pivotal_sae.absorption import results
from pivotal_sae.absorption.ablation import AblationEffects
from pivotal_sae.absorption.config import PairJobConfig, PairsConfig
from pivotal_sae.absorption.cooccurrence import DenseCooccurrence, SparseCooccurrence
from pivotal_sae.absorption.dashboard import ActivationSample
from pivotal_sae.absorption.examples import TopExamples
from pivotal_sae.absorption.explanations import Explanations
from pivotal_sae.absorption.finder import AbsorptionCandidate, CandidateSearch, find_partial_pairs
from pivotal_sae.absorption.jobs import setup
from pivotal_sae.absorption.pairs import PairSearch, find_decoder_pairs, find_effect_pairs
from pivotal_sae.errors import UserError
from pivotal_sae.runs import (
    check_new_run_dir,
    default_run_dir,
    prepare_new_run_dir,
    resolve_device,
    write_manifest,
)

STAGE = "pairs"


def load_effects(path: Path, device: torch.device) -> tuple[AblationEffects, dict[str, Any]]:
    """Effects of a results file (rows or full layout, or the original scripts' file) as an
    `AblationEffects`, never densifying the rows of latents that were not ablated."""
    tensors, metadata = results.read_file(path)
    checked_metadata(metadata, path)
    kind = results.kind_of(tensors, metadata, path)
    if kind not in (results.EFFECTS, "legacy") or not {"effects_eE", "effects_eE_rows"} & set(
        tensors
    ):
        raise UserError(f"{path} holds no ablation effects (effects_eE)")
    how_often = tensors.get("how_often_activated_e")
    if how_often is None or how_often.ndim != 1:
        raise UserError(f"{path} lacks a 1-D how_often_activated_e")
    if "effects_eE_rows" in tensors:
        rows = tensors["effects_eE_rows"]
        reader_d_sae = rows.shape[1] if rows.ndim == 2 else -1
        state = tensors
    else:
        full = tensors["effects_eE"]
        if full.ndim != 2 or full.shape[0] != how_often.shape[0]:
            raise UserError(
                f"{path}: effects_eE has shape {tuple(full.shape)}, expected "
                f"({how_often.shape[0]}, reader latents) to match how_often_activated_e"
            )
        ids = (how_often > 0).nonzero()[:, 0]
        reader_d_sae = full.shape[1]
        state = {"effects_eE_row_ids": ids, "effects_eE_rows": full[ids],
                 "how_often_activated_e": how_often.to(torch.int64)}  # fmt: skip
    if "reader_d_sae" in metadata and int(metadata["reader_d_sae"]) != reader_d_sae:
        raise UserError(
            f"{path}: metadata says reader_d_sae={metadata['reader_d_sae']} but the effects "
            f"have {reader_d_sae} reader latents"
        )
    effects = AblationEffects(how_often.shape[0], max(reader_d_sae, 1), device)
    try:
        effects.load_state_dict(state)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    return effects, metadata


def load_counts(
    path: Path, device: torch.device
) -> tuple[DenseCooccurrence | SparseCooccurrence, dict[str, Any]]:
    tensors, metadata = results.read_file(path)
    checked_metadata(metadata, path)
    if results.kind_of(tensors, metadata, path) == "legacy":
        raise UserError(
            f"{path} is an original-scripts file without a token count; recount with "
            "`pivotal-sae cooccur` to get expected co-occurrences"
        )
    return results._counter_from(tensors, metadata, path, device), metadata


def token_text_for(model_name: str | None) -> Callable[[Sequence[int]], list[str]] | None:
    """Token ids → display strings with the run's tokenizer, or None if it cannot be loaded."""
    try:
        from transformers import AutoTokenizer

        from pivotal_sae.lm import defaults

        source = (
            defaults.default_model_path()
            if model_name in (None, defaults.DEFAULT_MODEL_NAME)
            else model_name
        )
        tokenizer = AutoTokenizer.from_pretrained(str(source))
    except Exception:  # a report without token text is still a report
        return None
    return tokenizer_text(tokenizer)


def tokenizer_text(tokenizer: Any) -> Callable[[Sequence[int]], list[str]]:
    wordpiece = type(tokenizer).__name__.startswith("Bert")

    def text(ids: Sequence[int]) -> list[str]:
        if wordpiece:  # "##ing" continues a word; other pieces start one
            return [p[2:] if p.startswith("##") else " " + p
                    for p in tokenizer.convert_ids_to_tokens(list(ids))]  # fmt: skip
        return [tokenizer.decode([int(i)]) for i in ids]

    return text


def rows_to_search(config: PairJobConfig, d_sae: int) -> list[int] | None:
    """`--just-these` limited by `--max-steps` (the original scanned rows 0 .. max_steps − 1)."""
    setup.check_latent_ids(config.just_these, d_sae, "--just-these")
    if config.max_steps is None:
        return config.just_these
    first = range(min(config.max_steps, d_sae))
    return [i for i in (config.just_these or first) if i < config.max_steps]


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def scores_text(scores: dict[str, Any] | None) -> str | None:
    """ "held-out FVU 0.213, L0 32, dead latents 1.2 %", or None for SAEs not trained here."""
    if not scores:
        return None
    return (f"held-out FVU {scores['fvu']:.3g}, L0 {scores['l0']:.3g}, dead latents "
            f"{100 * scores['dead_fraction']:.1f} %")  # fmt: skip


def report_summary(effects_meta: dict[str, Any], cooc_meta: dict[str, Any]) -> dict[str, Any]:
    corpus = effects_meta.get("corpus") or cooc_meta.get("corpus") or {}
    ablator = effects_meta.get("ablator_sae") or cooc_meta.get("sae") or {}
    reader = effects_meta.get("reader_sae") or {}
    return {
        "model": effects_meta.get("model") or cooc_meta.get("model"),
        "corpus": corpus.get("corpus") if isinstance(corpus, dict) else corpus,
        "ablator_sae": ablator.get("label"),
        "ablator_hook": ablator.get("hook_name"),
        "reader_sae": reader.get("label"),
        "reader_hook": reader.get("hook_name"),
        "ablator_sae_scores": scores_text(ablator.get("training_scores")),
        "reader_sae_scores": scores_text(reader.get("training_scores")),
        "tokens_counted": cooc_meta.get("tokens_counted"),
        "contexts_counted": cooc_meta.get("contexts_processed"),
        "contexts_ablated_in": effects_meta.get("contexts_ablated"),
        "contexts_searched_for_ablation": effects_meta.get("contexts_processed"),
        "selected_features": effects_meta.get("selected_features") or "none (every context)",
        "abridge_ablations_to": effects_meta.get("abridge_ablations_to"),
        "excluded_latents": len(effects_meta.get("excluded_latents") or []),
    }


def pairs_stage(
    config: PairJobConfig,
    out: Path,
    effects: AblationEffects,
    counter: DenseCooccurrence | SparseCooccurrence,
    *,
    effects_meta: dict[str, Any],
    cooc_meta: dict[str, Any],
    examples: TopExamples | None,
    W_dec_EM: torch.Tensor | None,
    token_text: Callable[[Sequence[int]], list[str]] | None,
    device: torch.device,
    explanations: Explanations | None = None,
    graded_by: tuple[set[frozenset[int]], dict[str, Any]] | None = None,
    sample: ActivationSample | None = None,
) -> PairsFound:
    """Search the pairs and write the report into `out` (`explanations`: read beforehand;
    `graded_by`: a category score's pairs and summary to grade the lists against; `sample`:
    the activations its dashboards' histograms and quantile examples come from)."""
    from pivotal_sae.absorption.explanations import load_explanations
    from pivotal_sae.absorption.report import write_report

    started = time.perf_counter()
    search = find_effect_pairs(
        effects, effects.how_often_activated_e, counter,
        cooccurrence_threshold=config.cooccurrence_threshold,
        cosine_sim_threshold=config.cosine_sim_threshold,
        just_these=rows_to_search(config, effects.d_sae),
        skip_torch_sign=config.skip_torch_sign, max_pairs=config.max_pairs,
        min_ablations=config.min_ablations, device=device,
    )  # fmt: skip
    decoder = None
    if W_dec_EM is not None and config.decoder_pairs:
        decoder = find_decoder_pairs(
            W_dec_EM, counter, top_n=config.decoder_pairs,
            cooccurrence_threshold=config.cooccurrence_threshold, device=device,
        )  # fmt: skip
    partial = None
    if W_dec_EM is not None and config.method == "partial":
        partial = find_partial_pairs(
            W_dec_EM, counter, exponent=config.partial_exponent,
            max_pairs=config.partial_pairs, device=device,
            neighbours_first=config.neighbours_first,
        )  # fmt: skip
        write_partial_pairs(out, partial)
    search_s = time.perf_counter() - started
    grade = None
    if graded_by is not None:
        grade = category_grade(graded_by[0], graded_by[1], search, partial)
    ablator = effects_meta.get("ablator_sae") or {}
    neuronpedia_id = config.ablator_sae_neuronpedia_id or ablator.get("neuronpedia_id")
    if explanations is None:
        explanations = load_explanations(neuronpedia_id, config.explanations)
    summary = report_summary(effects_meta, cooc_meta)
    write_report(
        out, search, decoder_pairs=decoder, examples=examples, explanations=explanations,
        neuronpedia_id=neuronpedia_id, token_text=token_text, summary=summary,
        no_log_scale=config.no_log_scale,
        counter=counter, effects=(effects, effects.how_often_activated_e), sample=sample,
        candidates=partial, run_grade=grade,
    )  # fmt: skip
    original_top = [
        {"latent_a": p.latent_a, "latent_b": p.latent_b, "cosine": round(p.cosine, 4),
         "cooccurrence": p.cooccurrence, "expected": round(p.expected_cooccurrence, 2)}
        for p in search.pairs[:10]
    ]  # fmt: skip
    partial_top = [
        {"parent": p.parent, "absorber": p.absorber, "score": round(p.score, 4),
         "decoder_cosine": round(p.decoder_cosine, 4), "cooccurrence": p.cooccurrence,
         "p_parent_given_absorber": round(p.p_parent_given_absorber, 4),
         "expected_given_tokens": None if p.expected_given_tokens is None
         else round(p.expected_given_tokens, 2), "q_cofire": p.q_cofire,
         "nearest_neighbours": p.nearest_neighbours}
        for p in (partial.pairs[:10] if partial else [])
    ]  # fmt: skip
    setup.update_summary(out, STAGE, {
        **summary,
        "method": config.method,
        "pairs_reported": len(search.pairs),
        "pairs_matching": search.n_matching,
        "latents_compared": search.n_rows,
        "decoder_pairs": len(decoder.pairs) if decoder else 0,
        "partial_pairs": len(partial.pairs) if partial else 0,
        "partial_pairs_scored": partial.n_scored if partial else 0,
        "explanations": len(explanations),
        "search_seconds": round(search_s, 2),
        "top_pairs": partial_top if partial else original_top,
        **({"category_grade": grade} if grade is not None else {}),
        **({"original_top_pairs": original_top} if partial else {}),
        **search.settings,
        **({"partial_settings": partial.settings} if partial else {}),
    })  # fmt: skip
    return PairsFound(search, partial)


def category_grade(
    truth: set[frozenset[int]],
    scores: dict[str, Any],
    original: PairSearch,
    partial: CandidateSearch | None,
) -> dict[str, Any]:
    """How the run's lists fare against the category score of the same SAE: precision at 20,
    recall at 100, and the candidates it confirms."""

    def rates(ranked: list[frozenset[int]]) -> dict[str, Any]:
        hits = [pair in truth for pair in ranked]
        return {
            "precision_at_20": sum(hits[:20]) / 20,
            "recall_at_100": sum(hits[:100]) / len(truth) if truth else None,
            "found_in_list": sum(hits),
            "listed": len(ranked),
        }

    means = [run["means"] for run in scores["runs"]]
    grade: dict[str, Any] = {
        "category_pairs": len(truth),
        "score_means": means,
        "original": rates([frozenset((p.latent_a, p.latent_b)) for p in original.pairs]),
    }
    if partial is not None:
        ranked = [frozenset((p.parent, p.absorber)) for p in partial.pairs]
        grade["partial"] = rates(ranked)
        grade["partial_confirmed_ranks"] = [r for r, pair in enumerate(ranked, 1) if pair in truth]
    return grade


@dataclass
class PairsFound:
    """What a pairs stage found: the original's search, and the partial method's (or None)."""

    original: PairSearch
    partial: CandidateSearch | None

    def headline(self) -> str:
        """The closing line's count of pairs."""
        if self.partial is not None:
            return (f"{plural(len(self.partial.pairs), 'candidate pair')} (partial method, of "
                    f"{self.partial.n_scored:,} scored)")  # fmt: skip
        return (f"{plural(len(self.original.pairs), 'pair')} (original method, of "
                f"{self.original.n_matching:,} matching)")  # fmt: skip


PARTIAL_NOTE = (
    "Pairs of the `partial` finder: alike decoder directions, co-firing on part of the more "
    "frequent latent's tokens. Graded against ground truth in docs/absorption_finders.md; a "
    "pair here is a candidate, not a verified absorption."
)


def write_partial_pairs(out: Path, search: CandidateSearch) -> None:
    """partial_pairs.json (settings, counts, pairs with their evidence) and partial_pairs.csv."""
    import csv
    import io
    import json

    from pivotal_sae.runs import atomic_write_text

    document = {
        "note": PARTIAL_NOTE,
        "settings": search.settings,
        "latents_alive": search.n_latents,
        "pairs_scored": search.n_scored,
        "pairs": [p.as_dict() for p in search.pairs],
    }
    atomic_write_text(out / "partial_pairs.json", json.dumps(document, indent=1))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(AbsorptionCandidate._fields)
    writer.writerows(search.pairs)
    atomic_write_text(out / "partial_pairs.csv", buffer.getvalue())


def _inputs(config: PairsConfig) -> tuple[Path, Path, Path | None]:
    assert config.input_path is not None  # PairsConfig requires it
    source = Path(config.input_path)
    if source.is_dir():
        effects_path = results.results_file(source, results.EFFECTS)
        if effects_path is None:
            raise UserError(f"{source} holds no effects.safetensors[.zst]; run ablate first")
    elif source.exists():
        if not source.name.endswith((".safetensors", ".safetensors.zst")):
            raise UserError(
                f"--input-path {source} is not an effects file (effects.safetensors[.zst]) "
                "or a run directory holding one"
            )
        effects_path = source
    else:
        raise UserError(f"--input-path {source}: no such file or directory")
    folder = effects_path.parent
    cooc_path = (
        Path(config.cooccurrence_path)
        if config.cooccurrence_path is not None
        else results.results_file(folder, results.COOCCURRENCES)
    )
    if cooc_path is None:
        raise UserError(
            f"no cooccurrences.safetensors beside {effects_path}; pass --cooccurrence-path"
        )
    return effects_path, cooc_path, results.results_file(folder, results.TOP_EXAMPLES)


def _decoder(ablator: dict[str, Any], device: torch.device) -> torch.Tensor | None:
    """The ablator SAE's decoder, if it can be loaded (local path, or a cached release)."""
    from pivotal_sae.saes.loading import load_sae

    try:
        if ablator.get("path") and Path(ablator["path"]).is_dir():
            return load_sae(path=ablator["path"], device=device).W_dec.detach()
        if ablator.get("release") and ablator.get("sae_id"):
            sae = load_sae(release=ablator["release"], sae_id=ablator["sae_id"], device=device)
            return sae.W_dec.detach()
    except UserError:
        pass
    return None


def explanations_given(config: Any, neuronpedia_id: str | None) -> Explanations | None:
    """The --explanations file read up front (a bad one is refused before any work), or None
    to look them up at the end (cache or download, which never fails)."""
    from pivotal_sae.absorption.explanations import load_explanations

    if config.explanations is None:
        return None
    return load_explanations(config.ablator_sae_neuronpedia_id or neuronpedia_id,
                             config.explanations)  # fmt: skip


def checked_metadata(metadata: dict[str, Any], path: Path) -> dict[str, Any]:
    """The metadata the report reads, checked for the shapes it expects (a tampered file is a
    one-line error, not a crash halfway through the report)."""
    for key in ("ablator_sae", "reader_sae", "sae"):
        if metadata.get(key) is not None and not isinstance(metadata[key], dict):
            raise UserError(f"{path}: metadata {key!r} is damaged (not a JSON object)")
    corpus = metadata.get("corpus")
    if corpus is not None and not isinstance(corpus, dict | str):
        raise UserError(f"{path}: metadata 'corpus' is damaged")
    excluded = metadata.get("excluded_latents")
    if excluded is not None and not isinstance(excluded, list):
        raise UserError(f"{path}: metadata 'excluded_latents' is damaged (not a list)")
    for key in ("tokens_counted", "contexts_processed", "contexts_ablated", "d_sae",
                "reader_d_sae"):  # fmt: skip
        value = metadata.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise UserError(f"{path}: metadata {key!r} is damaged (not a whole number)")
    neuronpedia_id = (metadata.get("ablator_sae") or {}).get("neuronpedia_id")
    if neuronpedia_id is not None and not isinstance(neuronpedia_id, str):
        raise UserError(f"{path}: metadata 'neuronpedia_id' is damaged (not a string)")
    return metadata


def output_dir(config: PairsConfig) -> Path:
    """Where the report goes, refused before any work unless it is a run directory (pairs adds
    its files there) or a place for a new one: a user's own files are never replaced."""
    # A new run directory unless told otherwise: the input run keeps its own report.
    out = Path(config.out) if config.out is not None else default_run_dir("pairs")
    if (out / "manifest.json").is_file():
        setup.check_summary(out)
        if not os.access(out, os.W_OK | os.X_OK):
            raise UserError(f"--out {out} is not writable")
    else:
        check_new_run_dir(out, resumable=False)
    return out


def run_pairs(config: PairsConfig) -> Path:
    device = resolve_device(config.device)
    effects_path, cooc_path, examples_path = _inputs(config)
    out = output_dir(config)
    # Everything is read and checked before anything is written.
    effects, effects_meta = load_effects(effects_path, device)
    counter, cooc_meta = load_counts(cooc_path, device)
    results.check_same_sae(cooc_meta, effects_meta, cooc_path, effects_path)
    if counter.d_sae != effects.d_sae:
        raise UserError(
            f"{effects_path} has {effects.d_sae} ablator latents but {cooc_path} counts "
            f"{counter.d_sae}; they come from different SAEs"
        )
    rows_to_search(config, effects.d_sae)
    examples = results.load_top_examples(examples_path, device) if examples_path else None
    explanations = explanations_given(
        config, (effects_meta.get("ablator_sae") or {}).get("neuronpedia_id")
    )
    W_dec_EM = _decoder(effects_meta.get("ablator_sae") or {}, device)
    if W_dec_EM is None and config.method == "partial":
        raise UserError(
            "the partial method needs the ablator SAE's decoder, and the SAE these results name "
            "cannot be loaded here; make it available or pass --method original"
        )
    if not (out / "manifest.json").exists():
        prepare_new_run_dir(out, resumable=False)
        write_manifest(out, "pairs", {k: str(v) if isinstance(v, Path) else v
                                      for k, v in vars(config).items()})  # fmt: skip
    found = pairs_stage(
        config, out, effects, counter, effects_meta=effects_meta, cooc_meta=cooc_meta,
        examples=examples, W_dec_EM=W_dec_EM,
        token_text=token_text_for(effects_meta.get("model")), device=device,
        explanations=explanations,
    )  # fmt: skip
    setup.say(f"{found.headline()}; report in {out}/report.html")
    return out
