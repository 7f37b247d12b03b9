"""The PNG plots of a toy run (SPEC §1, Outputs), drawn with matplotlib's Agg canvas.

Figures are built on `matplotlib.figure.Figure` directly (no pyplot state) at a modest dpi and
reused from round to round, so a round of plots costs about 0.2 s at the seed example.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from pivotal_sae.curves import plain_label
from pivotal_sae.saes.hierarchical import HierarchicalSae
from pivotal_sae.saes.topk import TopKSae
from pivotal_sae.toy.data import ToyFeatures
from pivotal_sae.toy.metrics import cosine_sims, nearest_children, pair_detected

DPI = 90
CMAP = "RdYlBu_r"


def _figure(width: float, height: float):  # -> matplotlib.figure.Figure
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    # Fixed margins: constrained/tight layouts measure every tick label, the bulk of the cost.
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.12, top=0.92)
    return fig


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    # No bbox_inches="tight" (it draws the figure twice); light compression (level 6 took a
    # quarter of a round for files ~15% smaller).
    fig.savefig(tmp, dpi=DPI, pil_kwargs={"compress_level": 1})
    tmp.replace(path)


class RunPlots:
    """Draws one run's plots, round after round, into `directory`.

    Each figure is kept between rounds and only its data replaced: building a figure (axes,
    ticks, colorbar) was a third of the cost of a round.
    """

    def __init__(self, directory: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")  # no display, no pyplot state
        import matplotlib.figure  # most of the ~0.7 s import, paid at set-up

        self.directory = directory
        self._figures: dict[str, tuple[Any, Any, Any]] = {}  # name -> figure, axes, artist

    def finish(self, run_dir: Path, summary: dict[str, Any]) -> None:
        """The run's curves (`plots/curves.png`, from metrics.jsonl) and `plots/index.html`."""
        from pivotal_sae.curves import write_run_plots  # matplotlib figures, at the end only

        shown = ("pair_detection_rate", "absorption_rate", "val_reconstruction_mse", "steps")
        facts = {plain_label(k): summary[k] for k in shown if summary.get(k) is not None}
        write_run_plots(run_dir, f"Toy run {run_dir.name}", facts)

    def feature_similarity(self, features: ToyFeatures) -> None:
        children_CM = features.children_CM
        self._heatmap(
            "",
            "feature_vs_feature",
            cosine_sims(children_CM, children_CM),
            "True child features vs each other (cosine)",
            "true child feature (siblings side by side)",
            "true child feature",
            features.n_children,
            features.n_children,
        )

    @torch.no_grad()
    def round(self, step: int, sae: TopKSae, features: ToyFeatures) -> None:
        """The plots of one evaluation: `step_NNNNNNN_*.png`."""
        prefix = f"step_{step:07d}_"
        group = 1 + sae.n_children if isinstance(sae, HierarchicalSae) else 1
        rows_GM = latent_groups(sae)
        sims_GC = cosine_sims(rows_GM, features.children_CM)
        what = (
            "each parent latent, then its children as parent + scaled child direction"
            if group > 1
            else "each latent's decoder direction"
        )
        common = (
            "true child feature (siblings side by side)",
            f"latent ({what})",
            group,
            features.n_children,
        )
        title = f"Step {step}: latent directions vs true child features"
        self._heatmap(prefix, "decoder_vs_features", sims_GC, title, *common)
        order = group_order(sae, features)
        rows_sorted = sims_GC.view(-1, group, sims_GC.shape[1])[order].flatten(0, 1)
        self._heatmap(
            prefix,
            "decoder_vs_features_sorted",
            rows_sorted,
            f"Step {step}: latents sorted by the true feature they match best",
            *common,
        )
        self._heatmap(
            prefix,
            "latent_vs_latent",
            cosine_sims(rows_GM, rows_GM),
            f"Step {step}: latent directions vs each other (cosine)",
            f"latent ({what})",
            f"latent ({what})",
            group,
            group,
        )
        self._norms(prefix, step, sae, features)

    def _heatmap(
        self,
        prefix: str,
        kind: str,
        sims: Float[Tensor, "R C"],
        title: str,
        xlabel: str,
        ylabel: str,
        row_group: int = 1,
        col_group: int = 1,
    ) -> None:
        """`{prefix}{kind}.png`: cosine similarities in [-1, 1], with lines between groups of
        rows and of columns."""
        data = sims.detach().cpu().numpy()
        if kind in self._figures:
            fig, ax, image = self._figures[kind]
            image.set_data(data)
        else:
            rows, cols = data.shape
            fig = _figure(min(3 + cols * 0.08, 16), min(2.5 + rows * 0.06, 16))
            ax = fig.add_subplot()
            image = ax.imshow(
                data, cmap=CMAP, vmin=-1, vmax=1, aspect="auto", interpolation="nearest"
            )
            fig.colorbar(image, ax=ax, label="cosine similarity")
            # Group boundaries as two line collections, not one artist per line.
            if col_group > 1:
                xs = [x - 0.5 for x in range(col_group, cols, col_group)]
                ax.vlines(xs, -0.5, rows - 0.5, colors="black", linewidth=0.4)
            if row_group > 1:
                ys = [y - 0.5 for y in range(row_group, rows, row_group)]
                ax.hlines(ys, -0.5, cols - 0.5, colors="black", linewidth=0.4)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            self._figures[kind] = (fig, ax, image)
        ax.set_title(title)
        _save(fig, self.directory / f"{prefix}{kind}.png")

    def _norms(self, prefix: str, step: int, sae: TopKSae, features: ToyFeatures) -> None:
        """Decoder norms per latent group; hierarchical groups blue where pair detection
        succeeded, else red."""
        if isinstance(sae, HierarchicalSae):
            n = sae.n_children
            scaled_ENM = (sae.W_dec_child * sae.child_ratio_H[:, None]).view(sae.d_sae, n, -1)
            parts = [sae.W_dec[:, None, :], sae.W_dec_child.view(sae.d_sae, n, -1), scaled_ENM]
            parts.append(sae.child_directions_ENM(adjusted=True))
            norms = torch.cat(parts, dim=1).norm(dim=-1)  # (E, groups)
            nearest_EN = nearest_children(sae.child_directions_ENM(), features.children_CM)
            ok_E = pair_detected(nearest_EN, n)
            width = norms.shape[1]
            xs = [e * (width + 1) + j for e in range(sae.d_sae) for j in range(width)]
            colors = [
                ("tab:blue" if ok else "tab:red") for ok in ok_E.tolist() for _ in range(width)
            ]
            xlabel = (
                f"each parent latent: its direction, its {n} child directions, those scaled by "
                "their firing ratio, and parent + scaled child; blue = its children found "
                "both siblings, red = not"
            )
        else:
            norms = sae.W_dec.norm(dim=-1)
            xs, colors = list(range(sae.d_sae)), ["tab:gray"] * sae.d_sae
            xlabel = "latent"
        heights = norms.flatten().tolist()
        if "decoder_norms" not in self._figures:
            fig = _figure(10, 4)
            ax = fig.add_subplot()
            # Bars as one line collection: hundreds of bar patches made this the slowest plot.
            lines = ax.vlines(xs, 0, heights, linewidth=2.5)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("direction length (norm)")
            self._figures["decoder_norms"] = (fig, ax, lines)
        fig, ax, lines = self._figures["decoder_norms"]
        lines.set_segments([[(x, 0.0), (x, h)] for x, h in zip(xs, heights, strict=True)])
        lines.set_color(colors)
        ax.set_ylim(0, 1.05 * max(max(heights), 1e-6))
        ax.set_title(f"Step {step}: length of each decoder direction")
        _save(fig, self.directory / f"{prefix}decoder_norms.png")


def latent_groups(sae: TopKSae) -> Float[Tensor, "G M"]:
    """Rows to plot: flat SAEs their decoder rows; hierarchical groups of [d_e, d_e + r d_en...]."""
    if not isinstance(sae, HierarchicalSae):
        return sae.W_dec
    children_ENM = sae.child_directions_ENM(adjusted=True)
    return torch.cat([sae.W_dec[:, None, :], children_ENM], dim=1).flatten(0, 1)


def group_order(sae: TopKSae, features: ToyFeatures) -> Tensor:
    """Latent groups ordered by the ground-truth parent (flat: child) they match best."""
    if isinstance(sae, HierarchicalSae):
        sims_ENC = cosine_sims(sae.child_directions_ENM().flatten(0, 1), features.children_CM)
        sims_EC = sims_ENC.view(sae.d_sae, sae.n_children, -1).mean(dim=1)
        match = sims_EC.view(sae.d_sae, features.n_parents, -1).mean(dim=-1).argmax(dim=-1)
    else:
        match = cosine_sims(sae.W_dec, features.children_CM).argmax(dim=-1)
    return match.argsort(stable=True)
