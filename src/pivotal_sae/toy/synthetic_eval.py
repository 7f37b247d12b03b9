"""Train our toy SAEs on a SAELens synthetic world and score them with SAELens's evaluation.

`eval_sae_on_synthetic_data` needs only `eval()`, `W_dec`, `encode` and `decode`, so
`FlatView` presents any of our architectures as one flat dictionary: TopK and Matryoshka as
they are, the hierarchical SAE as its parent latents followed by its child latents (a child's
decoder row is its offset from the parent, as the SAE decodes it today).

The absorption gap, generalised to the world's tree: for each parent feature, its best-matching
latent (decoder cosine) is silent on some share of the rows where the parent fires together
with one of its children, and on some share of the rows where it fires alone; the gap is the
difference. A flat SAE that absorbs the parent into its children has a large gap.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pivotal_sae.runs import atomic_save_torch
from pivotal_sae.saes.hierarchical import HierarchicalSae
from pivotal_sae.saes.matryoshka import MatryoshkaSae
from pivotal_sae.saes.topk import TopKSae, scatter_dense
from pivotal_sae.saes.toy_io import FLAT_ARCHITECTURES
from pivotal_sae.toy.worlds import parent_child_pairs

if TYPE_CHECKING:
    from sae_lens.synthetic import SyntheticModel


class FlatDictionary(Protocol):
    """What the absorption gap needs: decoder rows and a dense encoder."""

    @property
    def W_dec(self) -> Tensor: ...

    def encode(self, x_BM: Tensor) -> Tensor: ...


class FlatView(nn.Module):
    """Any toy SAE as the flat `encode`/`decode`/`W_dec` that SAELens's evaluation expects."""

    def __init__(self, sae: TopKSae) -> None:
        super().__init__()
        self.sae = sae

    @property
    def W_dec(self) -> Tensor:
        if isinstance(self.sae, HierarchicalSae):
            return torch.cat([self.sae.W_dec, self.sae.W_dec_child])
        return self.sae.W_dec

    def encode(self, x_BM: Tensor) -> Tensor:
        if isinstance(self.sae, HierarchicalSae):
            _, parent_acts_BE, child_acts_BH, _ = self.sae._forward_parts(x_BM)
            return torch.cat([parent_acts_BE, child_acts_BH], dim=1)
        out = self.sae(x_BM)
        return scatter_dense(out.values_BK, out.indices_BK, self.sae.d_sae)

    def decode(self, acts_BL: Tensor) -> Tensor:
        return torch.addmm(self.sae.b_dec, acts_BL, self.W_dec)


#: Bytes of dense feature activations one draw from a world may hold, on the CPU and on a GPU.
SAMPLE_CHUNK_BYTES = {"cpu": 256 * 2**20, "cuda": 2**30}


