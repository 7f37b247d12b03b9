"""Tree SAE: the hierarchical SAE generalised to forests of any depth beside a flat part.

SynthSAEBench's worlds hold trees three deep whose siblings are mutually exclusive, next to
features that belong to no tree. The tree SAE mirrors that: every latent has a parent latent or
none (`parents`, -1 for none). Latents without a parent, tree roots and flat latents alike, are
chosen by a BatchTopK selection (a learned threshold at inference, as in `batchtopk.py`) that
keeps `k` per row on average minus the children that fire (a moving average, coefficient 0.1,
of children firing per row), so that the whole tree's L0 comes to about `k`. Below them, level
by level, SPEC §1's child rule applies: among the children of a firing latent only the one with
the largest pre-activation survives, and only if positive (at inference too: the threshold
stands in for the top level's selection only). A latent whose parent is silent is silent. The
reconstruction is the decoder bias plus every firing latent's activation times its decoder row.

The loss is Matryoshka's over nested prefixes (`matryoshka.py`): a 32nd, an 8th, half and all of
the top level, then each level added in turn. The top level must reconstruct without the
children, as the hierarchical SAE's parents do with `--parent-recon-coeff`, so a root cannot
leave its general direction to its children (on the small world, 300,000 samples: F1 0.36 with
the plain loss, 0.48 with this one at depth 2, 0.66 at depth 1: docs/toy.md).

Latents are numbered level by level (all roots and flat latents first, then their children,
then grandchildren), so a level is a contiguous slice and parents precede children. Gradients go
through autograd: this is the general path; the seed world's two-level SAE keeps its
hand-written one (`hierarchical.py`, `toy/step.py`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pivotal_sae.saes.batchtopk import MatryoshkaBatchTopKSae, keep_above
from pivotal_sae.saes.topk import ToySaeOutput

CHILD_RATE_EMA_COEFF = 0.1


def tree_parents(top: int, roots: int, branching: int, depth: int) -> tuple[int, ...]:
    """Parents of a regular forest: `top` parentless latents, the first `roots` of them each
    carrying `branching` children per latent for `depth` levels below; -1 marks no parent."""
    if not 0 <= roots <= top:
        raise ValueError(f"tree roots ({roots}) must lie between 0 and the top level ({top})")
    parents = [-1] * top
    level = list(range(roots))
    for _ in range(depth):
        children: list[int] = []
        for parent in level:
            for _ in range(branching):
                children.append(len(parents))
                parents.append(parent)
        level = children
    return tuple(parents)


def forest_size(roots: int, branching: int, depth: int) -> int:
    """Latents in `roots` regular trees (roots included)."""
    return roots * sum(branching**d for d in range(depth + 1))


def level_slices(parents: tuple[int, ...]) -> list[tuple[int, int]]:
    """(start, end) of each level; raises unless levels are contiguous and parents precede."""
    depth_of: list[int] = []
    for index, parent in enumerate(parents):
        if parent >= index:
            raise ValueError(f"latent {index}'s parent {parent} must come before it")
        depth_of.append(0 if parent < 0 else depth_of[parent] + 1)
    if depth_of != sorted(depth_of):
        raise ValueError("tree latents must be numbered level by level")
    slices: list[tuple[int, int]] = []
    for index, depth in enumerate(depth_of):
        if depth == len(slices):
            slices.append((index, index + 1))
        else:
            slices[-1] = (slices[-1][0], index + 1)
    return slices


def tree_prefixes(levels: list[tuple[int, int]]) -> tuple[int, ...]:
    """Nested prefixes of the tree's Matryoshka loss: a 32nd, an 8th and half of the top level,
    and the end of every level (the top level alone, then with children, ...)."""
    top = levels[0][1]
    return tuple(
        sorted({max(1, top // 32), max(1, top // 8), max(1, top // 2)} | {end for _, end in levels})
    )


class TreeSae(MatryoshkaBatchTopKSae):
    architecture = "tree"
    parent_L: Tensor
    child_rate: Tensor
    #: Constructor options of this architecture beyond the common ones (`toy_io.build_toy_sae`).
    own_options: tuple[str, ...] = ("parents",)

    def __init__(
        self, d_in: int, d_sae: int, k: int, parents: tuple[int, ...] | None = None, **options: Any
    ) -> None:
        parents = tuple(parents) if parents is not None else (-1,) * d_sae
        if len(parents) != d_sae:
            raise ValueError(f"a tree SAE of {d_sae} latents needs {d_sae} parents")
        self.levels = level_slices(parents)
        self.parents = parents
        top = self.levels[0][1]
        if not 1 <= k <= top:
            raise ValueError(f"k ({k}) must lie between 1 and the top level's {top} latents")
        super().__init__(d_in, d_sae, k, prefixes=tree_prefixes(self.levels), **options)
        self.register_buffer("parent_L", torch.tensor(parents, dtype=torch.long))
        self.register_buffer("child_rate", torch.zeros(()))

    def batch_k(self) -> float:
        # At least one top-level latent per row on average, however often children fire.
        return max(1.0, self.k - float(self.child_rate))

    def tree_acts(self, pre_acts_BL: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Dense activations of every latent, and the top level's (values, indices)."""
        top = self.levels[0][1]
        values_BK, indices_BK = self.select(pre_acts_BL[:, :top])
        level_acts = [torch.zeros_like(pre_acts_BL[:, :top]).scatter(1, indices_BK, values_BK)]
        for (start, end), (parent_start, _) in zip(self.levels[1:], self.levels, strict=False):
            pre_BD = pre_acts_BL[:, start:end]
            parent_D = (self.parent_L[start:end] - parent_start).expand_as(pre_BD)
            parent_on_BD = level_acts[-1].gather(1, parent_D) > 0
            sibling_max_BP = torch.full_like(level_acts[-1], float("-inf")).scatter_reduce(
                1, parent_D, pre_BD.detach(), "amax"
            )
            wins_BD = pre_BD >= sibling_max_BP.gather(1, parent_D)
            level_acts.append(torch.where(parent_on_BD & wins_BD & (pre_BD > 0), pre_BD, 0.0))
        if self.training and len(level_acts) > 1:
            with torch.no_grad():
                children = torch.stack([(acts > 0).sum() for acts in level_acts[1:]]).sum()
                self.child_rate.lerp_(children / pre_acts_BL.shape[0], CHILD_RATE_EMA_COEFF)
        return torch.cat(level_acts, dim=1), values_BK, indices_BK

    def forward(self, x_BM: Tensor) -> ToySaeOutput:
        pre_acts_BL = torch.addmm(self.b_enc, x_BM, self.W_enc)
        acts_BL, _, _ = self.tree_acts(pre_acts_BL)
        recon_BM = torch.addmm(self.b_dec, acts_BL, self.W_dec)
        values_BK, indices_BK = keep_above(acts_BL, torch.finfo(acts_BL.dtype).tiny)
        return ToySaeOutput(recon_BM, values_BK, indices_BK, pre_acts_BL)

    @torch.no_grad()
    def set_to_ground_truth_(self, directions_LM: Tensor, bias_M: Tensor, threshold: float) -> None:
        """Decoder rows = the latents' feature directions, encoder = their transpose with the
        bias taken off, decoder bias = the world's bias: exact when directions are orthonormal.
        Children's encoder biases are lowered by `threshold` too, so that rounding noise on the
        rows where no sibling is present does not fire one."""
        self.W_dec.copy_(directions_LM)
        self.W_enc.copy_(directions_LM.T)
        self.b_enc.copy_(-(bias_M @ directions_LM.T))
        self.b_enc[self.levels[0][1] :].sub_(threshold)
        self.b_dec.copy_(bias_M)
        self.threshold.fill_(threshold)

    def config_dict(self) -> dict[str, object]:
        return {**super().config_dict(), "parents": list(self.parents)}


def forest_parents(width: int, roots: int, branching: int, depth: int) -> tuple[int, ...]:
    """`width` latents: `roots` regular trees and, beside them at the top level, flat latents
    filling the rest."""
    forest = forest_size(roots, branching, depth)
    if forest > width:
        raise ValueError(
            f"{roots} trees of branching {branching} and depth {depth} need {forest} latents, "
            f"more than the width {width}"
        )
    return tree_parents(width - forest + roots, roots, branching, depth)
