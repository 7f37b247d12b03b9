"""Data parallelism under `torchrun`: one process per GPU (or per CPU worker), each taking its
share of the contexts; counts and effects are summed across ranks, gradients averaged.

`launch(device)` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE),
picks this rank's device (cuda:LOCAL_RANK, or the CPU) and the backend that goes with it (NCCL
on GPUs, gloo on the CPU), and tears the process group down at the end. Without torchrun's
environment, or with a world of one, it starts nothing and every helper here is a no-op, so a
single-process run behaves exactly as before.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from pivotal_sae.errors import UserError


@dataclass(frozen=True)
class Ranks:
    """Where this process stands among the ranks of a run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str | None = None
    """This rank's device (`cuda:LOCAL_RANK` or `cpu`); None outside torchrun: --device rules."""

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def comm_device(self) -> torch.device:
        """Where tensors must be for collectives (NCCL only moves GPU memory)."""
        return torch.device(self.device or "cpu")


_current = Ranks()


def current() -> Ranks:
    return _current


def is_main() -> bool:
    return _current.is_main


def device_for(option: str) -> str:
    """The device a job should use: this rank's under torchrun, else the --device option."""
    return _current.device or option


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value is None or value == "" else int(value)


def ranks_from_env(option: str) -> Ranks:
    """This process's rank and device from torchrun's variables; checks --device against the
    node's GPUs. Without WORLD_SIZE (or with a world of one): a plain single process."""
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return Ranks()
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", local_rank + 1)
    name = option.lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return Ranks(rank, world, local_rank, "cpu")
    if name != "cuda":
        raise UserError(
            f"under torchrun give --device cuda (rank r takes cuda:LOCAL_RANK) or cpu, not {option}"
        )
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if local_world > gpus:
        raise UserError(
            f"--device cuda with {local_world} ranks on this node but {gpus} GPU(s); "
            f"start torchrun with --nproc-per-node {gpus} or fewer, or use --device cpu"
            if gpus
            else "--device cuda was asked for, but no CUDA GPU is available here; use --device cpu"
        )
    return Ranks(rank, world, local_rank, f"cuda:{local_rank}")


@contextmanager
def launch(option: str) -> Iterator[Ranks]:
    """Join torchrun's process group for the duration of a job (a no-op outside torchrun)."""
    global _current
    ranks = ranks_from_env(option)
    if not ranks.distributed:
        yield ranks
        return
    import torch.distributed as dist

    if ranks.device and ranks.device.startswith("cuda"):
        torch.cuda.set_device(ranks.device)
        backend = "nccl"
    else:
        backend = "gloo"
    started = not dist.is_initialized()
    if started:
        dist.init_process_group(backend)
    _current = ranks
    try:
        yield ranks
        # Finish together: a rank tearing down its process group while rank 0 is still writing
        # (and its gloo pairs still connected) was seen to abort ("terminate called without an
        # active exception") in about one run in eight.
        dist.barrier()
    finally:
        _current = Ranks()
        if started:
            dist.destroy_process_group()


def barrier() -> None:
    if _current.distributed:
        import torch.distributed as dist

        dist.barrier()


def all_reduce_ints(values: list[int], op: str = "sum") -> list[int]:
    """`values` summed (or maxed, or minimized) over ranks; unchanged in a single process."""
    if not _current.distributed:
        return list(values)
    import torch.distributed as dist

    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
    tensor = torch.tensor(values, dtype=torch.int64, device=_current.comm_device)
    dist.all_reduce(tensor, op=ops[op])
    return [int(v) for v in tensor.tolist()]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` summed over ranks (on its own device; unchanged in a single process)."""
    if not _current.distributed:
        return tensor
    import torch.distributed as dist

    summed = tensor.to(_current.comm_device)
    dist.all_reduce(summed)
    return summed.to(tensor.device)


def as_main_decides(flag: bool) -> bool:
    """Rank 0's `flag`, on every rank: for decisions all ranks must take together but only rank
    0 can judge, such as when a checkpoint (which rank 0 writes) is worth its cost."""
    if not _current.distributed:
        return flag
    return bool(all_reduce_ints([int(flag) if _current.is_main else 0], "max")[0])


def lockstep(batches: Iterator[Any]) -> Iterator[tuple[Any | None, int]]:
    """`(this rank's batch or None, contexts done by all ranks)` per global step.

    Rank r's k-th batch holds contexts of the k-th block of world_size × batch_size contexts
    (`Contexts.batches` shards them `(i - start) % world_size == r`), so after each step all
    contexts below the largest index any rank has seen are done: a checkpoint taken there
    covers exactly contexts 0 .. done − 1, whatever the number of ranks. Ends when no rank
    has a batch left; a rank that runs out early yields None until then.
    """
    if not _current.distributed:
        for batch in batches:
            yield batch, int(batch.context_index_B[-1]) + 1
        return
    while True:
        batch = next(batches, None)
        mine = 0 if batch is None else int(batch.context_index_B[-1]) + 1
        (done,) = all_reduce_ints([mine], "max")
        if done == 0:
            return
        yield batch, done


def average_gradients(module: torch.nn.Module) -> None:
    """Average each parameter's gradient over the ranks as soon as backward has accumulated it
    (before the trainer clips and steps), and start every rank from rank 0's weights.

    This is what DistributedDataParallel does, minus its bucketing; DDP itself cannot be used
    because SAELens's trainer calls `sae.training_forward_pass`, not the wrapper's `forward`.
    """
    if not _current.distributed:
        return
    import torch.distributed as dist

    world = _current.world_size
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)

    def average(parameter: torch.Tensor) -> None:
        if parameter.grad is not None:
            # gloo has no AVG: sum, then divide (exact for world sizes that are powers of 2).
            dist.all_reduce(parameter.grad)
            parameter.grad.div_(world)

    for parameter in module.parameters():
        if parameter.requires_grad:
            parameter.register_post_accumulate_grad_hook(average)


def summary_entry() -> dict[str, int]:
    """What summary.json says about the ranks: nothing in a single process (its files stay as
    they were), the number of ranks under torchrun."""
    return {"ranks": _current.world_size} if _current.distributed else {}
