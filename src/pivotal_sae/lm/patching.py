"""Patched forward passes for selective ablation: add a delta at one hook, read a deeper one.

The fast path never recomputes the blocks below the ablator hook. A baseline pass over the
contexts keeps the positional and keyword arguments that each block from the ablator's block up
to the reader's block received (hidden states, attention masks, rotary tables ...). A patched run
then replays only those blocks on V variants at once: every batch-sized tensor among the kept
arguments is indexed by the variant's context, size-1 dimensions broadcast, and the delta is added
where the ablator hook sits. The run stops at the reader hook.

`run_patched_naive` is the plain reference that the fast path is tested against: one full
forward per variant from the embeddings at batch size 1, as the original research code did.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from pivotal_sae.errors import UserError
from pivotal_sae.lm.hooks import HookSite
from pivotal_sae.lm.model import _EarlyExit, _first, _hidden_arg, hooked

if TYPE_CHECKING:
    from pivotal_sae.lm.model import LanguageModel


@dataclass
class PatchBaseline:
    """What one baseline pass over B contexts keeps for later patched runs."""

    ablator: HookSite
    reader: HookSite
    ablator_acts_BSM: torch.Tensor
    """Unpatched activations at the ablator hook (what the ablator SAE encodes)."""
    reader_acts_BSM: torch.Tensor
    """Unpatched activations at the reader hook."""
    start_layer: int
    """First block a patched run executes."""
    block_inputs: list[tuple[tuple[Any, ...], dict[str, Any]]] = field(repr=False)
    """(args, kwargs) that blocks start_layer .. reader.layer received in the baseline pass."""

    @property
    def n_contexts(self) -> int:
        return int(self.ablator_acts_BSM.shape[0])


def _same_site(a: HookSite, b: HookSite) -> bool:
    return a.module is b.module and a.where == b.where


def check_hook_order(ablator: HookSite, reader: HookSite) -> None:
    if reader.depth < ablator.depth or (
        reader.layer == ablator.layer
        and max(reader.order, ablator.order) >= 100
        and not _same_site(ablator, reader)
    ):
        raise UserError(
            f"the reader hook {reader.name} is not after the ablator hook {ablator.name}; "
            "ablating can only change later activations, so pick a deeper reader hook"
        )


def _start_layer(ablator: HookSite) -> int:
    # A block's output is the next block's input: patch it there and skip re-running the block.
    # The same holds for a tensor the block only adds to its output (a pre-norm MLP's output).
    if ablator.boundary == "block_output" or ablator.adds_to_block_output:
        return ablator.layer + 1
    return ablator.layer


@torch.no_grad()
def patch_baseline(
    lm: LanguageModel,
    input_ids_BS: torch.Tensor,
    attention_mask_BS: torch.Tensor,
    ablator_hook: str,
    reader_hook: str,
) -> PatchBaseline:
    ablator, reader = lm.resolve(ablator_hook), lm.resolve(reader_hook)
    check_hook_order(ablator, reader)
    start = _start_layer(ablator)
    replayed = list(range(start, reader.layer + 1)) if not _same_site(ablator, reader) else []
    acts: dict[str, torch.Tensor] = {}
    block_inputs: dict[int, tuple[tuple[Any, ...], dict[str, Any]]] = {}
    wanted = 2 + len(replayed)

    def maybe_exit() -> None:
        if len(acts) + len(block_inputs) >= wanted:
            raise _EarlyExit

    def keep(role: str) -> Any:
        def fn(tensor: torch.Tensor) -> None:
            acts[role] = tensor
            if role == "reader" and _same_site(ablator, reader):
                acts["ablator"] = tensor
            maybe_exit()

        return fn

    def keep_inputs(layer: int) -> Any:
        def pre_hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            block_inputs[layer] = (args, dict(kwargs))
            maybe_exit()

        return pre_hook

    with contextlib.ExitStack() as stack:
        for layer in replayed:
            handle = lm.hooks.layers[layer].register_forward_pre_hook(
                keep_inputs(layer), with_kwargs=True
            )
            stack.callback(handle.remove)
        if not _same_site(ablator, reader):
            stack.enter_context(hooked(ablator, keep("ablator")))
        stack.enter_context(hooked(reader, keep("reader")))
        with contextlib.suppress(_EarlyExit):
            lm.forward(input_ids_BS, attention_mask_BS)
    return PatchBaseline(
        ablator=ablator,
        reader=reader,
        ablator_acts_BSM=acts["ablator"],
        reader_acts_BSM=acts["reader"],
        start_layer=start,
        block_inputs=[block_inputs[layer] for layer in replayed],
    )


def _select(obj: Any, n_contexts: int, context_index_V: torch.Tensor) -> Any:
    """Index every batch-sized tensor in a nest of args by context; leave the rest to broadcast."""
    if isinstance(obj, torch.Tensor):
        if obj.ndim >= 2 and obj.shape[0] == n_contexts:
            return obj.index_select(0, context_index_V)
        return obj
    if type(obj) in (tuple, list):
        return type(obj)(_select(x, n_contexts, context_index_V) for x in obj)
    if isinstance(obj, dict):
        return {k: _select(v, n_contexts, context_index_V) for k, v in obj.items()}
    return obj


@torch.no_grad()
def run_patched(
    lm: LanguageModel,
    baseline: PatchBaseline,
    context_index_V: torch.Tensor,
    delta_VSM: torch.Tensor,
) -> torch.Tensor:
    """Reader activations for V variants (context `context_index_V[v]`, plus `delta_VSM[v]`)."""
    ablator, reader = baseline.ablator, baseline.reader
    index_V = context_index_V.to(lm.device, torch.long)
    delta_VSM = delta_VSM.to(lm.device, baseline.ablator_acts_BSM.dtype)
    if _same_site(ablator, reader) or baseline.start_layer > reader.layer:
        # The reader is the ablator's tensor or the output of the block it adds into.
        return baseline.reader_acts_BSM.index_select(0, index_V) + delta_VSM
    first_args, first_kwargs = baseline.block_inputs[0]
    hidden_VSM = _hidden_arg(first_args, first_kwargs).index_select(0, index_V)
    out: dict[str, torch.Tensor] = {}

    def read(tensor: torch.Tensor) -> None:
        out["reader"] = tensor
        raise _EarlyExit

    with contextlib.ExitStack() as stack:
        if ablator.boundary is None and not ablator.adds_to_block_output:
            stack.enter_context(hooked(ablator, lambda t: t + delta_VSM))
        else:
            hidden_VSM = hidden_VSM + delta_VSM
        stack.enter_context(hooked(reader, read))
        with contextlib.suppress(_EarlyExit):
            for offset, layer in enumerate(range(baseline.start_layer, reader.layer + 1)):
                args, kwargs = baseline.block_inputs[offset]
                args = _select(args[1:], baseline.n_contexts, index_V) if args else ()
                kwargs = _select(kwargs, baseline.n_contexts, index_V)
                if args or "hidden_states" not in kwargs:
                    hidden_VSM = _first(lm.hooks.layers[layer](hidden_VSM, *args, **kwargs))
                else:
                    kwargs["hidden_states"] = hidden_VSM
                    hidden_VSM = _first(lm.hooks.layers[layer](**kwargs))
    return out["reader"]


@torch.no_grad()
def run_patched_naive(
    lm: LanguageModel,
    input_ids_BS: torch.Tensor,
    attention_mask_BS: torch.Tensor,
    ablator_hook: str,
    reader_hook: str,
    context_index_V: torch.Tensor,
    delta_VSM: torch.Tensor,
) -> torch.Tensor:
    """Reference: one full forward per variant at batch 1 on its real tokens only (pads are 0)."""
    ablator, reader = lm.resolve(ablator_hook), lm.resolve(reader_hook)
    check_hook_order(ablator, reader)
    n_variants, seq_len = len(context_index_V), input_ids_BS.shape[1]
    out_VSM = torch.zeros(n_variants, seq_len, lm.d_model, dtype=lm.dtype, device=lm.device)
    for v, context in enumerate(context_index_V.tolist()):
        real_S = attention_mask_BS[context].bool()
        ids_1S = input_ids_BS[context][real_S][None]
        delta_1SM = delta_VSM[v][real_S.to(delta_VSM.device)][None].to(lm.device, lm.dtype)
        with hooked(ablator, functools.partial(torch.add, other=delta_1SM)):
            acts = lm.activations(ids_1S, torch.ones_like(ids_1S), [reader_hook])[reader_hook]
        out_VSM[v, real_S.to(lm.device)] = acts[0]
    return out_VSM
