"""The fast training step against the plain one: autograd through the forward, then Adam."""

from __future__ import annotations

import pytest
import torch

from pivotal_sae.saes.hierarchical import HierarchicalSae
from pivotal_sae.toy.config import ToyTrainConfig
from pivotal_sae.toy.data import draw_choices, sum_features
from pivotal_sae.toy.step import adam_step_, has_fast_path, optimize
from pivotal_sae.toy.train import build_lab


def fresh_seed() -> int:
    return int(torch.randint(0, 2**31 - 1, ()).item())


def test_adam_step_matches_optimizer_step_exactly():
    rng = torch.Generator().manual_seed(fresh_seed())
    shapes = [(7, 5), (5,), (5, 7), (3, 4, 2)]
    fast = [torch.nn.Parameter(torch.randn(s, generator=rng)) for s in shapes]
    plain = [torch.nn.Parameter(p.detach().clone()) for p in fast]
    fast_opt = torch.optim.Adam(fast, lr=1e-2, fused=True)
    plain_opt = torch.optim.Adam(plain, lr=1e-2, fused=True)
    for step in range(5):
        grads = [torch.randn(s, generator=rng) for s in shapes]
        for group in (*fast_opt.param_groups, *plain_opt.param_groups):
            group["lr"] = 1e-2 / (step + 1)
        if step == 1:
            # From the second step on Adam's functional form is called, never optimizer.step().
            fast_opt.step = lambda: pytest.fail("took the slow path")  # type: ignore[method-assign]
        adam_step_(fast_opt, grads)
        for p, g in zip(plain, grads, strict=True):
            p.grad = g
        plain_opt.step()
    for p, q in zip(fast, plain, strict=True):
        assert torch.equal(p, q)
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(fast_opt.state[p][key], plain_opt.state[q][key]), key
        assert p.grad is None


def reference_step(lab, x_BM: torch.Tensor) -> float:
    """The plain step: the SAE's forward, its losses through autograd, `optimizer.step()`."""
    sae, config = lab.sae, lab.config
    out = sae(x_BM)
    total = sae.reconstruction_loss(x_BM, out)
    if config.aux_loss_coeff:
        total = total + config.aux_loss_coeff * sae.alignment_loss(out)
    lab.optimizer.zero_grad(set_to_none=True)
    total.backward()
    lab.optimizer.step()
    return total.item()


@pytest.mark.parametrize(
    "options",
    [
        dict(recipe="original"),
        dict(recipe="improved"),
        dict(recipe="original", aux_loss_coeff=0.5, n_children=3),
        dict(recipe="improved", aux_loss_coeff=0.2, parent_only_prob=0.3),
    ],
)
def test_fast_step_matches_autograd_and_adam(options):
    config = ToyTrainConfig(
        seed=fresh_seed() % 1000,
        sae_hidden_dim=8,
        dataset_num_features=8,
        model_dim=12,
        batch_size=32,
        lr=3e-3,
        device="cpu",
        **options,
    )
    fast, plain = build_lab(config, torch.device("cpu")), build_lab(config, torch.device("cpu"))
    assert has_fast_path(fast) and isinstance(fast.sae, HierarchicalSae)
    rng = torch.Generator().manual_seed(fresh_seed())
    for _ in range(6):
        choices = draw_choices(32, 8, config.n_children, config.dataset_k, 0.3, rng)
        x_BM = sum_features(fast.features, choices)
        parts, _ = optimize(fast, x_BM)
        expected = reference_step(plain, x_BM)
        assert parts["total_loss"].item() == pytest.approx(expected, rel=1e-5)
    for (name, p), q in zip(fast.sae.named_parameters(), plain.sae.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
