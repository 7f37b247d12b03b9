"""How often each latent fires on each token id, for a null that conditions on the token.

Two latents that fire on different kinds of token never co-occur for a trivial reason; two that
fire on the same tokens co-occur often for the same reason. The count expected if i and j fired
independently *within each token id* v is

    E_tok[C_ij] = Σ_v f_i(v) · f_j(v) / n(v)

with f_i(v) the tokens of id v on which i fired and n(v) the counted tokens of id v. Observed
co-occurrence well below it means the two avoid each other on the very tokens they share: one
takes the other's place.

Storage is sparse and exact: sorted int64 keys `latent · 2³² + token_id` with int64 counts
(16 bytes per distinct (latent, token id)), fed in buffered batches as `SparseCooccurrence` is,
and `tokens_v` the count of each token id (grown as larger ids appear).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

from pivotal_sae.absorption.sparse_counts import add_sorted_counts, gather_counts
from pivotal_sae.errors import UserError

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

SHIFT = 32
PREFIX = "token_firing_"


class TokenFiring:
    def __init__(
        self, d_sae: int, device: torch.device | str = "cpu", flush_entries: int = 1 << 24
    ) -> None:
        self.d_sae = d_sae
        self.device = torch.device(device)
        self.flush_entries = flush_entries
        self.keys = torch.zeros(0, dtype=torch.int64, device=self.device)
        self.counts = torch.zeros(0, dtype=torch.int64, device=self.device)
        self.tokens_v = torch.zeros(0, dtype=torch.int64, device=self.device)
        self._pending: list[torch.Tensor] = []
        self._n_pending = 0

    def add(self, latents_N: torch.Tensor, token_ids_N: torch.Tensor, token_ids_T: torch.Tensor):
        """Entries (latent fired on a token of this id) and the ids of every counted token."""
        ids_T = token_ids_T.to(self.device, torch.int64)
        if ids_T.numel():
            if int(ids_T.min()) < 0:
                raise ValueError("token ids must be >= 0")
            size = int(ids_T.max()) + 1
            if size > self.tokens_v.numel():
                grown = torch.zeros(size, dtype=torch.int64, device=self.device)
                grown[: self.tokens_v.numel()] = self.tokens_v
                self.tokens_v = grown
            self.tokens_v += torch.bincount(ids_T, minlength=self.tokens_v.numel())
        codes = (latents_N.to(self.device, torch.int64) << SHIFT) + token_ids_N.to(
            self.device, torch.int64
        )
        self._pending.append(codes)
        self._n_pending += codes.numel()
        if self._n_pending >= self.flush_entries:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        keys_U, counts_U = torch.cat(self._pending).unique(sorted=True, return_counts=True)
        self._pending, self._n_pending = [], 0
        self.keys, self.counts = add_sorted_counts(self.keys, self.counts, keys_U, counts_U)

    def row(self, latent: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(token ids, counts) on which `latent` fired, ids ascending."""
        self.flush()
        lo = torch.searchsorted(self.keys, torch.tensor(latent << SHIFT, device=self.device))
        hi = torch.searchsorted(self.keys, torch.tensor((latent + 1) << SHIFT, device=self.device))
        keys = self.keys[int(lo) : int(hi)]
        return keys - (latent << SHIFT), self.counts[int(lo) : int(hi)]

    def expected_cooccurrence(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """E_tok[C_ij] for each pair (i[k], j[k]), float64, on the device of `i`."""
        out = torch.zeros(i.numel(), dtype=torch.float64)
        n_v = self.tokens_v.double()
        for k, (a, b) in enumerate(zip(i.tolist(), j.tolist(), strict=True)):
            ids_a, f_a = self.row(a)
            ids_b, f_b = self.row(b)
            if ids_a.numel() == 0 or ids_b.numel() == 0:
                continue
            pos = torch.searchsorted(ids_a, ids_b).clamp(max=ids_a.numel() - 1)
            shared = ids_a[pos] == ids_b
            v = ids_b[shared]
            out[k] = float((f_a[pos[shared]].double() * f_b[shared].double() / n_v[v]).sum())
        return out.to(i.device)

    def distinct_entries(self) -> int:
        self.flush()
        return self.keys.numel()

    def state_dict(self) -> dict[str, torch.Tensor]:
        self.flush()
        return {
            f"{PREFIX}keys": self.keys,
            f"{PREFIX}counts": self.counts,
            f"{PREFIX}tokens_v": self.tokens_v,
        }

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        keys, counts = state[f"{PREFIX}keys"], state[f"{PREFIX}counts"]
        tokens_v = state[f"{PREFIX}tokens_v"]
        if keys.ndim != 1 or keys.shape != counts.shape or tokens_v.ndim != 1:
            raise UserError("token firing keys and counts must be 1-D and equally long")
        if keys.numel() and (int(keys.min()) < 0 or int(keys.max() >> SHIFT) >= self.d_sae):
            raise UserError(f"token firing keys fall outside {self.d_sae} latents")
        if keys.numel() and int((keys & ((1 << SHIFT) - 1)).max()) >= tokens_v.numel():
            raise UserError("token firing keys name token ids that were never counted")
        self._pending, self._n_pending = [], 0
        self.keys = keys.to(self.device, torch.int64).clone()
        self.counts = counts.to(self.device, torch.int64).clone()
        self.tokens_v = tokens_v.to(self.device, torch.int64).clone()

    def all_reduce_(self, group: ProcessGroup | None, keep: bool) -> None:
        """Merge every rank's entries (gathered: each rank holds different keys) into rank 0,
        or into every rank with `keep`; the others start again from empty."""
        import torch.distributed as dist

        self.flush()
        keys_U, counts_U = gather_counts(self.keys, self.counts, group, self.device)
        vocab = torch.tensor(self.tokens_v.numel(), device=self.device)
        dist.all_reduce(vocab, op=dist.ReduceOp.MAX, group=group)
        tokens_v = torch.zeros(int(vocab), dtype=torch.int64, device=self.device)
        tokens_v[: self.tokens_v.numel()] = self.tokens_v
        dist.all_reduce(tokens_v, group=group)
        if dist.get_rank(group) == 0 or keep:
            self.keys, self.counts, self.tokens_v = keys_U, counts_U, tokens_v
        else:
            self.keys = torch.zeros(0, dtype=torch.int64, device=self.device)
            self.counts = torch.zeros_like(self.keys)
            self.tokens_v = torch.zeros(0, dtype=torch.int64, device=self.device)
