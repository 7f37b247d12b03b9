"""Co-occurrence counts of SAE latents, accumulated on the device that holds the activations.

`cooccurrences_ee[i, j]` is the number of counted token positions at which latents i and j are
both active (> 0); the diagonal is each latent's firing count. Counts are exact integers.

Each step receives the activations of the counted tokens only: `acts_TE` (T tokens, E latents;
dense on the device) or the sparse `(values_TK, indices_TK)` of a top-k SAE. From each token's
active set every pair i <= j is turned into one integer code and all codes of a step are added
with a single scatter, so the cost follows L0² per token, not E².

Two layouts:
- `DenseCooccurrence` keeps the upper triangle including the diagonal, packed row by row
  (`E(E+1)/2` counters; int32 = 8.6 GB at E = 65,536). int32 cannot wrap: a count never exceeds
  the number of tokens counted, and the storage is promoted to int64 before that number passes
  2³¹ − 1. Firing counts are also kept separately in int64.
- `SparseCooccurrence` is for SAEs too wide for that (1M latents): pair keys `i·E + j` (i < j)
  are buffered and periodically sorted, de-duplicated and merged into sorted `(keys, counts)`.

Both expose `state_dict()`/`load_state_dict()` for checkpoints, `all_reduce_()` for data
parallel runs, `lookup(i, j)` and `to_dense()` (the full symmetric int64 matrix, small E only).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

import torch

from pivotal_sae.absorption.sparse_counts import add_sorted_counts, gather_counts
from pivotal_sae.absorption.token_firing import PREFIX as TOKEN_PREFIX
from pivotal_sae.absorption.token_firing import TokenFiring
from pivotal_sae.errors import UserError

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

INT32_MAX = 2**31 - 1
#: Pairs generated per chunk of tokens; bounds the transient memory of one step (~8 B each).
PAIRS_PER_CHUNK = 1 << 24
#: Above this many packed counters the 'auto' layout switches to sparse.
DENSE_LIMIT_BYTES = 10 * 2**30

# Measured on AMD EPYC cores (benchmarks/cooccurrence_speed.py --compare-kernels): seconds
# per (token · latent²) of the 0/1 matmul on one thread (it parallelises; divided by the thread
# count) and per generated pair of the scatter (index_add_ runs on one thread). Crossover at
# L0 ≈ 50: E ≈ 1,000 on one thread, ≈ 1,450 on two. On CUDA the scatter is used until the same
# benchmark has been run there.
_MATMUL_S_PER_TOKEN_E2 = 3.2e-11
_SCATTER_S_PER_PAIR = 2.6e-8


def packed_size(d_sae: int) -> int:
    return d_sae * (d_sae + 1) // 2


def packed_row_offsets(d_sae: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """`offsets[i] + j` is the packed position of (i, j) for i <= j; one entry per row i."""
    rows = torch.arange(d_sae, device=device, dtype=torch.int64)
    return rows * (2 * d_sae - rows + 1) // 2 - rows


def active_entries(acts_TE: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The active latents of each token, in token order and ascending within a token.

    Returns `tokens_N` and `latents_N` (one entry per active (token, latent)) and `counts_T`
    (how many entries each token has).
    """
    tokens_N, latents_N = (acts_TE > 0).nonzero(as_tuple=True)
    return tokens_N, latents_N, torch.bincount(tokens_N, minlength=acts_TE.shape[0])


