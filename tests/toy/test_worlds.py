"""SAELens synthetic worlds: the small world, our SAEs scored by SAELens's evaluation, and the
`toy train --world` CLI's refusals."""

from __future__ import annotations

import json
import math
import os
import tempfile

import pytest
import torch
from benchmark_loader import load_benchmark
from safetensors.torch import load_file

from pivotal_sae.cli import main
from pivotal_sae.saes.toy_io import build_toy_sae
from pivotal_sae.saes.tree import TreeSae, forest_parents
from pivotal_sae.toy import worlds
from pivotal_sae.toy.readout import calibrate_thresholds
from pivotal_sae.toy.synthetic_eval import (
    latent_report,
    sample_chunk_batches,
    score_on_world,
    train_on_world,
)

SMALL = "synthsaebench-small"


@pytest.fixture(scope="module")
def world_cache():
    # One build (~10 s on 2 cores) shared by every test here, never the user's cache; not under
    # pytest's basetemp, which concurrent pytest runs on this machine prune.
    before = os.environ.get("PIVOTAL_SAE_CACHE")
    with tempfile.TemporaryDirectory(prefix="pivotal-worlds-") as cache:
        os.environ["PIVOTAL_SAE_CACHE"] = cache
        yield cache
    if before is None:
        del os.environ["PIVOTAL_SAE_CACHE"]
    else:
        os.environ["PIVOTAL_SAE_CACHE"] = before


@pytest.fixture(autouse=True)
def _shared_world_cache(world_cache, monkeypatch):
    # After conftest's per-test private cache, so every test here shares the one build.
    monkeypatch.setenv("PIVOTAL_SAE_CACHE", world_cache)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Steps this small cost thread hand-offs, not arithmetic: on a busy 2-core machine two
    # threads made them 20x slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small_world(world_cache):
    return worlds.load_world(SMALL)


def test_small_world_is_cached_and_has_a_tree(small_world):
    assert small_world.feature_dict.feature_vectors.shape == (512, 64)
    assert (worlds.world_dir(SMALL) / "synthetic_model_config.json").exists()
    again = worlds.load_world(SMALL)
    assert torch.equal(again.feature_dict.feature_vectors, small_world.feature_dict.feature_vectors)
    pairs = worlds.parent_child_pairs(small_world)
    parents = {p for p, _ in pairs}
    assert len(pairs) > len(parents) > 4  # roots and inner nodes, branching up to 4


def test_regenerated_world_statistics(small_world):
    stats = worlds.world_statistics(small_world, samples=20_000, top=64)
    assert 1 < stats["mean_l0"] < 20
    assert 0 < stats["mean_l0_top"] <= stats["mean_l0"]
    whole = worlds.world_statistics(small_world, samples=20_000, top=4096)
    assert whole["mean_l0_top"] == pytest.approx(whole["mean_l0"])


@pytest.mark.parametrize(
    "arch", ["topk", "batchtopk", "matryoshka", "matryoshka-batchtopk", "hierarchical", "tree"]
)
def test_each_architecture_trains_and_is_scored_by_saelens(arch, small_world):
    # The tree SAE: one tree of branching 4 and depth 2 (21 latents) beside 43 flat latents.
    parents = forest_parents(64, 1, 4, 2) if arch == "tree" else None
    sae = build_toy_sae(arch, 64, 64, 5, n_children=4, parents=parents)
    # 200 steps of 32 rows: enough to learn something, cheap on 2 cores.
    speed = train_on_world(sae, small_world, samples=6_400, batch_size=32, lr=3e-3)
    assert speed["samples_per_s"] > 0
    scores = score_on_world(sae, small_world, samples=10_000)
    for name in ("f1", "precision", "recall", "mcc", "uniqueness"):
        assert 0 <= scores[name] <= 1, name
    assert 0 < scores["l0"] < 20 and 0.2 < scores["explained_variance"] <= 1
    assert scores["dead_latents"] < 64
    assert math.isfinite(scores["absorption_gap"]) and scores["parents_scored"] > 0


