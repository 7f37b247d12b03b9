"""Selective ablation (SPEC §2): which latents each context ablates, and their summed effects.

For each context the ablator SAE's activations are summed over the counted positions; the top
`abridge_ablations_to` latents (K) with a positive sum, excluded latents left out, are the
candidates. A context with none of `selected_features` among them is skipped (with no selection,
none is). Ablating latent i keeps the SAE's error term, so the model sees its own activation
minus `a_i(pos)·W_dec[i]` at every real position: a delta added at the ablator hook. The K
variants of every kept context run as one batch through `LanguageModel.run_patched`, which
replays only the blocks from the ablator's to the reader's; the reader SAE encodes the reader
hook at the context's last real token, and `reader(baseline) − reader(ablated)` is added to
`effects_eE[i]`, with 1 added to `how_often_activated_e[i]`.

Memory: `effects_eE` is e × E float32 (17 GB at 65,536 × 65,536). `AblationEffects` stores a
row only for latents ablated at least once, in a table that grows as new latents appear; the
results file holds those rows and their ids. Effects are added context by context, so every
row is a sum in context order whatever the batching, on CPU and GPU alike (an `index_add_`
whose indices are distinct has no atomics to race), and a resumed run repeats it exactly.

The plain reference (one full forward per ablated latent at batch size 1, as the original
research code did) lives in the tests; both must agree within 1e-4 relative.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from pivotal_sae.errors import UserError
from pivotal_sae.saes.sae import Sae

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup


@dataclass
class AblationPlan:
    """The variants of one batch of contexts: variant v ablates `latent_V[v]` in batch row
    `context_V[v]`. Ordered by context, then by summed activation (largest first)."""

    context_V: torch.Tensor
    latent_V: torch.Tensor
    contexts_chosen: int
    """Contexts of the batch that passed the selection."""


def summed_activations(acts_BSe: torch.Tensor, count_mask_BS: torch.Tensor) -> torch.Tensor:
    """Each latent's activation summed over the counted positions of each context, (B, e)."""
    weights_B1S = count_mask_BS.to(acts_BSe.device, acts_BSe.dtype)[:, None, :]
    return torch.bmm(weights_B1S, acts_BSe)[:, 0, :].float()


def plan_ablations(
    summed_Be: torch.Tensor,
    abridge_ablations_to: int,
    excluded_e: torch.Tensor | None = None,
    selected_e: torch.Tensor | None = None,
) -> AblationPlan:
    """Top-K latents per context (positive sums only, excluded latents never), and the contexts
    where one of the selected latents is among them (every context if `selected_e` is None)."""
    scores_Be = summed_Be if excluded_e is None else summed_Be.masked_fill(excluded_e, 0.0)
    k = min(abridge_ablations_to, scores_Be.shape[1])
    values_BK, latents_BK = scores_Be.topk(k, dim=1)
    valid_BK = values_BK > 0
    if selected_e is None:
        chosen_B = valid_BK.any(dim=1)
    else:
        chosen_B = (selected_e[latents_BK] & valid_BK).any(dim=1)
    context_V, rank_V = (valid_BK & chosen_B[:, None]).nonzero(as_tuple=True)
    return AblationPlan(context_V, latents_BK[context_V, rank_V], int(chosen_B.sum()))


def decoder_directions(sae: Sae, latents_V: torch.Tensor) -> torch.Tensor:
    """What one unit of each latent adds to the SAE's reconstruction, (V, M).

    Zeroing latent i while keeping the error term changes the model's input by
    `−a_i · direction_i`. For our native SAEs that is `W_dec[i]` (scaled by 1/‖W_dec[i]‖ for
    TopK SAEs that rescale by decoder norm); for SAEs decoded by SAELens it is measured as
    `decode(e_i) − decode(0)`, which assumes an affine decoder.
    """
    from pivotal_sae.saes.hierarchical_lm import HierarchicalLmSae

    native = type(sae).decode is Sae.decode or isinstance(sae, HierarchicalLmSae)
    if native:
        rows_VM = sae.W_dec[latents_V]
        if sae.info.architecture == "topk" and sae.info.rescale_acts_by_decoder_norm:
            rows_VM = rows_VM / rows_VM.norm(dim=-1, keepdim=True)
        return rows_VM
    unit_VE = torch.zeros(len(latents_V), sae.d_sae, dtype=sae.dtype, device=sae.device)
    unit_VE[torch.arange(len(latents_V), device=sae.device), latents_V] = 1
    return sae.decode(unit_VE) - sae.decode(torch.zeros_like(unit_VE[:1]))