def active_entries_sparse(
    values_TK: torch.Tensor, indices_TK: torch.Tensor, d_sae: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`active_entries` for the (values, indices) of a top-k SAE; indices must not repeat."""
    sentinel = torch.full_like(indices_TK, d_sae, dtype=torch.int64)
    sorted_TK = torch.where(values_TK > 0, indices_TK.to(torch.int64), sentinel).sort(dim=1).values
    tokens_N, slots_N = (sorted_TK < d_sae).nonzero(as_tuple=True)
    counts_T = torch.bincount(tokens_N, minlength=values_TK.shape[0])
    return tokens_N, sorted_TK[tokens_N, slots_N], counts_T


def pair_codes(
    tokens_N: torch.Tensor,
    latents_N: torch.Tensor,
    counts_T: torch.Tensor,
    first_code_N: torch.Tensor,
    *,
    strict: bool,
    n_pairs: int | None = None,
) -> torch.Tensor:
    """One code per pair of active entries (p, q) of the same token with p <= q (p < q if strict).

    The code is `first_code_N[p] + latents_N[q]`; `tokens_N` index `counts_T`. Built with
    repeat_interleave rather than on a padded (tokens × L0 × L0) grid, so no work goes to padding.
    The pairs come out grouped by the latent of p (one row of the packed matrix after another):
    the scatter that follows then touches memory row by row, which halved its time on CPU.
    """
    device = latents_N.device
    entry_N = torch.arange(latents_N.numel(), device=device)
    partners_N = torch.cumsum(counts_T, 0)[tokens_N] - entry_N - int(strict)
    if n_pairs is None:  # each int() of a device value is a host sync; callers may know it
        n_pairs = int(partners_N.sum())
    by_row_N = torch.argsort(latents_N, stable=True)
    partners_R = partners_N[by_row_N]
    run_start_R = torch.cumsum(partners_R, 0) - partners_R
    # Within the run of pairs that starts at entry p, the partner index rises by one per pair.
    shift_P = torch.repeat_interleave(
        by_row_N + int(strict) - run_start_R, partners_R, output_size=n_pairs
    )
    partner_P = torch.arange(n_pairs, device=device) + shift_P
    first_P = torch.repeat_interleave(first_code_N[by_row_N], partners_R, output_size=n_pairs)
    return first_P + latents_N.to(first_P.dtype)[partner_P]


def token_chunks(counts_T: torch.Tensor, *, strict: bool) -> list[tuple[int, int, int, int, int]]:
    """Split tokens into runs of at most ~PAIRS_PER_CHUNK pairs: (t0, t1, n0, n1, pairs) each,
    tokens t0..t1 owning entries n0..n1."""
    pairs_T = counts_T * (counts_T - 1) // 2 if strict else counts_T * (counts_T + 1) // 2
    cum_pairs_T = torch.cumsum(pairs_T, 0)
    ends_T = torch.cumsum(counts_T, 0)
    n_tokens = counts_T.numel()
    if n_tokens == 0:
        return []
    total, n_entries = torch.stack([cum_pairs_T[-1], ends_T[-1]]).tolist()  # one sync
    if total <= PAIRS_PER_CHUNK:
        return [(0, n_tokens, 0, n_entries, total)]
    marks = torch.arange(PAIRS_PER_CHUNK, total, PAIRS_PER_CHUNK, device=counts_T.device)
    cuts = sorted(set(torch.searchsorted(cum_pairs_T, marks, right=True).tolist()) - {0})
    bounds = [0, *[c for c in cuts if c < n_tokens], n_tokens]
    ends, cum = [0, *ends_T.tolist()], [0, *cum_pairs_T.tolist()]
    return [
        (t0, t1, ends[t0], ends[t1], cum[t1] - cum[t0])
        for t0, t1 in itertools.pairwise(bounds)
        if t1 > t0
    ]


class _Counter:
    """What both layouts share: token/context counts, firing counts, input handling."""

    layout: str

    def __init__(self, d_sae: int, device: torch.device | str) -> None:
        if d_sae < 1:
            raise UserError(f"an SAE needs at least one latent, not d_sae={d_sae}")
        self.d_sae = d_sae
        self.device = torch.device(device)
        self.tokens_counted = 0
        self.contexts_processed = 0
        self.firing_counts_e = torch.zeros(d_sae, dtype=torch.int64, device=self.device)
        self.token_firing = TokenFiring(d_sae, self.device)
        """Firing per token id (`token_firing.py`), fed when updates pass `token_ids_T`."""

    @property
    def counts_tokens(self) -> bool:
        """Whether every counted token also went into `token_firing` (files from before it
        existed, and updates without token ids, leave it incomplete)."""
        return int(self.token_firing.tokens_v.sum()) == self.tokens_counted > 0

    def update(
        self, acts_TE: torch.Tensor, contexts: int = 0, token_ids_T: torch.Tensor | None = None
    ) -> None:
        """Count the tokens of `acts_TE` (only counted positions; active means > 0), and with
        `token_ids_T` (one id per token) the firing per token id."""
        if acts_TE.ndim != 2 or acts_TE.shape[1] != self.d_sae:
            raise ValueError(f"expected acts of shape (tokens, {self.d_sae}), got {acts_TE.shape}")
        self._before_tokens(acts_TE.shape[0])
        if self._wants_matmul(acts_TE):
            active_TE = acts_TE > 0
            self.firing_counts_e += active_TE.sum(0)
            self._add_matmul(active_TE)
            if token_ids_T is not None:
                tokens_N, latents_N = active_TE.nonzero(as_tuple=True)
                self.token_firing.add(latents_N, token_ids_T[tokens_N], token_ids_T)
        else:
            entries = active_entries(acts_TE)
            self._add_entries(*entries)
            if token_ids_T is not None:
                self.token_firing.add(entries[1], token_ids_T[entries[0]], token_ids_T)
        self.tokens_counted += acts_TE.shape[0]
        self.contexts_processed += contexts

    def update_sparse(
        self,
        values_TK: torch.Tensor,
        indices_TK: torch.Tensor,
        contexts: int = 0,
        token_ids_T: torch.Tensor | None = None,
    ) -> None:
        """`update` from a top-k SAE's (values, indices); entries with value <= 0 are inactive."""
        self._before_tokens(values_TK.shape[0])
        entries = active_entries_sparse(values_TK, indices_TK, self.d_sae)
        self._add_entries(*entries)
        if token_ids_T is not None:
            self.token_firing.add(entries[1], token_ids_T[entries[0]], token_ids_T)
        self.tokens_counted += values_TK.shape[0]
        self.contexts_processed += contexts

    def _add_entries(
        self, tokens_N: torch.Tensor, latents_N: torch.Tensor, counts_T: torch.Tensor
    ) -> None:
        self.firing_counts_e += torch.bincount(latents_N, minlength=self.d_sae)
        for t0, t1, n0, n1, n_pairs in token_chunks(counts_T, strict=self._strict):
            self._add_pairs(tokens_N[n0:n1] - t0, latents_N[n0:n1], counts_T[t0:t1], n_pairs)

    def _wants_matmul(self, acts_TE: torch.Tensor) -> bool:
        return False

    def _before_tokens(self, n_tokens: int) -> None:
        pass

    _strict: bool

    def _add_pairs(
        self,
        tokens_N: torch.Tensor,
        latents_N: torch.Tensor,
        counts_T: torch.Tensor,
        n_pairs: int | None = None,
    ) -> None:
        raise NotImplementedError

    def _add_matmul(self, active_TE: torch.Tensor) -> None:
        raise NotImplementedError

    def _token_state(self) -> dict[str, torch.Tensor]:
        return self.token_firing.state_dict() if self.token_firing.tokens_v.numel() else {}

    def _load_token_state(self, state: Mapping[str, torch.Tensor]) -> None:
        self.token_firing = TokenFiring(self.d_sae, self.device)
        if f"{TOKEN_PREFIX}keys" in state:  # files written before token firing have none
            self.token_firing.load_state_dict(state)

    def _scalars(self) -> dict[str, torch.Tensor]:
        return {
            "d_sae": torch.tensor(self.d_sae, dtype=torch.int64),
            "tokens_counted": torch.tensor(self.tokens_counted, dtype=torch.int64),
            "contexts_processed": torch.tensor(self.contexts_processed, dtype=torch.int64),
        }

    def _load_scalars(self, state: Mapping[str, torch.Tensor]) -> None:
        if int(state["d_sae"]) != self.d_sae:
            raise UserError(
                f"the saved co-occurrence counts are for {int(state['d_sae'])} latents, "
                f"but this SAE has {self.d_sae}"
            )
        self.tokens_counted = int(state["tokens_counted"])
        self.contexts_processed = int(state["contexts_processed"])
        self.firing_counts_e = state["firing_counts_e"].to(self.device, torch.int64).clone()
        self._load_token_state(state)

    def _reduce_scalars(
        self, group: ProcessGroup | None, keep_on_all_ranks: bool
    ) -> tuple[int, int, bool]:
        import torch.distributed as dist

        totals = torch.tensor(
            [self.tokens_counted, self.contexts_processed],
            dtype=torch.int64,
            device=self.firing_counts_e.device,
        )
        dist.all_reduce(totals, group=group)
        dist.all_reduce(self.firing_counts_e, group=group)
        self.token_firing.all_reduce_(group, keep=keep_on_all_ranks)
        return int(totals[0]), int(totals[1]), dist.get_rank(group) == 0

    def distinct_pairs(self) -> int:
        """Pairs (i <= j, the diagonal included) that fired together at least once."""
        raise NotImplementedError

    def expected_cooccurrence(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """Count expected if i and j fired independently: f_i · f_j / N (float64)."""
        return expected_cooccurrence(self.firing_counts_e, self.tokens_counted, i, j)


def expected_cooccurrence(
    firing_counts_e: torch.Tensor, tokens_counted: int, i: torch.Tensor, j: torch.Tensor
) -> torch.Tensor:
    """f_i · f_j / N: the mean of the co-occurrence count if i and j fired independently."""
    firing = firing_counts_e.to(i.device, torch.float64)
    return firing[i] * firing[j] / max(tokens_counted, 1)


class DenseCooccurrence(_Counter):
    """Exact counts in packed upper-triangular storage on `device`.

    `count_dtype` int32 (default) halves memory and is promoted to int64 automatically before any
    count could pass 2³¹ − 1; pass int64 to start there. `kernel` picks how a step is added:
    'scatter' (pairs of active latents), 'matmul' (a 0/1 AᵀA, wins for small E on CPU) or
    'auto' (the cheaper by the measured costs above).
    """

    layout = "packed"
    _strict = False

    def __init__(
        self,
        d_sae: int,
        device: torch.device | str = "cpu",
        count_dtype: torch.dtype = torch.int32,
        kernel: Literal["auto", "scatter", "matmul"] = "auto",
    ) -> None:
        super().__init__(d_sae, device)
        if count_dtype not in (torch.int32, torch.int64):
            raise ValueError("count_dtype must be torch.int32 or torch.int64")
        self.kernel = kernel
        self.packed_counts = torch.zeros(packed_size(d_sae), dtype=count_dtype, device=self.device)
        self._offsets_e = packed_row_offsets(d_sae, self.device)
        self._triu: tuple[torch.Tensor, torch.Tensor] | None = None

    def _before_tokens(self, n_tokens: int) -> None:
        if self.packed_counts.dtype == torch.int32 and self.tokens_counted + n_tokens > INT32_MAX:
            self.packed_counts = self.packed_counts.to(torch.int64)

    def _wants_matmul(self, acts_TE: torch.Tensor) -> bool:
        if self.kernel != "auto":
            return self.kernel == "matmul"
        if acts_TE.device.type != "cpu" or acts_TE.shape[0] == 0:
            return False
        counts_T = (acts_TE > 0).sum(1)
        pairs = float((counts_T * (counts_T + 1) // 2).sum())
        matmul_s = (
            acts_TE.shape[0] * self.d_sae**2 * _MATMUL_S_PER_TOKEN_E2 / torch.get_num_threads()
        )
        return matmul_s < pairs * _SCATTER_S_PER_PAIR

    def _add_pairs(
        self,
        tokens_N: torch.Tensor,
        latents_N: torch.Tensor,
        counts_T: torch.Tensor,
        n_pairs: int | None = None,
    ) -> None:
        # int32 codes are measurably faster on CPU and suffice while the packed size fits.
        code_dtype = torch.int32 if self.packed_counts.numel() <= INT32_MAX else torch.int64
        first_N = self._offsets_e[latents_N].to(code_dtype)
        codes_P = pair_codes(tokens_N, latents_N, counts_T, first_N, strict=False, n_pairs=n_pairs)
        ones = torch.ones((), dtype=self.packed_counts.dtype, device=self.device)
        self.packed_counts.index_add_(0, codes_P, ones.expand(codes_P.numel()))

    def _add_matmul(self, active_TE: torch.Tensor) -> None:
        if self._triu is None:
            self._triu = tuple(torch.triu_indices(self.d_sae, self.d_sae, device=self.device))
        rows, cols = self._triu
        # 0/1 products summed in fp32 are exact while a block has at most 2²⁴ tokens.
        for start in range(0, active_TE.shape[0], 1 << 24):
            block_TE = active_TE[start : start + (1 << 24)].to(torch.float32)
            gram_ee = block_TE.T @ block_TE
            self.packed_counts += gram_ee[rows, cols].to(self.packed_counts.dtype)

    def distinct_pairs(self) -> int:
        return int(torch.count_nonzero(self.packed_counts))

    def lookup(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """Co-occurrence counts of the pairs (i[k], j[k]) as int64, on the device of `i`."""
        out_device = i.device
        i = i.to(self.device, torch.int64)
        j = j.to(self.device, torch.int64)
        low, high = torch.minimum(i, j), torch.maximum(i, j)
        return self.packed_counts[self._offsets_e[low] + high].to(out_device, torch.int64)

    def to_dense(self) -> torch.Tensor:
        """The full symmetric (E, E) int64 matrix; needs 8·E² bytes."""
        rows, cols = torch.triu_indices(self.d_sae, self.d_sae, device=self.device)
        full_ee = torch.zeros(self.d_sae, self.d_sae, dtype=torch.int64, device=self.device)
        full_ee[rows, cols] = self.packed_counts.to(torch.int64)
        full_ee[cols, rows] = self.packed_counts.to(torch.int64)
        return full_ee

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            **self._scalars(),
            "cooccurrences_ee_packed": self.packed_counts,
            "firing_counts_e": self.firing_counts_e,
            **self._token_state(),
        }

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self._load_scalars(state)
        packed = state["cooccurrences_ee_packed"]
        if packed.shape != (packed_size(self.d_sae),):
            raise UserError(
                f"packed co-occurrence counts have shape {tuple(packed.shape)}, expected "
                f"({packed_size(self.d_sae)},) for {self.d_sae} latents"
            )
        self.packed_counts = packed.to(self.device).clone()

    def all_reduce_(
        self, group: ProcessGroup | None = None, keep_on_all_ranks: bool = False
    ) -> None:
        """Sum the counts of all ranks. Afterwards rank 0 holds the totals so far and the other
        ranks hold zeros (unless `keep_on_all_ranks`), so reducing again later stays exact."""
        import torch.distributed as dist

        tokens, contexts, is_first = self._reduce_scalars(group, keep_on_all_ranks)
        if tokens > INT32_MAX:
            self.packed_counts = self.packed_counts.to(torch.int64)
        dist.all_reduce(self.packed_counts, group=group)
        if is_first or keep_on_all_ranks:
            self.tokens_counted, self.contexts_processed = tokens, contexts
        else:
            self.tokens_counted = self.contexts_processed = 0
            self.packed_counts.zero_()
            self.firing_counts_e.zero_()


class SparseCooccurrence(_Counter):
    """Exact counts as sorted int64 pair keys `i·E + j` (i < j) with int64 counts.

    Codes of each step are buffered on the activations' device; once `flush_pairs` are pending
    they are sorted, de-duplicated and merged into the stored keys, which live on
    `storage_device` (default: `device`; put them on the CPU when the distinct pairs outgrow
    the GPU). Memory is 16 bytes per distinct co-occurring pair.
    """

    layout = "sparse"
    _strict = True

    def __init__(
        self,
        d_sae: int,
        device: torch.device | str = "cpu",
        storage_device: torch.device | str | None = None,
        flush_pairs: int = 1 << 25,
    ) -> None:
        super().__init__(d_sae, device)
        self.storage_device = torch.device(storage_device or device)
        self.flush_pairs = flush_pairs
        self.keys = torch.zeros(0, dtype=torch.int64, device=self.storage_device)
        self.counts = torch.zeros(0, dtype=torch.int64, device=self.storage_device)
        self._pending: list[torch.Tensor] = []
        self._n_pending = 0

    def _add_pairs(
        self,
        tokens_N: torch.Tensor,
        latents_N: torch.Tensor,
        counts_T: torch.Tensor,
        n_pairs: int | None = None,
    ) -> None:
        first_N = latents_N * self.d_sae
        codes_P = pair_codes(tokens_N, latents_N, counts_T, first_N, strict=True, n_pairs=n_pairs)
        self._pending.append(codes_P)
        self._n_pending += codes_P.numel()
        if self._n_pending >= self.flush_pairs:
            self.flush()

    def flush(self) -> None:
        """Merge the buffered pair codes into the sorted store."""
        if not self._pending:
            return
        keys_U, counts_U = torch.cat(self._pending).unique(sorted=True, return_counts=True)
        self._pending, self._n_pending = [], 0
        self.keys, self.counts = add_sorted_counts(
            self.keys, self.counts, keys_U.to(self.storage_device), counts_U.to(self.storage_device)
        )

    def distinct_pairs(self) -> int:
        self.flush()
        return self.keys.numel() + int(torch.count_nonzero(self.firing_counts_e))

    def lookup(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """Co-occurrence counts of the pairs (i[k], j[k]) as int64, on the device of `i`."""
        self.flush()
        out_device = i.device
        i = i.to(self.storage_device, torch.int64)
        j = j.to(self.storage_device, torch.int64)
        low, high = torch.minimum(i, j), torch.maximum(i, j)
        keys = low * self.d_sae + high
        found = torch.zeros_like(keys)
        if self.keys.numel():
            pos = torch.searchsorted(self.keys, keys).clamp(max=self.keys.numel() - 1)
            found = torch.where(self.keys[pos] == keys, self.counts[pos], found)
        firing = self.firing_counts_e.to(self.storage_device)[low]
        return torch.where(low == high, firing, found).to(out_device)

    def to_dense(self) -> torch.Tensor:
        """The full symmetric (E, E) int64 matrix; needs 8·E² bytes."""
        self.flush()
        e = self.d_sae
        full_ee = torch.zeros(e * e, dtype=torch.int64, device=self.storage_device)
        rows, cols = self.keys // e, self.keys % e
        full_ee[rows * e + cols] = self.counts
        full_ee[cols * e + rows] = self.counts
        full_ee = full_ee.view(e, e)
        full_ee.diagonal().copy_(self.firing_counts_e.to(self.storage_device))
        return full_ee

    def state_dict(self) -> dict[str, torch.Tensor]:
        self.flush()
        return {
            **self._scalars(),
            "cooccurrences_ee_keys": self.keys,
            "cooccurrences_ee_counts": self.counts,
            "firing_counts_e": self.firing_counts_e,
            **self._token_state(),
        }

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self._load_scalars(state)
        keys, counts = state["cooccurrences_ee_keys"], state["cooccurrences_ee_counts"]
        if keys.ndim != 1 or keys.shape != counts.shape:
            raise UserError("sparse co-occurrence keys and counts must be 1-D and equally long")
        if keys.numel() and (int(keys.min()) < 0 or int(keys.max()) >= self.d_sae * self.d_sae):
            raise UserError(f"sparse co-occurrence keys fall outside {self.d_sae} latents")
        self._pending, self._n_pending = [], 0
        self.keys = keys.to(self.storage_device, torch.int64).clone()
        self.counts = counts.to(self.storage_device, torch.int64).clone()

    def all_reduce_(
        self, group: ProcessGroup | None = None, keep_on_all_ranks: bool = False
    ) -> None:
        """Merge the pairs of all ranks (gathered, since each rank holds different keys).
        Afterwards rank 0 holds the totals and the others are empty, unless
        `keep_on_all_ranks`."""

        self.flush()
        tokens, contexts, is_first = self._reduce_scalars(group, keep_on_all_ranks)
        keys_U, counts_U = gather_counts(
            self.keys, self.counts, group, self.firing_counts_e.device, self.storage_device
        )
        self.keys = torch.zeros(0, dtype=torch.int64, device=self.storage_device)
        self.counts = torch.zeros_like(self.keys)
        if is_first or keep_on_all_ranks:
            self.tokens_counted, self.contexts_processed = tokens, contexts
            self.keys, self.counts = keys_U, counts_U
        else:
            self.tokens_counted = self.contexts_processed = 0
            self.firing_counts_e.zero_()


class FullCooccurrence:
    """Lookups into a full symmetric (E, E) matrix, e.g. one returned by `load_results`."""

    layout = "full"

    def __init__(self, cooccurrences_ee: torch.Tensor, tokens_counted: int) -> None:
        if cooccurrences_ee.ndim != 2 or cooccurrences_ee.shape[0] != cooccurrences_ee.shape[1]:
            raise UserError(
                f"cooccurrences_ee must be square, not of shape {tuple(cooccurrences_ee.shape)}"
            )
        self.cooccurrences_ee = cooccurrences_ee
        self.d_sae = cooccurrences_ee.shape[0]
        self.tokens_counted = tokens_counted
        self.firing_counts_e = cooccurrences_ee.diagonal().to(torch.int64)

    def lookup(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        device = self.cooccurrences_ee.device
        flat = self.cooccurrences_ee.reshape(-1)
        codes = i.to(device, torch.int64) * self.d_sae + j.to(device, torch.int64)
        return flat[codes].to(i.device, torch.int64)


CooccurrenceCounts = DenseCooccurrence | SparseCooccurrence | FullCooccurrence


def make_cooccurrence_counter(
    d_sae: int,
    device: torch.device | str = "cpu",
    layout: Literal["auto", "packed", "sparse"] = "auto",
    dense_limit_bytes: int = DENSE_LIMIT_BYTES,
) -> DenseCooccurrence | SparseCooccurrence:
    """A counter for an SAE of `d_sae` latents: packed while its int32 counters fit in
    `dense_limit_bytes` (65,536 latents take 8.6 GB), sparse beyond."""
    if layout == "auto":
        layout = "packed" if packed_size(d_sae) * 4 <= dense_limit_bytes else "sparse"
    if layout == "packed":
        return DenseCooccurrence(d_sae, device)
    if layout == "sparse":
        return SparseCooccurrence(d_sae, device)
    raise UserError(f"unknown co-occurrence layout {layout!r}; choose auto, packed or sparse")