def test_train_on_world_decays_the_lr_and_stops_on_time(small_world, monkeypatch):
    """The last `lr_decay` share of steps runs at lr * (steps left / decay steps); a time cap
    stops at the next 256-step check and says how many samples were used."""
    seen: list[float] = []
    step = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    sae = build_toy_sae("topk", 64, 16, 3)
    out = train_on_world(sae, small_world, samples=320, batch_size=32, lr=1e-3, lr_decay=0.5)
    assert out["samples"] == 320
    assert seen == pytest.approx([1e-3] * 5 + [1e-3 * (10 - s) / 5 for s in range(5, 10)])
    seen.clear()
    per_draw = sample_chunk_batches(small_world, 32, 600)
    out = train_on_world(sae, small_world, samples=32 * 600, batch_size=32, lr=1e-3, max_seconds=0)
    assert 1 < per_draw < 600 and out["samples"] == 32 * per_draw and len(seen) == per_draw


@pytest.mark.parametrize(
    ("arch", "aux_k", "level_aux"),
    [("topk", 0, 0.0), ("matryoshka", 0, 0.0), ("batchtopk", 4, 0.0),
     ("matryoshka-batchtopk", 0, 1.0)],
)  # fmt: skip
def test_a_stopped_run_resumes_from_its_checkpoint_to_the_same_sae(
    small_world, tmp_path, arch, aux_k, level_aux
):
    """Stopped after every draw (max_seconds 0) and resumed from the checkpoint each time, with
    an lr decay across the stops (and the dead-latent tracker of the aux-k loss): the same
    parameters as one uninterrupted run."""
    checkpoint = tmp_path / "run.pt"
    kwargs = dict(
        samples=32 * 23, batch_size=32, lr=3e-3, seed=4, lr_decay=0.6, chunk_bytes=3 * 4 * 32 * 512,
        aux_k=aux_k, dead_share=1.0, level_aux=level_aux, dead_window=2,
    )  # fmt: skip
    trained = []
    for stops in (False, True):
        calls = 0
        while True:
            sae = build_toy_sae(arch, 64, 16, 3, generator=torch.Generator().manual_seed(2))
            if level_aux:  # four latents start silent, so the per-level loss has work
                with torch.no_grad():
                    sae.b_enc[12:] = -100.0
            out = train_on_world(
                sae, small_world, **kwargs, max_seconds=0 if stops else None,
                checkpoint=checkpoint if stops else None,
            )  # fmt: skip
            calls += 1
            if out["samples"] == 32 * 23:
                break
            assert checkpoint.exists() and out["samples"] == 32 * 3 * calls
            if aux_k and calls == 4:  # the aux-k loss has dead latents to work on
                rates = torch.load(checkpoint, weights_only=True)["dead_tracker"]["latent"]
                assert (rates < 3 / 16).any()  # below the fair rate: dead at share 1
            if level_aux and calls == 4:  # the per-level loss has dead latents to work on
                since = torch.load(checkpoint, weights_only=True)["since_fired"]["since_E"]
                assert (since > 2).any()
        assert calls == (8 if stops else 1) and not checkpoint.exists()
        trained.append(sae.state_dict())  # buffers too: BatchTopK's threshold
    for name, straight in trained[0].items():
        torch.testing.assert_close(trained[1][name], straight, rtol=0, atol=0)


def test_the_aux_k_loss_revives_dead_latents_on_a_world(small_world):
    dead, f1 = [], []
    for aux_k in (0, 32):
        sae = build_toy_sae(
            "matryoshka-batchtopk", 64, 256, 5, prefixes=(8, 32, 128, 256),
            generator=torch.Generator().manual_seed(1),
        )  # fmt: skip
        train_on_world(sae, small_world, 100_000, 256, 3e-3, seed=1, aux_k=aux_k)
        scores = score_on_world(sae, small_world, samples=10_000)
        dead.append(scores["dead_latents"])
        f1.append(scores["f1"])
    assert dead[0] >= 3 and dead[1] == 0  # measured: 6 and 0 (F1 0.454 and 0.485)
    assert f1[1] > f1[0]


