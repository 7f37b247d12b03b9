"""A re-creation of the original research code's toy training loop and its costs (the baseline
of `toy_train_speed.py`); written for this benchmark, not imported by the package.

What it keeps from the original (`train_topk_sae_toy.py`, `common/sae.py`, `common/toy_dataset.py`
of TheodoreEhrenborg/pivotal_sae), because each is a cost of that loop:
- the 2-child SAE as six `torch.nn.Linear` modules, TopK parents without ReLU, masked children,
  winner by comparison, the number of live latents counted with `.unique()`/`.item()` in every
  forward, the EMA ratio update and the alignment loss computed in every training forward;
- runtime shape checking (`jaxtyping` + `beartype` decorators) on the same functions;
- the dataset summing dense (batch, features, dim) tensors, as its `compute_result2` did;
- per step: six scalars to TensorBoard; every 10 steps: min/mean MMCS (plain and adjusted) and
  pair detection (plain and adjusted) with a Python loop over latents, each call recomputing the
  child features and the broadcast cosine similarities; every 5000 steps: a 10,000-row validation
  forward for dead latents, a safetensors save and the heatmaps at 1200 dpi (four 12x5-inch
  heatmaps plus the norm bars). seaborn is not a dependency here, so heatmaps are matplotlib
  `pcolormesh` grids of the same size and dpi, which is what seaborn's heatmap draws.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange, reduce, repeat
from jaxtyping import Float, jaxtyped

try:
    from beartype import beartype as typechecker
except ImportError:  # pragma: no cover - the original always had beartype
    typechecker = None

EMA = 0.01


def checked(fn):
    return jaxtyped(typechecker=typechecker)(fn) if typechecker else fn


class OriginalDataset:
    def __init__(self, n_features: int, pert: float, model_dim: int, k: int, seed: int) -> None:
        torch.manual_seed(seed)
        self.n_features, self.k = n_features, k
        feats = torch.randn(n_features, model_dim)
        self.features = feats / feats.norm(dim=1, keepdim=True)
        raw = torch.randn(n_features, 2, model_dim)
        self.perturbations = pert * raw / raw.norm(dim=2, keepdim=True)

    def generate(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        order = torch.rand(batch_size, self.n_features).argsort(dim=1)
        active = torch.zeros(batch_size, self.n_features, dtype=torch.bool)
        active.scatter_(1, order[:, : self.k], True)
        choices = torch.randint(0, 2, (batch_size, self.n_features))
        return compute_result(active, choices, self.features, self.perturbations), active.sum()


@checked
def compute_result(
    active: torch.Tensor,
    choices: torch.Tensor,
    features: Float[torch.Tensor, "A M"],
    perturbations: Float[torch.Tensor, "A two M"],
) -> Float[torch.Tensor, "B M"]:
    index = repeat(torch.arange(active.shape[1]), "a -> b a", b=active.shape[0])
    expanded = repeat(features, "a m -> b a m", b=active.shape[0])
    return ((expanded + perturbations[index, choices]) * active[..., None]).sum(dim=1)


class OriginalHierarchicalSae(torch.nn.Module):
    def __init__(self, hidden: int, model_dim: int, k: int) -> None:
        super().__init__()
        self.encoder = torch.nn.Linear(model_dim, hidden)
        self.decoder = torch.nn.Linear(hidden, model_dim)
        self.encoder_child1 = torch.nn.Linear(model_dim, hidden)
        self.decoder_child1 = torch.nn.Linear(hidden, model_dim)
        self.encoder_child2 = torch.nn.Linear(model_dim, hidden)
        self.decoder_child2 = torch.nn.Linear(hidden, model_dim)
        self.k = k
        self.child1_parent_ratios = torch.ones(hidden)
        self.child2_parent_ratios = torch.ones(hidden)

    @checked
    def forward(self, x: Float[torch.Tensor, "B M"]):
        pre = self.encoder(x)
        topk = torch.topk(pre, self.k)
        acts = torch.scatter(torch.zeros_like(pre), 1, topk.indices, topk.values)
        live_parents = len(topk.indices.unique())
        pre1, pre2 = self.encoder_child1(x), self.encoder_child2(x)
        masked1 = torch.where(acts != 0.0, pre1, torch.zeros_like(pre1))
        masked2 = torch.where(acts != 0.0, pre2, torch.zeros_like(pre2))
        wins1 = masked1 > masked2
        child1 = torch.where(wins1, masked1, torch.zeros_like(masked1))
        child2 = torch.where(~wins1, masked2, torch.zeros_like(masked2))
        live1 = torch.sum(torch.any(child1 != 0, dim=0)).item()
        live2 = torch.sum(torch.any(child2 != 0, dim=0)).item()
        recon = self.decoder(acts) + self.decoder_child1(child1) + self.decoder_child2(child2)
        if self.training:
            with torch.no_grad():
                update_ratios(acts, child1, child2, self.child1_parent_ratios,
                              self.child2_parent_ratios)  # fmt: skip
        aux = alignment_loss(acts.detach(), wins1.detach(), child1.detach(), child2.detach(),
                             self.decoder.weight, self.decoder_child1.weight,
                             self.decoder_child2.weight)  # fmt: skip
        return recon, (live_parents, live1, live2), aux


@checked
def update_ratios(
    parent: Float[torch.Tensor, "B E"],
    child1: Float[torch.Tensor, "B E"],
    child2: Float[torch.Tensor, "B E"],
    ratios1: Float[torch.Tensor, " E"],
    ratios2: Float[torch.Tensor, " E"],
) -> None:
    for child, ratios in ((child1, ratios1), (child2, ratios2)):
        both = (parent != 0) & (child != 0)
        new = torch.where(both, child / parent, torch.zeros_like(child))
        counts = both.sum(dim=0)
        means = new.sum(dim=0) / torch.clamp(counts, min=1)
        update = counts > 0
        ratios[update] = (1 - EMA) * ratios[update] + EMA * means[update]


@checked
def alignment_loss(
    parent: Float[torch.Tensor, "B E"],
    wins1: torch.Tensor,
    child1: Float[torch.Tensor, "B E"],
    child2: Float[torch.Tensor, "B E"],
    dec: Float[torch.Tensor, "M E"],
    dec1: Float[torch.Tensor, "M E"],
    dec2: Float[torch.Tensor, "M E"],
) -> Float[torch.Tensor, ""]:
    scaled_parent = dec.unsqueeze(0) * parent.unsqueeze(1)
    scaled_child = torch.where(
        wins1.unsqueeze(1),
        dec1.unsqueeze(0) * child1.unsqueeze(1),
        dec2.unsqueeze(0) * child2.unsqueeze(1),
    )
    cos = F.cosine_similarity(scaled_parent, scaled_parent + scaled_child, dim=1)
    return (-cos * (parent > 0)).sum() / parent.shape[0]


@checked
def reconstruction_loss(a: Float[torch.Tensor, "B M"], b: Float[torch.Tensor, "B M"]):
    return ((a - b) ** 2).mean()


def child_features(dataset: OriginalDataset) -> torch.Tensor:
    vecs = rearrange(dataset.features, "a m -> a 1 m") + dataset.perturbations
    return rearrange(vecs, "a c m -> (a c) m")


def cosine(weights_MD: torch.Tensor, children_CM: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(
        rearrange(weights_MD, "m d -> d 1 m"), rearrange(children_CM, "c m -> 1 c m"), dim=2
    )


def child_directions(sae: OriginalHierarchicalSae, adjusted: bool) -> torch.Tensor:
    r1 = sae.child1_parent_ratios if adjusted else 1.0
    r2 = sae.child2_parent_ratios if adjusted else 1.0
    return rearrange(
        [sae.decoder.weight + sae.decoder_child1.weight * r1,
         sae.decoder.weight + sae.decoder_child2.weight * r2],
        "copies m e -> m (e copies)",
    )  # fmt: skip


def mmcs(sae: OriginalHierarchicalSae, dataset: OriginalDataset, adjusted: bool, how: str) -> float:
    sims = cosine(child_directions(sae, adjusted), child_features(dataset))
    return reduce(sims, "d c -> c", "max").__getattribute__(how)()


def pair_detection(sae: OriginalHierarchicalSae, dataset: OriginalDataset, adjusted: bool) -> float:
    sims = cosine(child_directions(sae, adjusted), child_features(dataset))
    hits = 0
    for latent in range(sims.shape[0] // 2):
        a, b = torch.argmax(sims[2 * latent]), torch.argmax(sims[2 * latent + 1])
        if a != b and abs(a - b) == 1 and min(a, b) % 2 == 0:
            hits += 1
    return hits / (sims.shape[0] // 2)


def heatmaps(sae: OriginalHierarchicalSae, dataset: OriginalDataset, out: Path, step: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    children = child_features(dataset)
    dec = sae.decoder.weight
    panels = {
        "similarity": torch.cat([dec, sae.decoder_child1.weight, sae.decoder_child2.weight,
                                 child_directions(sae, False), child_directions(sae, True),
                                 sae.encoder.weight.T, sae.encoder_child1.weight.T,
                                 sae.encoder_child2.weight.T], dim=1),
        "sorted_similarity": torch.cat([dec, child_directions(sae, True)], dim=1),
        "legible_similarity": torch.cat([dec, child_directions(sae, True)], dim=1),
    }  # fmt: skip
    with torch.no_grad():
        for name, weights in panels.items():
            plt.figure(figsize=(12, 5))
            plt.pcolormesh(cosine(weights, children).numpy(), cmap="RdYlBu_r", vmin=-1, vmax=1)
            plt.colorbar()
            plt.savefig(out / f"{name}_heatmap{step}.png", dpi=1200, bbox_inches="tight")
            plt.close()
        latents = torch.cat([dec, child_directions(sae, True)], dim=1)
        plt.figure(figsize=(12, 5))
        plt.pcolormesh(cosine(latents, latents.T).numpy(), cmap="RdYlBu_r", vmin=-1, vmax=1)
        plt.savefig(out / f"latent_heatmap{step}.png", dpi=1200, bbox_inches="tight")
        plt.close()
        plt.figure(figsize=(10, 6))
        plt.bar(range(latents.shape[1]), latents.norm(dim=0).numpy())
        plt.savefig(out / f"norms_{step}.png", bbox_inches="tight")
        plt.close()


def run_original(steps: int, out: Path, seed: int = 1) -> dict[str, float]:
    """The loop, with the seed example's settings; returns wall seconds (total, of which plots)
    and CPU seconds."""
    import matplotlib
    from safetensors.torch import save_model
    from torch.utils.tensorboard import SummaryWriter

    matplotlib.use("Agg")
    import matplotlib.pyplot  # imported before the clock starts, as the job does

    out.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(str(out))
    dataset = OriginalDataset(30, 0.4, 50, 3, seed)
    sae = OriginalHierarchicalSae(30, 50, 3)
    optimizer = torch.optim.Adam(sae.parameters(), lr=1e-4)
    plot_seconds = 0.0
    began, cpu_began = time.perf_counter(), time.process_time()
    for step in range(steps):
        sae.train()
        example, n_active = dataset.generate(100)
        optimizer.zero_grad()
        recon, _, aux = sae(example)
        rec = reconstruction_loss(recon, example)
        total = 0.0 * aux + rec
        total.backward()
        optimizer.step()
        sae.eval()
        if step % 5000 == 0:
            plot_began = time.perf_counter()
            save_model(sae, str(out / f"{step}.safetensors"))
            heatmaps(sae, dataset, out, step)
            plot_seconds += time.perf_counter() - plot_began
            with torch.no_grad():
                val, _ = dataset.generate(10_000)
                _, live, _ = sae(val)
                for name, n in zip(("parent", "child1", "child2"), live, strict=True):
                    writer.add_scalar(f"Num dead {name} latents", 30 - n, step)
        writer.add_scalar("Activated ground-truth features", n_active / 100, step)
        if step % 10 == 0:
            with torch.no_grad():
                writer.add_scalar("Min MMCS", mmcs(sae, dataset, False, "min"), step)
                writer.add_scalar("Mean MMCS", mmcs(sae, dataset, False, "mean"), step)
                writer.add_scalar("Adjusted Min MMCS", mmcs(sae, dataset, True, "min"), step)
                writer.add_scalar("Adjusted Mean MMCS", mmcs(sae, dataset, True, "mean"), step)
                writer.add_scalar("Pair detection", pair_detection(sae, dataset, False), step)
                writer.add_scalar(
                    "Adjusted pair detection", pair_detection(sae, dataset, True), step
                )
        writer.add_scalar("lr", 1e-4, step)
        writer.add_scalar("sae_hidden_dim", 30, step)
        writer.add_scalar("Total loss/train", total, step)
        writer.add_scalar("Reconstruction loss/train", rec, step)
        writer.add_scalar("Auxiliary loss/train", aux, step)
    writer.close()
    seconds = time.perf_counter() - began
    cpu_seconds = time.process_time() - cpu_began
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "plot_seconds": plot_seconds}
