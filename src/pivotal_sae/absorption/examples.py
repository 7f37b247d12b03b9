"""Each latent's top activating contexts, kept on the device during the co-occurrence pass.

For every latent we keep the K contexts with the highest maximum activation over counted
positions, ordered by that maximum (ties: earlier context first), each with a window of W
tokens around the position of the maximum: token ids and that latent's activation at each.
Window slots outside the context or on padding hold token id -1.

All latents are updated at once: per step, the per-context maxima (B contexts × E latents) are
compared with each latent's K-th best, and only latents with a new entrant are merged, by one
batched sort. There is no Python loop over latents.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from pivotal_sae.errors import UserError

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

#: Tensors of the state, in the order they are merged; names end in dimension letters
#: (E latents, K examples per latent, W window positions).
STATE_TENSORS = ("max_acts_EK", "context_ids_EK", "positions_EK", "token_ids_EKW", "acts_EKW")


@dataclass(frozen=True)
class Example:
    """One top activating context of a latent."""

    context_id: int
    """Index of the context in the run's corpus order."""
    max_act: float
    """The latent's largest activation over the counted positions of the context."""
    position: int
    """Position of that maximum in the context."""
    token_ids: list[int]
    """Token ids of the window; -1 where the window runs past the context or onto padding."""
    acts: list[float]
    """The latent's activation at each window position."""
    center: int
    """Index of the maximum within the window."""


