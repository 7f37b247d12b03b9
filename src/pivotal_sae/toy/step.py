"""One training step of the toy lab: loss, gradients, Adam, and the updates that follow it.

At the toy lab's sizes (a batch of 100 rows of width 50, tens of latents) a step costs PyTorch's
per-call bookkeeping, not arithmetic. So the hierarchical SAE, the lab's main subject, takes a
fast path: its reconstruction loss's gradients are written out by hand (no autograd graph) and
handed to Adam's functional form, `torch.optim.adam.adam` (fused where the build offers it).
Every other combination (auxiliary-k, flat SAEs) takes the plain path: autograd and
`optimizer.step()`.
tests/toy/test_step.py checks the fast path against the plain one on fresh random inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.optim.adam import adam as adam_functional

from pivotal_sae.saes.hierarchical import HierarchicalSae
from pivotal_sae.saes.topk import ToySaeOutput
from pivotal_sae.toy.revival import aux_k_loss, resample_dead_children_

if TYPE_CHECKING:
    from pivotal_sae.toy.train import ToyLab


def losses(lab: ToyLab, x_BM: Tensor, training: bool) -> tuple[Tensor, dict[str, Any]]:
    """Total loss to minimise and its parts, through autograd. Auxiliary-k counts only while
    training."""
    config, sae = lab.config, lab.sae
    out = sae(x_BM)
    parts = {"reconstruction_loss": sae.reconstruction_loss(x_BM, out)}
    total = parts["reconstruction_loss"]
    if isinstance(sae, HierarchicalSae) and (config.aux_loss_coeff or not training):
        parts["aux_loss"] = sae.alignment_loss(out)
        total = total + config.aux_loss_coeff * parts["aux_loss"]
    if training and config.aux_k:
        parts["aux_k_loss"] = aux_k_loss(sae, x_BM, out, lab.tracker.dead(), config.aux_k)
        total = total + config.aux_k_coeff * parts["aux_k_loss"]
    parts["total_loss"] = total
    return total, {"out": out, **parts}


def has_fast_path(lab: ToyLab) -> bool:
    return isinstance(lab.sae, HierarchicalSae) and not lab.config.aux_k


def optimize(lab: ToyLab, x_BM: Tensor) -> tuple[dict[str, Tensor], ToySaeOutput]:
    """One Adam step on the batch; returns the (detached) loss parts and the forward's output."""
    sae, optimizer = lab.sae, lab.optimizer
    if not has_fast_path(lab):
        total, parts = losses(lab, x_BM, training=True)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        out = parts.pop("out")
        return {key: value.detach() for key, value in parts.items()}, out
    assert isinstance(sae, HierarchicalSae)
    loss, out, grads = sae.reconstruction_loss_and_grads(x_BM)
    parts = {"reconstruction_loss": loss, "total_loss": loss}
    if coeff := lab.config.aux_loss_coeff:
        # The alignment loss moves only the decoders; its small graph goes through autograd.
        aux = sae.alignment_loss(out)
        g_dec, g_dec_child = torch.autograd.grad(coeff * aux, [sae.W_dec, sae.W_dec_child])
        grads["W_dec"] = grads["W_dec"] + g_dec
        grads["W_dec_child"] = grads["W_dec_child"] + g_dec_child
        parts["aux_loss"] = aux.detach()
        parts["total_loss"] = loss + coeff * parts["aux_loss"]
    adam_step_(optimizer, [grads[name] for name in lab.param_names])
    return parts, out


@torch.no_grad()
def after_step_(lab: ToyLab, x_BM: Tensor, out: ToySaeOutput, step: int) -> None:
    """What the recipe keeps besides the weights: unit decoder rows, child/parent ratios,
    load-balancing biases, firing rates for revival, and periodic resampling of dead children."""
    config, sae = lab.config, lab.sae
    if config.normalize_decoder:
        sae.normalize_decoder_()
    child_fires_H = sae.update_child_ratios_(out) if isinstance(sae, HierarchicalSae) else None
    if config.balance_rate or config.aux_k or config.resample_every:
        if isinstance(sae, HierarchicalSae):
            counts = sae.firing_counts(out, child_fires_H)
        else:
            counts = sae.firing_counts(out)
        if config.balance_rate:
            fires_E, _ = next(iter(counts.values()))  # parents, or the flat latents
            sae.update_balance_(fires_E, x_BM.shape[0], config.balance_rate)
        if config.aux_k or config.resample_every:
            lab.tracker.update(counts)
    if config.resample_every and step % config.resample_every == 0:
        resample_dead_children_(sae, x_BM, out, lab.tracker, lab.optimizer)


def adam_step_(optimizer: torch.optim.Adam, grads: Sequence[Tensor]) -> None:
    """`optimizer.step()` with `grads` as the gradients of its parameters (one group).

    Once the optimizer has state, this calls `torch.optim.adam.adam`, the functional form that
    `Adam.step()` itself calls, with the group's settings and state, minus the per-step
    regrouping of parameters around it (about a tenth of a toy step). The first step, and any
    setting this does not cover, go through `optimizer.step()`.
    """
    (group,) = optimizer.param_groups
    params = group["params"]
    states = [optimizer.state.get(param) for param in params]
    if not (
        all(state is not None for state in states)
        and not (group["amsgrad"] or group.get("capturable") or group.get("differentiable"))
        and not group["weight_decay"]
        and isinstance(group["lr"], float)
    ):
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad
        optimizer.step()
        for param in params:
            param.grad = None
        return
    beta1, beta2 = group["betas"]
    ready = [state for state in states if state is not None]  # all of them (checked above)
    adam_functional(
        params,
        list(grads),
        [state["exp_avg"] for state in ready],
        [state["exp_avg_sq"] for state in ready],
        [],
        [state["step"] for state in ready],
        foreach=group.get("foreach"),
        fused=group.get("fused"),
        amsgrad=False,
        beta1=beta1,
        beta2=beta2,
        lr=group["lr"],
        weight_decay=0.0,
        eps=group["eps"],
        maximize=group["maximize"],
    )
