"""Synthetic activations with planted parent/child features and their ground truth (SPEC §1, Data).

`A` parents are random unit directions in `R^M`. Parent `a` owns `n_children` (N) children;
child `(a, n)` is `parent_a + perturbation_an`, the perturbation a random direction scaled to
`perturbation_size`. Child features are numbered parent-major, `c = a * N + n`, so siblings are
consecutive (the convention of the original code and of every plot here).

A sample picks `dataset_k` distinct parents uniformly and one child of each uniformly, and sums
the chosen child features. With `parent_only_prob > 0` an active parent instead contributes its
bare direction with that probability: the setting where flat SAEs absorb parents into children.

Randomness comes only from `torch.Generator`s passed in, always on the CPU, so a stream is the
same on every device and a checkpointed generator state resumes it exactly.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor


@dataclass(frozen=True)
class ToyFeatures:
    """The ground-truth dictionary: parent directions and each parent's child perturbations."""

    parents_AM: Float[Tensor, "A M"]
    perturbations_ANM: Float[Tensor, "A N M"]

    @property
    def n_parents(self) -> int:
        return self.parents_AM.shape[0]

    @property
    def n_children(self) -> int:
        return self.perturbations_ANM.shape[1]

    @property
    def children_CM(self) -> Float[Tensor, "C M"]:
        """Child features `parent + perturbation`, parent-major (siblings consecutive)."""
        return (self.parents_AM[:, None, :] + self.perturbations_ANM).flatten(0, 1)

    @functools.cached_property
    def table_DM(self) -> Float[Tensor, "D M"]:
        """Child features (C rows) followed by the bare parents (A rows)."""
        return torch.cat([self.children_CM, self.parents_AM])

    def to(self, device: torch.device | str) -> ToyFeatures:
        return ToyFeatures(self.parents_AM.to(device), self.perturbations_ANM.to(device))


def make_features(
    n_parents: int,
    n_children: int,
    model_dim: int,
    perturbation_size: float,
    generator: torch.Generator,
) -> ToyFeatures:
    parents_AM = torch.randn(n_parents, model_dim, generator=generator)
    parents_AM = parents_AM / parents_AM.norm(dim=-1, keepdim=True)
    raw_ANM = torch.randn(n_parents, n_children, model_dim, generator=generator)
    perturbations_ANM = perturbation_size * raw_ANM / raw_ANM.norm(dim=-1, keepdim=True)
    return ToyFeatures(parents_AM, perturbations_ANM)


class SampleChoices(NamedTuple):
    """The random decisions behind a batch, before any feature vector is added up.

    `K` here is `dataset_k`, the number of active parents per sample.
    """

    parents_BK: Int[Tensor, "B K"]
    """Distinct active parents of each row."""
    child_slots_BK: Int[Tensor, "B K"]
    """Which of its children each active parent chose (0..N-1)."""
    parent_only_BK: Bool[Tensor, "B K"]
    """Whether that parent fires alone, with no child."""


class ToyBatch(NamedTuple):
    """Samples plus the ground truth of which features produced them."""

    x_BM: Float[Tensor, "B M"]
    parent_on_BA: Bool[Tensor, "B A"]
    """Parent `a` is active in row `b` (with or without a child)."""
    child_on_BC: Bool[Tensor, "B C"]
    """Child feature `c` is present in row `b`."""


#: Up to this many k-subsets of the parents are tabulated, so a row's parents are one table
#: lookup; beyond it they come from a top-k over random keys.
MAX_TABULATED_SUBSETS = 250_000


@functools.cache
def parent_subsets(n_parents: int, dataset_k: int) -> Int[Tensor, "S K"] | None:
    """Every `dataset_k`-subset of the parents, one per row (ascending), or None if too many."""
    if math.comb(n_parents, dataset_k) > MAX_TABULATED_SUBSETS:
        return None
    subsets = list(itertools.combinations(range(n_parents), dataset_k))
    return torch.tensor(subsets, dtype=torch.long).view(len(subsets), dataset_k)


def draw_choices(
    batch_size: int,
    n_parents: int,
    n_children: int,
    dataset_k: int,
    parent_only_prob: float,
    generator: torch.Generator,
) -> SampleChoices:
    subsets_SK = parent_subsets(n_parents, dataset_k)
    if subsets_SK is not None:
        # A uniform row of the table of all k-subsets is a uniform k-subset. A top-k over
        # random keys gives the same distribution but costs ~0.3 µs a row on fresh keys (its
        # branches mispredict), most of the cost of a toy batch.
        rows_B = torch.randint(0, subsets_SK.shape[0], (batch_size,), generator=generator)
        parents_BK = subsets_SK[rows_B]
    else:
        # The k smallest of A uniform draws are a uniform k-subset.
        parents_BK = torch.rand(batch_size, n_parents, generator=generator).topk(
            dataset_k, dim=1, largest=False, sorted=False
        )[1]
    child_slots_BK = torch.randint(0, n_children, (batch_size, dataset_k), generator=generator)
    if parent_only_prob > 0:
        parent_only_BK = torch.rand(batch_size, dataset_k, generator=generator) < parent_only_prob
    else:
        # No draw at all, so runs without the option keep the seed's random stream.
        parent_only_BK = torch.zeros(batch_size, dataset_k, dtype=torch.bool)
    return SampleChoices(parents_BK, child_slots_BK, parent_only_BK)


def sum_features(features: ToyFeatures, choices: SampleChoices) -> Float[Tensor, "B M"]:
    """The samples alone (what the training loop needs), vectorized."""
    device = features.parents_AM.device
    parents_BK, slots_BK, parent_only_BK = (t.to(device) for t in choices)
    n_child_rows = features.n_parents * features.n_children
    rows_BK = torch.where(
        parent_only_BK, n_child_rows + parents_BK, parents_BK * features.n_children + slots_BK
    )
    # One gather-and-sum over a table of child features followed by bare parents: the data
    # is a measurable share of a step at these sizes.
    return F.embedding_bag(rows_BK, features.table_DM, mode="sum")


def assemble(features: ToyFeatures, choices: SampleChoices) -> ToyBatch:
    """Samples plus ground truth (vectorized; the plain-loop reference lives in the tests)."""
    device = features.parents_AM.device
    parents_BK, slots_BK, parent_only_BK = (t.to(device) for t in choices)
    batch_size, n_children = parents_BK.shape[0], features.n_children
    parent_on_BA = torch.zeros(batch_size, features.n_parents, dtype=torch.bool, device=device)
    parent_on_BA.scatter_(1, parents_BK, True)
    child_on_BC = torch.zeros(
        batch_size, features.n_parents * n_children, dtype=torch.bool, device=device
    )
    child_on_BC.scatter_(1, parents_BK * n_children + slots_BK, ~parent_only_BK)
    return ToyBatch(sum_features(features, choices), parent_on_BA, child_on_BC)


def sample_batch(
    features: ToyFeatures,
    batch_size: int,
    dataset_k: int,
    parent_only_prob: float,
    generator: torch.Generator,
) -> ToyBatch:
    choices = draw_choices(
        batch_size,
        features.n_parents,
        features.n_children,
        dataset_k,
        parent_only_prob,
        generator,
    )
    return assemble(features, choices)