@pytest.mark.parametrize("arch", ["matryoshka-batchtopk", "tree"])
def test_normalize_decoder_keeps_every_decoder_row_at_unit_norm(small_world, arch):
    sae = build_toy_sae(
        arch, 64, 30, 4, parents=(-1,) * 26 + (0, 0, 1, 1) if arch == "tree" else None,
        generator=torch.Generator().manual_seed(3),
    )  # fmt: skip
    with torch.no_grad():  # start off unit norm, so the first step's projection shows too
        for rows in sae.decoder_rows().values():
            rows.mul_(3.0)
    train_on_world(sae, small_world, 32 * 5, 32, 3e-2, seed=2, normalize_decoder=True)
    for rows in sae.decoder_rows().values():
        torch.testing.assert_close(rows.norm(dim=-1), torch.ones(rows.shape[0]))


def test_clip_grad_norm_clips_in_saelens_units(small_world, monkeypatch):
    """Every step's gradient, scaled by width x levels (SAELens's sums against our means), has
    total norm at most the clip; without clipping it is larger."""
    norms: list[float] = []
    step = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        grads = [p.grad for group in self.param_groups for p in group["params"]]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    for clip in (0.0, 0.05):
        sae = build_toy_sae("matryoshka", 64, 16, 3, prefixes=(4, 8))
        train_on_world(sae, small_world, 32 * 6, 32, 1e-3, clip_grad_norm=clip)
    scale = 64 * 3  # width x levels (4, 8, 16)
    free, clipped = norms[:6], norms[6:]
    assert min(free) * scale > 0.05  # so the clip acts on every step
    assert max(clipped) * scale == pytest.approx(0.05, rel=1e-4)


def test_level_aux_needs_a_matryoshka(small_world):
    with pytest.raises(ValueError, match="needs one of matryoshka"):
        train_on_world(
            build_toy_sae("batchtopk", 64, 16, 3), small_world, 64, 32, 1e-3, level_aux=1.0
        )


def test_a_checkpoint_of_another_run_is_refused(small_world, tmp_path):
    checkpoint = tmp_path / "run.pt"
    kwargs = dict(samples=32 * 9, batch_size=32, seed=4, chunk_bytes=3 * 4 * 32 * 512)
    sae = build_toy_sae("topk", 64, 16, 3)
    train_on_world(sae, small_world, lr=3e-3, max_seconds=0, checkpoint=checkpoint, **kwargs)
    with pytest.raises(ValueError, match="of another run"):
        train_on_world(sae, small_world, lr=1e-3, checkpoint=checkpoint, **kwargs)
    other = build_toy_sae("topk", 64, 16, 3, rank_by_norm=True)  # same run, another SAE
    with pytest.raises(ValueError, match="of another run"):
        train_on_world(other, small_world, lr=3e-3, checkpoint=checkpoint, **kwargs)
    assert checkpoint.exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("arch", ["topk", "matryoshka"])
