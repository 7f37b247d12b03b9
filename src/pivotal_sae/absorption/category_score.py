"""Chanin et al.'s absorption score, as SAEBench 0.6 computes it, for any token categories.

Works on tensors: the model's activations at each item's word token (`acts_NM`), which items
belong to which category, and the SAE. Per category:

1. a logistic-regression probe on the activations (train split); categories whose probe has
   test F1 below `min_probe_f1` are dropped (and listed);
2. k-sparse probing over the SAE's latents: an L1-regularized probe over all latents ranks
   them, then for k = 1..max_k a logistic regression on the top k latents is scored (test F1);
   the category's *main latents* are the top k while F1 keeps rising by more than
   `f1_jump_threshold`;
3. on the test words the probe gets right (probe true positives), the absorption of each word:
   *full absorption* (every main latent silent, the top latent by probe projection aligned with
   the probe (cosine >= `full_absorption_cos_threshold`) and carrying >= `projection_proportion`
   of the activation's probe projection) and the *absorption fraction* (the share of the probe
   projection that up to `max_absorbing_latents` other probe-aligned latents carry instead of the
   main latents). A category's scores are the full-absorption rate and the mean absorption
   fraction over its probe true positives; the run's scores are their means over kept categories.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pivotal_sae.absorption.score_config import AbsorptionScoreConfig as _Config

#: SAEBench's "latent is silent" level for the main latents.
SILENT = 1e-8


@dataclass
class ScoreSettings:
    """Every threshold of the score; defaults are SAEBench 0.6's, written once, with their help
    text, in `AbsorptionScoreConfig`."""

    min_probe_f1: float = _Config.min_probe_f1
    max_k: int = _Config.max_k
    f1_jump_threshold: float = _Config.f1_jump_threshold
    full_absorption_cos_threshold: float = _Config.full_absorption_cos_threshold
    fraction_cos_threshold: float = _Config.fraction_cos_threshold
    projection_proportion: float = _Config.projection_proportion
    max_absorbing_latents: int = _Config.max_absorbing_latents
    top_latents: int = 10
    probe_c: float = _Config.probe_c
    l1_decay: float = _Config.l1_decay
    l1_epochs: int = 50
    seed: int = _Config.seed


@dataclass
class WordResult:
    word: str
    probe_projection: float
    main_acts: list[float]
    top_latents: list[int]
    top_projections: list[float]
    absorbers: list[int]
    """The latents counted in the absorption fraction (at most `max_absorbing_latents`)."""
    absorption_fraction: float
    full_absorption: bool


@dataclass
class CategoryResult:
    name: str
    n_words: int
    n_train: int
    n_test: int
    probe_f1: float
    probe_precision: float
    probe_recall: float
    kept: bool
    main_latents: list[int] = field(default_factory=list)
    k_sparse_f1: list[float] = field(default_factory=list)
    n_probe_true_positives: int = 0
    n_main_latent_true_positives: int = 0
    full_absorption_rate: float = 0.0
    mean_absorption_fraction: float = 0.0
    words: list[WordResult] = field(default_factory=list)

    @property
    def false_negative_rate(self) -> float:
        """Probe true positives that the main latents' sparse probe misses."""
        n = self.n_probe_true_positives
        return 1 - self.n_main_latent_true_positives / n if n else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "words"}
        d["false_negative_rate"] = self.false_negative_rate
        d["words"] = [w.__dict__ for w in self.words]
        return d


def f1_precision_recall(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float, float]:
    tp = float(np.sum(y_true & y_pred))
    precision = tp / max(float(np.sum(y_pred)), 1.0)
    recall = tp / max(float(np.sum(y_true)), 1.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return f1, precision, recall


def train_probe(x_NM: np.ndarray, y_N: np.ndarray, c: float, seed: int) -> tuple[np.ndarray, float]:
    """A balanced logistic-regression probe; returns (weights on raw activations, bias)."""
    from sklearn.linear_model import LogisticRegression

    mean, scale = x_NM.mean(0), x_NM.std(0) + 1e-6
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed)
    model.fit((x_NM - mean) / scale, y_N)
    weight = model.coef_[0] / scale
    bias = float(model.intercept_[0] - np.dot(weight, mean))
    return weight, bias