class TopExamples:
    """Top-`n_examples` contexts per latent with windows of `window_before + 1 + window_after`."""

    def __init__(
        self,
        d_sae: int,
        n_examples: int = 10,
        window_before: int = 10,
        window_after: int = 5,
        device: torch.device | str = "cpu",
    ) -> None:
        if n_examples < 1 or window_before < 0 or window_after < 0:
            raise UserError("top examples need n_examples >= 1 and non-negative window sizes")
        self.d_sae = d_sae
        self.n_examples = n_examples
        self.window_before = window_before
        self.window_after = window_after
        self.device = torch.device(device)
        self._clear()

    def _clear(self) -> None:
        e, k, w, dev = self.d_sae, self.n_examples, self.window, self.device
        self.max_acts_EK = torch.zeros(e, k, dtype=torch.float32, device=dev)
        self.context_ids_EK = torch.full((e, k), -1, dtype=torch.int64, device=dev)
        self.positions_EK = torch.full((e, k), -1, dtype=torch.int64, device=dev)
        self.token_ids_EKW = torch.full((e, k, w), -1, dtype=torch.int32, device=dev)
        self.acts_EKW = torch.zeros(e, k, w, dtype=torch.float32, device=dev)

    @property
    def window(self) -> int:
        return self.window_before + 1 + self.window_after

    def update(
        self,
        acts_BSE: torch.Tensor,
        input_ids_BS: torch.Tensor,
        count_mask_BS: torch.Tensor,
        context_ids_B: torch.Tensor,
        attention_mask_BS: torch.Tensor | None = None,
    ) -> None:
        """Offer a batch of contexts. `count_mask_BS` marks the positions whose activations may
        make a maximum; `context_ids_B` must increase from call to call (ties favour the
        earlier context)."""
        b, s, e = acts_BSE.shape
        if e != self.d_sae:
            raise ValueError(f"expected {self.d_sae} latents, got acts of shape {acts_BSE.shape}")
        counted_BSE = acts_BSE.masked_fill(~count_mask_BS.bool()[:, :, None], 0)
        max_BE, argmax_BE = counted_BSE.max(dim=1)
        max_BE = max_BE.float()
        del counted_BSE
        worst_E = self.max_acts_EK[:, -1]
        latents_U = ((max_BE > worst_E[None, :]) & (max_BE > 0)).any(dim=0).nonzero()[:, 0]
        if latents_U.numel() == 0:
            return
        u = latents_U.numel()
        pos_BU = argmax_BE[:, latents_U]
        offsets_W = torch.arange(-self.window_before, self.window_after + 1, device=pos_BU.device)
        win_BUW = pos_BU[:, :, None] + offsets_W
        inside_BUW = (win_BUW >= 0) & (win_BUW < s)
        win_BUW = win_BUW.clamp(0, s - 1)
        rows_BUW = torch.arange(b, device=pos_BU.device)[:, None, None].expand(b, u, self.window)
        if attention_mask_BS is not None:
            inside_BUW &= attention_mask_BS.bool()[rows_BUW, win_BUW]
        tokens_BUW = torch.where(
            inside_BUW, input_ids_BS[rows_BUW, win_BUW].to(torch.int32), -1
        ).to(torch.int32)
        acts_BUW = acts_BSE[rows_BUW, win_BUW, latents_U[None, :, None]].float()
        acts_BUW = torch.where(inside_BUW, acts_BUW, 0.0)
        new = {
            "max_acts_EK": max_BE[:, latents_U].T,
            "context_ids_EK": context_ids_B.to(self.device, torch.int64)[None, :].expand(u, b),
            "positions_EK": pos_BU.T,
            "token_ids_EKW": tokens_BUW.transpose(0, 1),
            "acts_EKW": acts_BUW.transpose(0, 1),
        }
        # Contexts whose maximum is 0 must never enter, whatever the latent's K-th best is.
        new["context_ids_EK"] = torch.where(new["max_acts_EK"] > 0, new["context_ids_EK"], -1)
        new["max_acts_EK"] = new["max_acts_EK"].clamp(min=0)
        self._merge_rows(latents_U, new)

    def _merge_rows(self, latents_U: torch.Tensor, new: Mapping[str, torch.Tensor]) -> None:
        """Merge candidate entries (U latents × any count) into the kept rows `latents_U`."""
        pool = {
            name: torch.cat([getattr(self, name)[latents_U], new[name]], dim=1)
            for name in STATE_TENSORS
        }
        # Empty slots (context id -1) sort after every real entry.
        empty = pool["context_ids_EK"] < 0
        values = torch.where(empty, -1.0, pool["max_acts_EK"])
        ids = torch.where(empty, torch.iinfo(torch.int64).max, pool["context_ids_EK"])
        order = torch.sort(ids, dim=1, stable=True).indices
        by_value = torch.sort(values.gather(1, order), dim=1, descending=True, stable=True)
        keep_UK = order.gather(1, by_value.indices)[:, : self.n_examples]
        kept = {}
        for name in STATE_TENSORS:
            tensor = pool[name]
            index = keep_UK if tensor.ndim == 2 else keep_UK[:, :, None].expand(-1, -1, self.window)
            kept[name] = tensor.gather(1, index)
        # Empty slots hold the same filler whatever was offered, so states compare equal.
        empty_UK = kept["context_ids_EK"] < 0
        fillers = {"max_acts_EK": 0, "positions_EK": -1, "token_ids_EKW": -1, "acts_EKW": 0}
        for name, filler in fillers.items():
            mask = empty_UK if kept[name].ndim == 2 else empty_UK[:, :, None]
            getattr(self, name)[latents_U] = kept[name].masked_fill(mask, filler)
        self.context_ids_EK[latents_U] = kept["context_ids_EK"]

    def merge_(self, other: TopExamples) -> None:
        """Fold in another holder's examples (another rank's, or a resumed run's)."""
        if (other.d_sae, other.window_before, other.window_after) != (
            self.d_sae,
            self.window_before,
            self.window_after,
        ):
            raise UserError("top examples of different SAEs or window sizes cannot be merged")
        latents = torch.arange(self.d_sae, device=self.device)
        self._merge_rows(latents, {n: getattr(other, n).to(self.device) for n in STATE_TENSORS})

    def all_reduce_(self, group: ProcessGroup | None = None) -> None:
        """Every rank ends up with the examples of all ranks (they are small: E·K·W)."""
        import torch.distributed as dist

        mine = {name: getattr(self, name) for name in STATE_TENSORS}
        for name in STATE_TENSORS:
            gathered = [torch.zeros_like(mine[name]) for _ in range(dist.get_world_size(group))]
            dist.all_gather(gathered, mine[name].contiguous(), group=group)
            mine[name] = torch.cat(gathered, dim=1)
        # After an earlier reduction every rank holds the same examples: keep one copy of each
        # (a latent's entries of one context are always the same entry).
        ids_EN = mine["context_ids_EK"]
        sorted_EN, order_EN = ids_EN.sort(dim=1, stable=True)
        repeat_EN = torch.zeros_like(sorted_EN, dtype=torch.bool)
        repeat_EN[:, 1:] = (sorted_EN[:, 1:] == sorted_EN[:, :-1]) & (sorted_EN[:, 1:] >= 0)
        repeat_EN = torch.zeros_like(repeat_EN).scatter(1, order_EN, repeat_EN)
        mine["context_ids_EK"] = ids_EN.masked_fill(repeat_EN, -1)
        # The gathered entries include this rank's own; start from empty so none counts twice.
        self._clear()
        latents = torch.arange(self.d_sae, device=self.device)
        self._merge_rows(latents, mine)

    def examples_for(self, latent: int) -> list[Example]:
        """The kept examples of one latent, best first."""
        rows = {name: getattr(self, name)[latent].cpu() for name in STATE_TENSORS}
        return [
            Example(
                context_id=int(rows["context_ids_EK"][k]),
                max_act=float(rows["max_acts_EK"][k]),
                position=int(rows["positions_EK"][k]),
                token_ids=rows["token_ids_EKW"][k].tolist(),
                acts=rows["acts_EKW"][k].tolist(),
                center=self.window_before,
            )
            for k in range(self.n_examples)
            if int(rows["context_ids_EK"][k]) >= 0
        ]

    def state_dict(self) -> dict[str, torch.Tensor]:
        sizes = [self.d_sae, self.n_examples, self.window_before, self.window_after]
        return {
            **{name: getattr(self, name) for name in STATE_TENSORS},
            "example_sizes": torch.tensor(sizes, dtype=torch.int64),
        }

    @classmethod
    def from_state_dict(
        cls, state: Mapping[str, torch.Tensor], device: torch.device | str = "cpu"
    ) -> TopExamples:
        if "example_sizes" not in state or any(n not in state for n in STATE_TENSORS):
            raise UserError("this file holds no top examples (tensors are missing)")
        d_sae, n_examples, before, after = (int(x) for x in state["example_sizes"])
        held = cls(d_sae, n_examples, before, after, device)
        for name in STATE_TENSORS:
            expected = getattr(held, name).shape
            if tuple(state[name].shape) != tuple(expected):
                raise UserError(
                    f"top examples tensor {name} has shape {tuple(state[name].shape)}, "
                    f"expected {tuple(expected)}"
                )
            setattr(held, name, state[name].to(device, getattr(held, name).dtype).clone())
        return held