def test_graphed_training_matches_eager(arch, small_world):
    """The replayed CUDA graph of a step against plain eager steps: same seed, same draws."""
    world = worlds.load_world(SMALL, device="cuda")
    trained = []
    for graph in (False, True):
        sae = build_toy_sae(arch, 64, 64, 5, generator=torch.Generator().manual_seed(3)).cuda()
        out = train_on_world(sae, world, 32 * 40, 32, 3e-3, seed=5, lr_decay=0.5, cuda_graph=graph)
        assert out["cuda_graph"] == float(graph)
        trained.append(dict(sae.named_parameters()))
    for name, eager in trained[0].items():
        torch.testing.assert_close(trained[1][name], eager, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def trained_topk(small_world):
    sae = build_toy_sae("topk", 64, 64, 5, generator=torch.Generator().manual_seed(3))
    train_on_world(sae, small_world, 20_000, 256, 3e-3, seed=3)
    return sae


@pytest.mark.parametrize("readout", ["global", "latent"])
def test_calibrated_thresholds_match_a_sorted_reference_and_keep_k(
    readout, trained_topk, small_world
):
    sae, rows = trained_topk, 3_000
    torch.manual_seed(11)
    thresholds_E = calibrate_thresholds(sae, small_world, readout, samples=rows, chunk=1_000)
    # Reference: the same draws, one row and one latent at a time, and a plain sort.
    torch.manual_seed(11)
    x_NM = torch.cat([small_world.sample(1_000) for _ in range(3)])
    with torch.no_grad():
        pre_NE = (x_NM @ sae.W_enc + sae.b_enc).relu()
    scale = [1.0] * sae.d_sae
    if readout == "latent":
        sums, counts = [0.0] * sae.d_sae, [0] * sae.d_sae
        for row in pre_NE.tolist():
            for e in sorted(range(sae.d_sae), key=lambda e: -row[e])[: sae.k]:
                if row[e] > 0:
                    sums[e] += row[e]
                    counts[e] += 1
        scale = [sums[e] / counts[e] if counts[e] else math.inf for e in range(sae.d_sae)]
    ratios = sorted(
        (v / scale[e] for row in pre_NE.tolist() for e, v in enumerate(row)), reverse=True
    )
    alpha = ratios[sae.k * rows - 1]
    expected = torch.tensor([alpha * s for s in scale])
    assert torch.allclose(thresholds_E, expected, rtol=1e-5)
    kept = ((pre_NE >= thresholds_E) & (pre_NE > 0)).sum().item()
    assert kept == pytest.approx(sae.k * rows, abs=5)  # exact but for ties
    fresh = score_on_world(sae, small_world, samples=5_000, readout=readout)
    assert fresh["l0"] == pytest.approx(sae.k, rel=0.1)
    trained = score_on_world(sae, small_world, samples=5_000)
    assert trained["l0"] == pytest.approx(sae.k)


def test_a_readout_refuses_the_hierarchical_sae(small_world):
    sae = build_toy_sae("hierarchical", 64, 8, 2, n_children=4)
    with pytest.raises(ValueError, match="readout 'global' needs one of"):
        score_on_world(sae, small_world, samples=1_000, readout="global")


def test_latent_report_counts_as_a_loop_over_latents_does(trained_topk, small_world):
    sae, rows = trained_topk, 2_000
    torch.manual_seed(5)
    report = latent_report(sae, small_world, samples=rows)
    torch.manual_seed(5)
    hidden_NM, features_NF = small_world.sample_with_features(rows)
    features_NF = features_NF.to_dense() if features_NF.is_sparse else features_NF
    with torch.no_grad():
        out = sae(hidden_NM)
    acts_NE = torch.zeros(rows, sae.d_sae).scatter(1, out.indices_BK, out.values_BK)
    gt_FM = small_world.feature_dict.feature_vectors
    for e in range(sae.d_sae):
        cosines = [
            abs(torch.nn.functional.cosine_similarity(sae.W_dec[e], gt_FM[f], dim=0).item())
            for f in range(gt_FM.shape[0])
        ]
        match = max(range(len(cosines)), key=cosines.__getitem__)
        assert report["match"][e] == match
        fires, truth = acts_NE[:, e] != 0, features_NF[:, match] > 0
        assert report["tp"][e] == (fires & truth).sum().item()
        assert report["fp"][e] == (fires & ~truth).sum().item()
        assert report["fn"][e] == (~fires & truth).sum().item()
        if (fires & truth).any():
            mean_tp = acts_NE[fires & truth, e].mean().item()
            assert report["mean_act_tp"][e] == pytest.approx(mean_tp, rel=1e-4)


def test_handcoded_tree_sae_recovers_a_tree_world():
    """Trees two deep (2 roots, 3 mutually exclusive children each, 9 grandchildren) beside 14
    flat features, orthonormal directions: the tree SAE set to the ground truth scores 1."""
    from sae_lens.synthetic import (
        HierarchyConfig,
        SyntheticModel,
        SyntheticModelConfig,
        ZipfianFiringProbabilityConfig,
    )

    config = SyntheticModelConfig(
        num_features=40,
        hidden_dim=48,
        firing_probability=ZipfianFiringProbabilityConfig(
            exponent=0.5, max_prob=0.4, min_prob=0.05
        ),
        hierarchy=HierarchyConfig(
            total_root_nodes=2,
            branching_factor=3,
            max_depth=2,
            mutually_exclusive_portion=1.0,
            compensate_probabilities=True,
        ),
        std_firing_magnitudes=0.5,
        mean_firing_magnitudes=4.0,
        bias=0.5,
        seed=3,
    )
    world = SyntheticModel(config)
    orthonormal_MF, _ = torch.linalg.qr(
        torch.randn(48, 40, generator=torch.Generator().manual_seed(0))
    )
    world.feature_dict.feature_vectors.data = orthonormal_MF.T.contiguous()
    features, parents = worlds.world_forest(world)
    assert sorted(features) == list(range(40)) and parents.count(-1) == 2 + 14
    assert max(parents) >= 16  # grandchildren hang under children
    sae = build_toy_sae("tree", 48, 40, 3, parents=parents)
    assert isinstance(sae, TreeSae)
    vectors_LM = world.feature_dict.feature_vectors.detach()[features]
    sae.set_to_ground_truth_(vectors_LM, world.feature_dict.bias.detach(), threshold=1e-3)
    scores = score_on_world(sae, world, samples=5_000)
    assert scores["mcc"] > 0.999 and scores["f1"] > 0.999 and scores["explained_variance"] > 0.99
    assert scores["l0"] == pytest.approx(scores["true_l0"])


def test_cli_trains_on_a_world(tmp_path, small_world):
    out = tmp_path / "run"
    args = ["--world", SMALL, "--arch", "tree", "--tree-roots", "1", "--sae-hidden-dim", "64"]
    args += ["--sae-k", "5", "--normalize-decoder", "--aux-k", "4"]
    args += ["--max-step", "5", "--batch-size", "64", "--device", "cpu", "--no-plots"]
    assert main(["toy", "train", *args, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world"] == SMALL and 0 <= summary["mcc"] <= 1
    config = json.loads((out / "sae" / "cfg.json").read_text())
    assert config["architecture"] == "tree" and config["parents"].count(-1) == 64 - 20
    W_dec = load_file(out / "sae" / "sae_weights.safetensors")["W_dec"]
    torch.testing.assert_close(W_dec.norm(dim=-1), torch.ones(64))


BAD_WORLDS = [
    (["--world", "atlantis"], "unknown --world"),
    (["--world", SMALL, "--sae-hidden-dim", "600"], "exceeds --world"),
    (["--world", "synthsaebench-16k", "--sae-hidden-dim", "64"], "GiB to build"),
    (["--arch", "tree"], "needs a synthetic --world"),
    (["--world", SMALL, "--arch", "tree", "--sae-hidden-dim", "20"], "fewer top-level"),
]


@pytest.mark.parametrize(("args", "needle"), BAD_WORLDS)
def test_bad_world_is_one_line_exit_2_and_writes_nothing(
    args, needle, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(worlds, "available_memory_bytes", lambda: 1 << 30)
    out = tmp_path / "run"
    full = ["toy", "train", *args, "--device", "cpu", "--out", str(out)]
    assert main(full) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_benchmark_writes_a_table_for_ours_and_saelens(tmp_path, small_world, capsys):
    out = tmp_path / "bench"
    args = ["--world", SMALL, "--budget-samples", "3200", "--width", "64", "--batch-size", "32"]
    args += ["--lr", "3e-3", "--l0", "5", "--arch", "batchtopk", "tree", "saelens-batchtopk"]
    args += ["--tree-roots", "1", "--readouts", "trained", "latent", "--latent-report"]
    args += ["--device", "cpu", "--eval-samples", "10000", "--stats-samples", "5000"]
    assert load_benchmark().main([*args, "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["world_statistics"]["mean_l0"] > 1
    archs = [row["arch"] for row in results["rows"]]
    assert archs == ["batchtopk", "batchtopk+latent", "tree-d2", "saelens-batchtopk"]
    reports = json.loads((out / "latents.json").read_text())
    assert sorted(reports) == ["batchtopk-l05+latent", "batchtopk-l05+trained"]
    assert len(reports["batchtopk-l05+latent"]["tp"]) == 64
    summary = load_benchmark("synth_latent_report")
    assert "world statistics" in capsys.readouterr().out
    written = [str(out / "latents.json"), "--plot", str(tmp_path / "acts.png")]
    assert summary.main([*written, "--json", str(tmp_path / "summary.json")]) == 0
    saved = json.loads((tmp_path / "summary.json").read_text())["batchtopk-l05+trained"]
    assert sum(saved["latents_by_mean_act_tp"]) <= 64 and len(saved["by_quartile"]) == 5
    printed = capsys.readouterr().out
    # The summary's "all" F1 is the mean per-latent F1 of the report's own counts.
    report = reports["batchtopk-l05+trained"]
    f1s = []
    for tp, fp, fn in zip(report["tp"], report["fp"], report["fn"], strict=True):
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        f1s.append(2 * p * r / (p + r) if p + r else 0.0)
    assert f"| all | {sum(f1s) / len(f1s):.3f} |" in printed.split("batchtopk-l05+trained")[1]
    assert (tmp_path / "acts.png").stat().st_size > 1000
    assert summary.main([str(tmp_path / "missing.json")]) == 2
    assert summary.main([str(out / "latents.json"), "--only", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "Traceback" not in err
    for row in results["rows"]:
        for key in ("f1", "mcc", "uniqueness", "explained_variance", "dead_latents"):
            assert math.isfinite(row[key]), key
        assert row["samples_per_s"] > 0 and row["explained_variance"] > 0
    table = (out / "results.md").read_text()
    assert "| saelens-batchtopk | 5 |" in table


def test_benchmark_takes_saelens_choices_in_the_flat_family_only(tmp_path, small_world):
    out = tmp_path / "bench"
    args = ["--world", SMALL, "--budget-samples", "3200", "--width", "64", "--batch-size", "32"]
    args += ["--lr", "3e-3", "--l0", "5", "--arch", "matryoshka-batchtopk", "tree"]
    args += ["--tree-roots", "1", "--rank-by-norm", "--decoder-init-norm", "0.1"]
    args += ["--level-aux", "1", "--clip-grad-norm", "1"]  # SAELens's published choices
    args += ["--device", "cpu", "--eval-samples", "5000", "--stats-samples", "2000"]
    assert load_benchmark().main([*args, "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["rank_by_norm"] is True and results["decoder_init_norm"] == 0.1
    assert results["level_aux"] == 1 and results["clip_grad_norm"] == 1
    assert [row["arch"] for row in results["rows"]] == ["matryoshka-batchtopk", "tree-d2"]
    for row in results["rows"]:
        assert 0 < row["f1"] <= 1 and row["explained_variance"] > 0


def test_benchmark_resumes_a_saelens_reference_across_calls(tmp_path, small_world):
    """--train-seconds stops SAELens's BatchTopK after its first pooled draw; the same command
    again resumes it from --checkpoint-dir, and the last call's row has the whole budget."""
    ckpt = tmp_path / "ckpt"
    args = ["--world", SMALL, "--budget-samples", "8192", "--width", "64", "--batch-size", "32"]
    args += ["--l0", "5", "--arch", "saelens-batchtopk", "--device", "cpu", "--eval-samples"]
    args += ["2000", "--stats-samples", "1000", "--train-seconds", "1e-6", "--checkpoint-dir"]
    samples = []
    for call in range(10):
        out = tmp_path / f"call{call}"
        assert load_benchmark().main([*args, str(ckpt), "--out", str(out)]) == 0
        (row,) = json.loads((out / "results.json").read_text())["rows"]
        samples.append(row["samples"])
        assert row["loop"].startswith("SAETrainer steps") and math.isfinite(row["f1"])
        if row["samples"] == 8192:
            break
    per_draw = samples[0] // 32
    assert 1 < per_draw < 256 and samples == [
        32 * per_draw * (i + 1) for i in range(len(samples) - 1)
    ] + [8192]
    assert not (ckpt / "saelens-batchtopk-l05-seed1").exists()


BAD_BENCHMARKS = [
    (["--world", "atlantis"], "unknown --world"),
    (["--world", SMALL, "--arch", "resnet"], "unknown --arch"),
    (["--world", SMALL, "--width", "600"], "exceeds --world"),
    (["--world", "synthsaebench-16k", "--width", "64"], "GiB to build"),
    (["--world", SMALL, "--budget-samples", "many"], "invalid int value"),
    (["--world", SMALL, "--width", "64", "--arch", "tree"], "--tree-roots"),
    (["--world", SMALL, "--lr-decay", "1.5"], "--lr-decay must be in [0, 1]"),
    (["--world", SMALL, "--train-seconds", "-1"], "--train-seconds must be at least 0"),
    (["--world", SMALL, "--checkpoint-dir", __file__], "is not a directory"),
    (["--world", SMALL, "--tf32"], "--tf32 needs --device cuda"),
    (["--world", SMALL, "--cuda-graph"], "--cuda-graph needs --device cuda"),
    (["--world", SMALL, "--readouts", "median"], "unknown --readouts"),
    (["--world", SMALL, "--saelens-recipe", "fast"], "invalid choice"),
    (["--world", SMALL, "--aux-k", "5000"], "--aux-k must be between 0 and --width"),
    (["--world", SMALL, "--aux-k-coeff", "-1"], "--aux-k-coeff must be at least 0"),
    (["--world", SMALL, "--decoder-init-norm", "0"], "--decoder-init-norm must be > 0"),
    (["--world", SMALL, "--level-aux", "-1"], "--level-aux must be at least 0"),
    (["--world", SMALL, "--clip-grad-norm", "-1"], "--clip-grad-norm must be at least 0"),
    (["--world", SMALL, "--decoder-init-norm", "nan"], "--decoder-init-norm must be > 0"),
]


@pytest.mark.parametrize(("args", "needle"), BAD_BENCHMARKS)
def test_benchmark_bad_input_is_one_line_exit_2_and_writes_nothing(
    args, needle, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(worlds, "available_memory_bytes", lambda: 1 << 30)
    out = tmp_path / "bench"
    assert load_benchmark().main([*args, "--device", "cpu", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err
    assert not out.exists()


def test_the_learning_curve_is_drawn_from_the_recorded_runs(tmp_path):
    curve = load_benchmark("synth_learning_curve")
    matryoshka = curve.points("matryoshka (ours)")
    assert matryoshka[0][0] == 5e6 and matryoshka[-1][0] == pytest.approx(2e8, rel=1e-4)
    assert matryoshka[-1][1] == pytest.approx(0.813, abs=5e-4)  # F1 of the 200M run
    batchtopk_selection = curve.points("matryoshka-batchtopk (ours)")
    assert [p[0] for p in batchtopk_selection] == pytest.approx(
        [5e6, 89.3e6, 181.5e6, 2e8], rel=1e-3
    )
    assert batchtopk_selection[-1][1:] == pytest.approx((0.823, 0.787), abs=5e-4)
    assert curve.main(["--out", str(tmp_path / "curve.png")]) == 0
    assert (tmp_path / "curve.png").stat().st_size > 1000


def saelens_runner_config(world, arch: str, samples: int):
    from sae_lens.config import LoggingConfig
    from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAEConfig
    from sae_lens.saes.matryoshka_batchtopk_sae import MatryoshkaBatchTopKTrainingSAEConfig
    from sae_lens.synthetic.synthetic_sae_runner import SyntheticSAERunnerConfig

    d_in = world.cfg.hidden_dim
    sae_cfg = (
        MatryoshkaBatchTopKTrainingSAEConfig(
            d_in=d_in, d_sae=32, k=3, matryoshka_widths=[8, 16, 32], use_matryoshka_aux_loss=True
        )
        if arch == "matryoshka"
        else BatchTopKTrainingSAEConfig(d_in=d_in, d_sae=32, k=3)
    )
    return SyntheticSAERunnerConfig(
        synthetic_model=world.cfg, sae=sae_cfg, training_samples=samples, batch_size=16, lr=3e-3,
        device="cpu", dead_feature_window=5, output_path=None, checkpoint_path=None,
        run_final_eval=False, logger=LoggingConfig(log_to_wandb=False),
    )  # fmt: skip


@pytest.mark.parametrize("arch", ["batchtopk", "matryoshka"])
def test_saelens_reference_trained_stepwise_is_the_runners_sae(small_world, arch):
    """One draw per batch: the same SAE, bit for bit, as `SyntheticSAERunner.run()` trains
    (a dead-feature window of 5 steps, so the aux losses work on dead latents too)."""
    from sae_lens.synthetic.synthetic_sae_runner import SyntheticSAERunner

    from pivotal_sae.toy.saelens_reference import train_saelens_reference

    cfg = saelens_runner_config(small_world, arch, samples=16 * 40)
    torch.manual_seed(5)
    runner_sae = SyntheticSAERunner(cfg, override_synthetic_model=small_world).run().sae
    out = train_saelens_reference(saelens_runner_config(small_world, arch, 16 * 40), small_world, 5)
    assert out["samples"] == 16 * 40
    for name, value in runner_sae.state_dict().items():
        torch.testing.assert_close(out["sae"].state_dict()[name], value, rtol=0, atol=0)


def test_saelens_reference_stopped_and_resumed_is_the_uninterrupted_sae(small_world, tmp_path):
    """Pooled draws (4 batches each), stopped after every second draw and resumed from the
    checkpoint: the same SAE as one uninterrupted run with the same pooling."""
    from pivotal_sae.toy.saelens_reference import train_saelens_reference

    samples, checkpoint = 16 * 30, tmp_path / "btk"
    straight = train_saelens_reference(
        saelens_runner_config(small_world, "matryoshka", samples), small_world, 7, per_draw=4
    )["sae"]
    calls = 0
    while True:
        out = train_saelens_reference(
            saelens_runner_config(small_world, "matryoshka", samples), small_world, 7,
            per_draw=4, checkpoint=checkpoint, stop_after_draws=2,
        )  # fmt: skip
        calls += 1
        if out["samples"] == samples:
            break
        assert (checkpoint / "run.pt").exists() and out["samples"] == 16 * 8 * calls
    assert calls == 4 and not checkpoint.exists()
    for name, value in straight.state_dict().items():
        torch.testing.assert_close(out["sae"].state_dict()[name], value, rtol=0, atol=0)
    other = saelens_runner_config(small_world, "batchtopk", samples)
    train_saelens_reference(other, small_world, 7, checkpoint=checkpoint, stop_after_draws=1)
    with pytest.raises(ValueError, match="another run"):
        train_saelens_reference(
            saelens_runner_config(small_world, "matryoshka", samples), small_world, 7,
            checkpoint=checkpoint,
        )  # fmt: skip