def rank_latents_l1(
    sae_acts_NE: torch.Tensor,
    labels_NC: torch.Tensor,
    settings: ScoreSettings,
    l1_scale: float = 1.0,
) -> torch.Tensor:
    """SAEBench's L1-regularized multi-probe over all latents: weights `(C, E)` whose top
    entries per category are the k-sparse probes' latents. Positives are up-weighted by the
    class ratio, as the category probes are balanced."""
    g = torch.Generator().manual_seed(settings.seed)
    n, e = sae_acts_NE.shape
    c = labels_NC.shape[1]
    scale = sae_acts_NE.abs().max().clamp_min(1e-6)
    x = sae_acts_NE / scale
    y = labels_NC.float()
    pos = y.sum(0).clamp_min(1)
    pos_weight = ((n - pos) / pos).clamp(1, 1e4)
    weight = torch.zeros(c, e, requires_grad=True)
    bias = torch.zeros(c, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=0.01)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    batch = 4096
    l1 = settings.l1_decay * l1_scale
    steps = settings.l1_epochs * max(1, -(-n // batch))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=1e-5)
    with torch.enable_grad():
        for _ in range(settings.l1_epochs):
            order = torch.randperm(n, generator=g)
            for start in range(0, n, batch):
                rows = order[start : start + batch]
                logits = x[rows] @ weight.T + bias
                loss = loss_fn(logits, y[rows]) + l1 * weight.abs().sum(-1).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
    return weight.detach()


def k_sparse_main_latents(
    sae_acts_NE: torch.Tensor,
    y_N: np.ndarray,
    train_N: np.ndarray,
    ranking_E: torch.Tensor,
    settings: ScoreSettings,
) -> tuple[list[int], list[float], np.ndarray]:
    """(main latents, test F1 per k, the chosen k-sparse probe's test predictions)."""
    from sklearn.linear_model import LogisticRegression

    test_N = ~train_N
    f1s: list[float] = []
    main: list[int] = []
    main_pred = np.zeros(int(test_N.sum()), dtype=bool)
    best = -100.0
    growing = True
    for k in range(1, settings.max_k + 1):
        ids = ranking_E.topk(k).indices.tolist()
        x = sae_acts_NE[:, ids].double().numpy()
        if len(np.unique(y_N[train_N])) < 2:
            break
        model = LogisticRegression(max_iter=500, class_weight="balanced")
        model.fit(x[train_N], y_N[train_N])
        pred = model.decision_function(x[test_N]) > 0
        f1 = f1_precision_recall(y_N[test_N], pred)[0]
        f1s.append(f1)
        if growing and f1 > best + settings.f1_jump_threshold:
            best, main, main_pred = f1, ids, pred
        else:
            growing = False
    return main, f1s, main_pred


def word_absorption(
    word: str,
    acts_M: torch.Tensor,
    sae_acts_E: torch.Tensor,
    probe_dir_M: torch.Tensor,
    cos_E: torch.Tensor,
    main: Sequence[int],
    settings: ScoreSettings,
) -> WordResult:
    """SAEBench's per-word absorption fraction and full-absorption test."""
    probe_projection = float(acts_M @ probe_dir_M)
    projections_E = sae_acts_E * cos_E
    main_t = torch.tensor(list(main), dtype=torch.long)
    main_projection = float(projections_E[main_t].sum()) if len(main) else 0.0
    candidates = torch.ones_like(projections_E, dtype=torch.bool)
    candidates[main_t] = False
    candidates &= (cos_E >= settings.fraction_cos_threshold) & (projections_E > 0)
    cand_ids = candidates.nonzero().flatten()
    top = projections_E[cand_ids].topk(min(settings.max_absorbing_latents, len(cand_ids)))
    absorbers = cand_ids[top.indices].tolist()
    absorbed = float(top.values.sum())
    proportion = absorbed / probe_projection if probe_projection != 0 else 0.0
    if main_projection >= probe_projection or proportion < settings.projection_proportion:
        fraction = 0.0
    elif main_projection <= 0:
        fraction = 1.0
    else:
        share = min(absorbed, probe_projection - main_projection)
        fraction = float(np.clip(share / (share + main_projection), 0.0, 1.0))
    top_k = projections_E.topk(min(settings.top_latents, len(projections_E)))
    top_ids, top_values = top_k.indices.tolist(), top_k.values.tolist()
    main_acts = [float(sae_acts_E[i]) for i in main]
    full = (
        all(abs(a) < SILENT for a in main_acts)
        and float(cos_E[top_ids[0]]) >= settings.full_absorption_cos_threshold
        and probe_projection >= 0
        and probe_projection != 0
        and top_values[0] / probe_projection >= settings.projection_proportion
    )
    return WordResult(
        word=word,
        probe_projection=probe_projection,
        main_acts=main_acts,
        top_latents=top_ids,
        top_projections=top_values,
        absorbers=absorbers if fraction > 0 else [],
        absorption_fraction=fraction,
        full_absorption=bool(full),
    )


@torch.no_grad()
def score_categories(
    names: Sequence[str],
    words: Sequence[str],
    labels_NC: torch.Tensor,
    train_N: torch.Tensor,
    acts_NM: torch.Tensor,
    sae: Any,
    settings: ScoreSettings,
) -> list[CategoryResult]:
    """Score each category (a column of `labels_NC`, bool) on one SAE.

    `acts_NM` are the model's activations at each item's word token, `train_N` the split.
    Items in no category are negatives for every probe.
    """
    acts_NM = acts_NM.float().cpu()
    sae_acts_NE = sae.encode(acts_NM.to(sae.device, sae.dtype)).float().cpu()
    W_dec_EM = sae.W_dec.detach().float().cpu()
    labels = labels_NC.bool().cpu().numpy()
    train = train_N.bool().cpu().numpy()
    test = ~train
    x_NM = acts_NM.double().numpy()
    results: list[CategoryResult] = []
    probes: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for c, name in enumerate(names):
        y = labels[:, c]
        result = CategoryResult(name, int(y.sum()), int((y & train).sum()),
                                int((y & test).sum()), 0.0, 0.0, 0.0, kept=False)  # fmt: skip
        results.append(result)
        if result.n_train < 1 or result.n_test < 1:
            continue
        weight, bias = train_probe(x_NM[train], y[train], settings.probe_c, settings.seed)
        probe_pred = x_NM[test] @ weight + bias > 0
        result.probe_f1, result.probe_precision, result.probe_recall = f1_precision_recall(
            y[test], probe_pred
        )
        if result.probe_f1 >= settings.min_probe_f1:
            probes[c] = (weight, probe_pred)
    if not probes:
        return results
    # The L1 probe over all latents is trained for the kept categories only (its per-category
    # columns are independent; the L1 term is scaled as if every category were there).
    kept_ids = sorted(probes)
    ranking_KE = rank_latents_l1(
        sae_acts_NE[train_N], labels_NC[train_N][:, kept_ids], settings,
        l1_scale=len(kept_ids) / len(names),
    )  # fmt: skip
    for j, c in enumerate(kept_ids):
        result, y = results[c], labels[:, c]
        weight, probe_pred = probes[c]
        result.kept = True
        main, f1s, main_pred = k_sparse_main_latents(sae_acts_NE, y, train, ranking_KE[j], settings)
        result.main_latents, result.k_sparse_f1 = main, f1s
        probe_dir_M = torch.from_numpy(weight).float()
        probe_dir_M = probe_dir_M / probe_dir_M.norm().clamp_min(1e-12)
        cos_E = torch.nn.functional.cosine_similarity(W_dec_EM, probe_dir_M[None], dim=-1)
        test_ids = np.flatnonzero(test)
        true_pos = y[test] & probe_pred
        result.n_probe_true_positives = int(true_pos.sum())
        result.n_main_latent_true_positives = int((true_pos & main_pred).sum())
        for t in np.flatnonzero(true_pos):
            i = int(test_ids[t])
            result.words.append(
                word_absorption(
                    words[i], acts_NM[i], sae_acts_NE[i], probe_dir_M, cos_E, main, settings
                )
            )
        n = max(result.n_probe_true_positives, 1)
        result.full_absorption_rate = sum(w.full_absorption for w in result.words) / n
        result.mean_absorption_fraction = sum(w.absorption_fraction for w in result.words) / n
    return results


def mean_scores(results: Sequence[CategoryResult]) -> dict[str, Any]:
    kept = [r for r in results if r.kept and r.n_probe_true_positives > 0]

    def stats(values: list[float]) -> tuple[float | None, float | None]:
        if not values:
            return None, None
        return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0

    full = stats([r.full_absorption_rate for r in kept])
    frac = stats([r.mean_absorption_fraction for r in kept])
    n_main = stats([float(len(r.main_latents)) for r in kept])
    return {
        "n_categories": len(results),
        "n_kept": len(kept),
        "mean_full_absorption_score": full[0],
        "std_full_absorption_score": full[1],
        "mean_absorption_fraction_score": frac[0],
        "std_absorption_fraction_score": frac[1],
        "mean_num_main_latents": n_main[0],
        "dropped": {r.name: round(r.probe_f1, 4) for r in results if not r.kept},
    }


def absorption_records(results: Sequence[CategoryResult]) -> list[dict[str, Any]]:
    """(main latents, absorbing latent, tokens) records: one per category and absorber, the
    absorber being the top projecting latent of a fully absorbed word or a latent counted in a
    word's absorption fraction. Sorted by the number of tokens, most first."""
    records: dict[tuple[str, int], dict[str, Any]] = {}
    for r in results:
        for w in r.words:
            absorbers = set(w.absorbers)
            if w.full_absorption:
                absorbers.add(w.top_latents[0])
            for a in absorbers:
                rec = records.setdefault(
                    (r.name, a),
                    {"category": r.name, "main_latents": list(r.main_latents),
                     "absorbing_latent": a, "tokens": [], "full_absorption_tokens": []},
                )  # fmt: skip
                rec["tokens"].append(w.word)
                if w.full_absorption and a == w.top_latents[0]:
                    rec["full_absorption_tokens"].append(w.word)
    return sorted(records.values(), key=lambda rec: (-len(rec["tokens"]), rec["category"]))