class AblationEffects:
    """`effects_eE` (summed reader effects) and `how_often_activated_e`, storing only the rows
    of latents ablated at least once.

    It also quacks like the `effects_eE` tensor where `find_effect_pairs` reads it: `shape`,
    `device`, and indexing by a tensor of latent ids returns those rows (zeros if never
    ablated), so a pair search never densifies e × E.
    """

    def __init__(
        self,
        d_sae: int,
        reader_d_sae: int,
        device: torch.device | str = "cpu",
        initial_rows: int = 1024,
    ) -> None:
        self.d_sae, self.reader_d_sae = d_sae, reader_d_sae
        self.device = torch.device(device)
        self._empty(initial_rows)

    def _empty(self, initial_rows: int = 1024) -> None:
        """No rows, no counts (what `__init__` leaves)."""
        d_sae, reader_d_sae = self.d_sae, self.reader_d_sae
        self.slot_e = torch.full((d_sae,), -1, dtype=torch.int64, device=self.device)
        self.rows_RE = torch.zeros(
            min(initial_rows, d_sae), reader_d_sae, dtype=torch.float32, device=self.device
        )
        self.n_rows = 0
        self.how_often_activated_e = torch.zeros(d_sae, dtype=torch.int64, device=self.device)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.d_sae, self.reader_d_sae)

    def __getitem__(self, latents: torch.Tensor) -> torch.Tensor:
        if not isinstance(latents, torch.Tensor):
            latents = torch.as_tensor(latents, dtype=torch.int64)
        slots = self.slot_e[latents.to(self.device)]
        rows = self.rows_RE[slots.clamp(min=0)]
        return rows * (slots >= 0)[..., None]

    def reserve(self, latents_V: torch.Tensor) -> None:
        """Give every latent in `latents_V` a row (new ones in ascending id order)."""
        new_N = torch.unique(latents_V[self.slot_e[latents_V] < 0])
        n_new = new_N.numel()
        if n_new == 0:
            return
        needed = self.n_rows + n_new
        if needed > self.rows_RE.shape[0]:
            # Double (capped at e): amortised copies, and memory ~ the rows actually used.
            capacity = min(self.d_sae, max(needed, 2 * self.rows_RE.shape[0]))
            grown = torch.zeros(
                capacity, self.reader_d_sae, dtype=torch.float32, device=self.device
            )
            grown[: self.n_rows] = self.rows_RE[: self.n_rows]
            self.rows_RE = grown
        self.slot_e[new_N] = torch.arange(self.n_rows, needed, device=self.device)
        self.n_rows = needed

    def add(self, latents_K: torch.Tensor, effects_KE: torch.Tensor) -> None:
        """Add one context's effects; `latents_K` must be distinct and have rows (`reserve`)."""
        self.rows_RE.index_add_(0, self.slot_e[latents_K], effects_KE.to(torch.float32))
        self.how_often_activated_e.index_add_(
            0, latents_K, torch.ones_like(latents_K, dtype=torch.int64)
        )

    def row_ids(self) -> torch.Tensor:
        """Ids of the stored rows, ascending."""
        return (self.slot_e >= 0).nonzero()[:, 0]

    def rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`(row_ids_R, effects_RE)`: the stored rows in ascending id order."""
        ids_R = self.row_ids()
        return ids_R, self.rows_RE[self.slot_e[ids_R]]

    def dense(self) -> torch.Tensor:
        """The full (e, E) matrix; needs 4·e·E bytes."""
        full_eE = torch.zeros(self.shape, dtype=torch.float32, device=self.device)
        ids_R, rows_RE = self.rows()
        full_eE[ids_R] = rows_RE
        return full_eE

    def state_dict(self) -> dict[str, torch.Tensor]:
        ids_R, rows_RE = self.rows()
        return {
            "effects_eE_row_ids": ids_R,
            "effects_eE_rows": rows_RE,
            "how_often_activated_e": self.how_often_activated_e,
        }

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        ids_R, rows_RE = state["effects_eE_row_ids"], state["effects_eE_rows"]
        how_often = state["how_often_activated_e"]
        if how_often.shape != (self.d_sae,) or rows_RE.ndim != 2:
            raise UserError(
                f"saved effects are for {tuple(how_often.shape)} ablator latents, expected "
                f"({self.d_sae},)"
            )
        if rows_RE.shape[1] != self.reader_d_sae or ids_R.shape != rows_RE.shape[:1]:
            raise UserError(
                f"saved effects rows have shape {tuple(rows_RE.shape)}, expected "
                f"({ids_R.numel()}, {self.reader_d_sae})"
            )
        if ids_R.numel() and not (
            int(ids_R.min()) >= 0
            and int(ids_R.max()) < self.d_sae
            and bool((ids_R[1:] > ids_R[:-1]).all())
        ):
            raise UserError(f"saved effects row ids are not distinct latents below {self.d_sae}")
        self._empty(max(1, ids_R.numel()))
        ids_R = ids_R.to(self.device, torch.int64)
        self.reserve(ids_R)
        self.rows_RE[self.slot_e[ids_R]] = rows_RE.to(self.device, torch.float32)
        self.how_often_activated_e = how_often.to(self.device, torch.int64).clone()

    def merge_(self, other: AblationEffects) -> None:
        """Add another accumulator's effects and counts (another rank's, for data parallel)."""
        ids_R, rows_RE = other.rows()
        ids_R = ids_R.to(self.device)
        self.reserve(ids_R)
        self.rows_RE.index_add_(0, self.slot_e[ids_R], rows_RE.to(self.device))
        self.how_often_activated_e += other.how_often_activated_e.to(self.device)

    def all_reduce_(self, group: ProcessGroup | None = None) -> None:
        """Sum the effects and counts of all ranks into rank 0; the other ranks are left empty,
        so reducing again later stays exact. Ranks may hold different rows: each first takes
        a row for every latent any rank has ablated (ids ascending), then one (U × E) sum."""
        import torch.distributed as dist

        held_e = (self.slot_e >= 0).to(torch.int32)
        dist.all_reduce(held_e, group=group)
        union_U = held_e.nonzero()[:, 0]
        self.reserve(union_U)
        rows_UE = self.rows_RE[self.slot_e[union_U]].contiguous()
        first = 0 if group is None else dist.get_global_rank(group, 0)
        dist.reduce(rows_UE, dst=first, group=group)
        dist.reduce(self.how_often_activated_e, dst=first, group=group)
        if dist.get_rank(group) == 0:
            self.rows_RE[self.slot_e[union_U]] = rows_UE
        else:
            self._empty()


@torch.no_grad()
def ablate_batch(
    lm,
    ablator: Sae,
    reader: Sae,
    ablator_hook: str,
    reader_hook: str,
    input_ids_BS: torch.Tensor,
    attention_mask_BS: torch.Tensor,
    count_mask_BS: torch.Tensor,
    effects: AblationEffects,
    *,
    abridge_ablations_to: int,
    excluded_e: torch.Tensor | None = None,
    selected_e: torch.Tensor | None = None,
    variants_per_pass: int = 128,
) -> AblationPlan:
    """Selective ablation of one batch of contexts, added into `effects` (SPEC §2).

    One baseline pass up to the reader hook; then the variants of all chosen contexts in
    chunks of `variants_per_pass`, each chunk one patched pass from the ablator's block.
    """
    device = lm.device
    real_BS = attention_mask_BS.to(device).bool()
    baseline = lm.patch_baseline(input_ids_BS, attention_mask_BS, ablator_hook, reader_hook)
    acts_BSe = ablator.encode(baseline.ablator_acts_BSM)
    plan = plan_ablations(
        summed_activations(acts_BSe, count_mask_BS),
        abridge_ablations_to,
        excluded_e,
        selected_e,
    )
    n_variants = plan.context_V.numel()
    if n_variants == 0:
        return plan
    # Contexts are right-padded: the last real token is at length − 1.
    last_B = real_BS.sum(dim=1) - 1
    rows_B = torch.arange(len(last_B), device=device)
    baseline_BE = reader.encode(baseline.reader_acts_BSM[rows_B, last_B])
    effects.reserve(plan.latent_V)
    for start in range(0, n_variants, variants_per_pass):
        context_v = plan.context_V[start : start + variants_per_pass]
        latent_v = plan.latent_V[start : start + variants_per_pass]
        acts_vS = acts_BSe[context_v, :, latent_v] * real_BS[context_v]
        delta_vSM = -acts_vS[:, :, None] * decoder_directions(ablator, latent_v)[:, None, :]
        reader_vSM = lm.run_patched(baseline, context_v, delta_vSM)
        rows_v = torch.arange(len(context_v), device=device)
        ablated_vE = reader.encode(reader_vSM[rows_v, last_B[context_v]])
        effect_vE = baseline_BE[context_v] - ablated_vE
        del reader_vSM, delta_vSM
        # One add per context: its latents are distinct, so the sums are deterministic.
        counts = torch.unique_consecutive(context_v, return_counts=True)[1].tolist()
        offset = 0
        for count in counts:
            part = slice(offset, offset + count)
            effects.add(latent_v[part], effect_vE[part])
            offset += count
    return plan