def sample_chunk_batches(
    world: SyntheticModel, batch_size: int, steps: int, chunk_bytes: int | None = None
) -> int:
    """How many batches to draw from the world at once. A draw has a fixed cost however small
    (~0.1 s of per-call work on 2 CPU cores; on a GPU, kernel launches and a host sync on the
    firing pattern), so draws are pooled up to `chunk_bytes` (default: `SAMPLE_CHUNK_BYTES` for
    the world's device) of the dense (rows x features) activations a draw builds, at most 64
    batches. Rows are independent, so this changes nothing but speed."""
    if chunk_bytes is None:
        device = world.activation_generator.firing_probabilities.device.type
        chunk_bytes = SAMPLE_CHUNK_BYTES.get(device, SAMPLE_CHUNK_BYTES["cpu"])
    per_batch = 4 * batch_size * world.cfg.num_features
    return max(1, min(steps, 64, chunk_bytes // per_batch))


#: Architectures whose training step has no host sync and fixed shapes, so that one step can be
#: captured as a CUDA graph and replayed (BatchTopK reads its batch's width back to the host).
GRAPH_SAFE = ("topk", "matryoshka")


def train_on_world(
    sae: TopKSae,
    world: SyntheticModel,
    samples: int,
    batch_size: int,
    lr: float,
    seed: int = 1,
    chunk_bytes: int | None = None,
    lr_decay: float = 0.0,
    max_seconds: float | None = None,
    cuda_graph: bool = False,
    checkpoint: Path | None = None,
    aux_k: int = 0,
    aux_k_coeff: float = 1 / 32,
    dead_share: float = 0.2,
    normalize_decoder: bool = False,
    level_aux: float = 0.0,
    dead_window: int = 1000,
    clip_grad_norm: float = 0.0,
) -> dict[str, float]:
    """Adam on the SAE's own reconstruction loss over fresh world batches; returns samples/s and
    the samples trained.

    The SAE is initialised with its decoder bias at the data mean (the world has a bias). With
    `lr_decay` > 0 the learning rate falls linearly to zero over that final share of the steps.
    `max_seconds` stops training early (the result's `samples` then says how many were used).
    `cuda_graph` (on a GPU, for the `GRAPH_SAFE` architectures; ignored otherwise) captures one
    training step as a CUDA graph after three eager steps and replays it for the rest: the same
    kernels on the same data, without their launch cost. Off by default: on an H100 it matched
    the eager step (`benchmarks/synth_throughput.py`; `tests/toy/test_worlds.py` on a GPU) but
    trained SynthSAEBench-16k no faster, since drawing the world's samples takes half the time.

    `checkpoint`: a run that `max_seconds` stops saves its SAE, optimizer, step and random
    state there (atomically), and a later call with the same arguments resumes from it and
    continues exactly where it stopped (it stops only between draws from the world, so the saved
    random state is the one the next draw needs); a run that finishes deletes it. The result's
    `samples_per_s` is then this call's, and `samples` the total.

    `aux_k` > 0 adds the toy lab's auxiliary-k loss (`toy/revival.py`, weight `aux_k_coeff`):
    latents firing below `dead_share` of their fair rate reconstruct what the live ones leave.
    It reads the dead count back to the host every step, so it trains without the CUDA graph.

    `normalize_decoder` rescales every decoder row to unit norm after each optimizer step, so a
    latent's activation is the size of its contribution; a BatchTopK selection then compares
    latents on one scale (SAELens gets the same by ranking pre-activations times decoder norms).
    It trains without the CUDA graph.

    `level_aux` > 0 (Matryoshka SAEs) adds SAELens's per-level auxiliary loss with that weight
    (`toy/level_aux.py`): latents silent for more than `dead_window` steps reconstruct what
    their level's prefix leaves over. It also trains without the CUDA graph.

    `clip_grad_norm` > 0 clips the gradient's total norm each step as SAELens's trainer does
    (at 1), in SAELens's units: its loss sums squared errors over dimensions and Matryoshka
    levels where ours averages, so the norm is compared after scaling our gradient by the input
    width times the number of levels. It trains without the CUDA graph."""
    from pivotal_sae.toy.level_aux import MATRYOSHKA_ARCHITECTURES, StepsSinceFired, level_aux_loss
    from pivotal_sae.toy.revival import DeadLatentTracker, aux_k_loss

    if level_aux and type(sae).architecture not in MATRYOSHKA_ARCHITECTURES:
        names = ", ".join(MATRYOSHKA_ARCHITECTURES)
        raise ValueError(f"the per-level auxiliary loss needs one of {names}")
    sae.train()  # scoring leaves it in eval mode, where BatchTopK selects by its threshold
    torch.manual_seed(seed)
    with torch.no_grad():
        sae.b_dec.copy_(world.sample(min(4096, samples or 1)).mean(0))
    device = sae.b_dec.device
    first_step = 0
    saved = None
    if checkpoint is not None and checkpoint.exists():  # random states must stay on the CPU
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    cuda_graph = (
        cuda_graph
        and device.type == "cuda"
        and type(sae).architecture in GRAPH_SAFE
        and not aux_k
        and not normalize_decoder
        and not level_aux
        and not clip_grad_norm
    )
    tracker = DeadLatentTracker(sae, dead_share) if aux_k else None
    since_fired = StepsSinceFired(sae.d_sae, device, dead_window) if level_aux else None
    # A capturable Adam reads its lr from a tensor, so a decay can change it between replays.
    lr_now: float | Tensor = torch.tensor(lr, device=device) if cuda_graph else lr
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr_now, capturable=cuda_graph)
    steps = math.ceil(samples / batch_size)
    run: dict[str, Any] = {
        "steps": steps, "batch_size": batch_size, "lr": lr, "lr_decay": lr_decay, "seed": seed,
        "sae": sae.config_dict(),  # a checkpoint resumes only the SAE it was saved from
    }  # fmt: skip
    if aux_k:
        run.update(aux_k=aux_k, aux_k_coeff=aux_k_coeff, dead_share=dead_share)
    if level_aux:
        run.update(level_aux=level_aux, dead_window=dead_window)
    if clip_grad_norm:
        run.update(clip_grad_norm=clip_grad_norm)
    # Our loss is SAELens's divided by the width and the number of Matryoshka levels.
    saelens_scale = sae.d_in * len(getattr(sae, "prefixes", (sae.d_sae,)))
    if normalize_decoder:
        run.update(normalize_decoder=True)
        sae.normalize_decoder_()
    if saved is not None:
        if saved["run"] != run:
            raise ValueError(f"checkpoint {checkpoint} is of another run; delete it to start over")
        sae.load_state_dict(saved["sae"])
        optimizer.load_state_dict(saved["optimizer"])
        for group in optimizer.param_groups:  # this call's settings, not the saved run's
            group["lr"], group["capturable"] = lr_now, cuda_graph
        for state in optimizer.state.values():  # Adam keeps its step on the GPU only if captured
            state["step"] = state["step"].to(device if cuda_graph else "cpu", torch.float32)
        set_lr(optimizer, lr)  # the schedule below sets the decayed lr
        first_step = saved["done"]
        if tracker is not None:
            tracker.load_state_dict(saved["dead_tracker"])
        if since_fired is not None:
            since_fired.load_state_dict(saved["since_fired"])
        torch.set_rng_state(saved["rng_cpu"])
        if device.type == "cuda":
            torch.cuda.set_rng_state(saved["rng_device"], device)
    decay_steps = math.ceil(lr_decay * steps)
    per_draw = sample_chunk_batches(world, batch_size, steps, chunk_bytes)

    def step_eagerly(x_BM: Tensor) -> Tensor:
        out = sae(x_BM)
        loss = sae.reconstruction_loss(x_BM, out)
        if tracker is not None:
            tracker.update(sae.firing_counts(out))
            loss = loss + aux_k_coeff * aux_k_loss(sae, x_BM, out, tracker.dead(), aux_k)
        if since_fired is not None:  # the dead of the steps before this one, as SAELens
            assert isinstance(sae, MatryoshkaSae)  # checked above; for the type checker
            loss = loss + level_aux * level_aux_loss(sae, x_BM, out, since_fired.dead())
            since_fired.update(sae.fired(out)["latent"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(sae.parameters(), clip_grad_norm / saelens_scale)
        optimizer.step()
        if normalize_decoder:
            sae.normalize_decoder_()
        return loss

    captured: tuple[torch.cuda.CUDAGraph, Tensor, Tensor] | None = None  # graph, input, loss
    start = time.perf_counter()
    batches: list[Tensor] = []
    done = first_step
    loss = torch.zeros(())
    for step in range(first_step, steps):
        if not batches:
            out_of_time = max_seconds is not None and time.perf_counter() - start > max_seconds
            if step > first_step and out_of_time:
                break
            batches = list(world.sample(per_draw * batch_size).split(batch_size))
        if decay_steps and step >= steps - decay_steps:
            set_lr(optimizer, lr * (steps - step) / decay_steps)
        x_BM = batches.pop()
        if captured is not None:
            captured[1].copy_(x_BM)
            captured[0].replay()
        elif cuda_graph and step == first_step + 3:
            captured = capture_step(sae, optimizer, x_BM)
            captured[0].replay()
        elif cuda_graph:
            # Warm-up steps on a side stream, as capture requires; they train like any other.
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                loss = step_eagerly(x_BM)
            torch.cuda.current_stream(device).wait_stream(side)
        else:
            loss = step_eagerly(x_BM)
        done = step + 1
    if captured is not None:
        loss = captured[2]
    if loss.is_cuda:
        torch.cuda.synchronize(loss.device)  # the clock stops when the GPU's work is done
    seconds = time.perf_counter() - start
    if checkpoint is not None and done < steps:
        state = {
            "sae": sae.state_dict(),
            "optimizer": optimizer.state_dict(),
            "done": done,
            "run": run,
            "rng_cpu": torch.get_rng_state(),
            "rng_device": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "dead_tracker": tracker.state_dict() if tracker is not None else None,
            "since_fired": since_fired.state_dict() if since_fired is not None else None,
        }
        atomic_save_torch(checkpoint, state)
    elif checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    return {
        "samples_per_s": (done - first_step) * batch_size / max(seconds, 1e-9),
        "samples": done * batch_size,
        "final_loss": loss.item(),
        "cuda_graph": float(captured is not None),
    }


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        if isinstance(group["lr"], Tensor):
            group["lr"].fill_(lr)  # in place: a captured step reads this tensor
        else:
            group["lr"] = lr


def capture_step(
    sae: TopKSae, optimizer: torch.optim.Optimizer, x_BM: Tensor
) -> tuple[torch.cuda.CUDAGraph, Tensor, Tensor]:
    """One training step (loss, backward, Adam) captured as a CUDA graph reading `static_x_BM`;
    nothing runs until the graph is replayed."""
    static_x_BM = x_BM.clone()
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)  # gradients then live in the graph's own memory
    with torch.cuda.graph(graph):
        static_loss = sae.reconstruction_loss(static_x_BM, sae(static_x_BM))
        static_loss.backward()
        optimizer.step()
    return graph, static_x_BM, static_loss


def dense_draws(
    world: SyntheticModel, samples: int, chunk: int = 5_000
) -> Iterator[tuple[Tensor, Tensor]]:
    """`samples` fresh rows of `world` in draws of at most `chunk`: (hidden, dense feature
    activations) per draw."""
    for start in range(0, samples, chunk):
        hidden_BM, feature_acts_BF = world.sample_with_features(min(chunk, samples - start))
        if feature_acts_BF.is_sparse:
            feature_acts_BF = feature_acts_BF.to_dense()
        yield hidden_BM, feature_acts_BF


@torch.no_grad()
def absorption_gap(
    sae: FlatDictionary, world: SyntheticModel, samples: int = 50_000, min_rows: int = 20
) -> dict[str, float]:
    """Mean over tree parents of P(best latent silent | parent with a child) minus
    P(silent | parent alone), over parents with at least `min_rows` rows of each kind.

    `sae` is anything with `W_dec` and `encode` (a `FlatView` or a SAELens SAE)."""
    pairs = parent_child_pairs(world)
    if not pairs:
        return {"absorption_gap": float("nan"), "parents_scored": 0.0}
    gt_FM = world.feature_dict.feature_vectors
    decoder_LM = sae.W_dec.to(gt_FM.device)
    cosine_FL = F.normalize(gt_FM, dim=1) @ F.normalize(decoder_LM, dim=1).T
    parents = sorted({p for p, _ in pairs})
    parent_index = {p: i for i, p in enumerate(parents)}
    # children_PF[i, f]: feature f is a child of parents[i]
    device = gt_FM.device
    children_PF = torch.zeros(len(parents), gt_FM.shape[0], dtype=torch.bool)
    for p, c in pairs:
        children_PF[parent_index[p], c] = True
    children_PF = children_PF.to(device)
    parents_P = torch.tensor(parents, device=device)
    best_latent_P = cosine_FL[parents_P].argmax(dim=1)
    # with child, silent with child, alone, silent alone
    counts = torch.zeros(4, len(parents), device=device)
    for hidden_BM, feature_acts_BF in dense_draws(world, samples):
        active_BF = feature_acts_BF != 0
        silent_BP = sae.encode(hidden_BM)[:, best_latent_P.to(hidden_BM.device)].to(device) == 0
        parent_on_BP = active_BF[:, parents_P]
        child_on_BP = (active_BF.float() @ children_PF.T.float()) > 0
        with_child_BP = parent_on_BP & child_on_BP
        alone_BP = parent_on_BP & ~child_on_BP
        counts[0] += with_child_BP.sum(0)
        counts[1] += (with_child_BP & silent_BP).sum(0)
        counts[2] += alone_BP.sum(0)
        counts[3] += (alone_BP & silent_BP).sum(0)
    scored = (counts[0] >= min_rows) & (counts[2] >= min_rows)
    if not scored.any():
        return {"absorption_gap": float("nan"), "parents_scored": 0.0}
    silent_with_child = counts[1][scored] / counts[0][scored]
    silent_alone = counts[3][scored] / counts[2][scored]
    return {
        "absorption_gap": (silent_with_child - silent_alone).mean().item(),
        "silent_with_child": silent_with_child.mean().item(),
        "silent_alone": silent_alone.mean().item(),
        "parents_scored": float(scored.sum().item()),
    }


#: Architectures a threshold readout (`toy/readout.py`) applies to: one flat TopK-family layer.
READOUT_ARCHS = FLAT_ARCHITECTURES


def scoring_view(sae: nn.Module, world: SyntheticModel, readout: str = "trained") -> Any:
    """The flat dictionary the scores read, in eval mode: the SAE as trained, or a flat
    TopK-family SAE with thresholds calibrated for `readout` (`toy/readout.py`)."""
    from pivotal_sae.toy.readout import readout_view

    sae.eval()
    view: Any = FlatView(sae) if isinstance(sae, TopKSae) else sae
    if readout != "trained":
        if not isinstance(sae, TopKSae) or type(sae).architecture not in READOUT_ARCHS:
            raise ValueError(f"readout {readout!r} needs one of {', '.join(READOUT_ARCHS)}")
        view = readout_view(sae, world, readout)
    return view


def score_on_world(
    sae: nn.Module,
    world: SyntheticModel,
    samples: int = 50_000,
    readout: str = "trained",
    view: Any = None,
) -> dict[str, Any]:
    """SAELens's synthetic evaluation plus the absorption gap, as one flat dict. `readout`
    (`toy/readout.py`) reads a flat TopK-family SAE out with calibrated thresholds instead;
    `view` (from `scoring_view`) reuses a calibration."""
    from sae_lens.synthetic import eval_sae_on_synthetic_data

    if view is None:
        view = scoring_view(sae, world, readout)
    with torch.no_grad():
        result = eval_sae_on_synthetic_data(
            view,
            world.feature_dict,
            world.activation_generator,
            num_samples=samples,
            batch_size=5_000,
        )
    scores: dict[str, Any] = {
        "f1": result.classification.f1_score,
        "precision": result.classification.precision,
        "recall": result.classification.recall,
        "mcc": result.mcc,
        "uniqueness": result.uniqueness,
        "explained_variance": result.explained_variance,
        "l0": result.sae_l0,
        "true_l0": result.true_l0,
        "dead_latents": result.dead_latents,
        "shrinkage": result.shrinkage,
    }
    scores.update(absorption_gap(view, world, samples=samples))
    return scores


@torch.no_grad()
def latent_report(
    sae: nn.Module,
    world: SyntheticModel,
    samples: int = 50_000,
    readout: str = "trained",
    view: Any = None,
) -> dict[str, list[float]]:
    """Per latent, as SAELens's F1 sees it: the best-matching feature (decoder cosine), that
    feature's base firing probability (before the hierarchy gates it), true and false positives
    and false negatives over `samples` fresh rows, and the latent's mean activation on its true
    and on its false positives. `view` (from `scoring_view`) reuses a calibration."""
    if view is None:
        view = scoring_view(sae, world, readout)
    gt_FM = world.feature_dict.feature_vectors
    decoder_LM = view.W_dec.to(gt_FM.device)
    cosine_LF = F.normalize(decoder_LM, dim=1) @ F.normalize(gt_FM, dim=1).T
    best_cos_L, match_L = cosine_LF.abs().max(dim=1)
    stats = torch.zeros(5, decoder_LM.shape[0], device=gt_FM.device)  # tp fp fn act_tp act_fp
    for hidden_BM, feature_acts_BF in dense_draws(world, samples):
        acts_BL = view.encode(hidden_BM).to(gt_FM.device)
        fires_BL = acts_BL != 0
        truth_BL = feature_acts_BF[:, match_L] > 0
        stats[0] += (fires_BL & truth_BL).sum(0)
        stats[1] += (fires_BL & ~truth_BL).sum(0)
        stats[2] += (~fires_BL & truth_BL).sum(0)
        stats[3] += torch.where(fires_BL & truth_BL, acts_BL, 0).sum(0)
        stats[4] += torch.where(fires_BL & ~truth_BL, acts_BL, 0).sum(0)
    probability_F = world.activation_generator.firing_probabilities.to(gt_FM.device)
    return {
        "match": match_L.tolist(),
        "cosine": best_cos_L.tolist(),
        "match_probability": probability_F[match_L].tolist(),
        "tp": stats[0].tolist(),
        "fp": stats[1].tolist(),
        "fn": stats[2].tolist(),
        "mean_act_tp": (stats[3] / stats[0].clamp_min(1)).tolist(),
        "mean_act_fp": (stats[4] / stats[1].clamp_min(1)).tolist(),
    }
