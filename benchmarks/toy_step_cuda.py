"""Claim: the toy lab's fast step equals the plain one on a CUDA GPU; how fast each runs there.

    uv run python benchmarks/toy_step_cuda.py      # needs a CUDA GPU

Four settings train two identical labs for six steps each, one with the fast step (hand-written
gradients, direct fused-Adam call) and one with autograd and `optimizer.step()`, and print the
largest relative weight difference; Adam's direct call is compared bit for bit; then the step
alone (data, optimizer step, after-step updates) is timed at the seed example with both paths.
"""

from __future__ import annotations

import time

import torch

from pivotal_sae.toy.config import ToyTrainConfig
from pivotal_sae.toy.data import draw_choices, sum_features
from pivotal_sae.toy.step import adam_step_, after_step_, losses, optimize
from pivotal_sae.toy.train import ToyLab, build_lab

CUDA = torch.device("cuda")
SETTINGS = [
    dict(recipe="original"),
    dict(recipe="improved"),
    dict(recipe="original", aux_loss_coeff=0.5, n_children=3),
    dict(recipe="improved", aux_loss_coeff=0.2, parent_only_prob=0.3),
]


def plain_step(lab: ToyLab, x_BM: torch.Tensor) -> tuple[float, object]:
    """Autograd through the losses, then `optimizer.step()`."""
    total, parts = losses(lab, x_BM, training=True)
    lab.optimizer.zero_grad(set_to_none=True)
    total.backward()
    lab.optimizer.step()
    return total.item(), parts["out"]


def compare(options: dict) -> None:
    config = ToyTrainConfig(
        seed=5, sae_hidden_dim=8, dataset_num_features=8, model_dim=12, batch_size=32, lr=3e-3,
        device="cuda", **options,
    )  # fmt: skip
    fast, plain = build_lab(config, CUDA), build_lab(config, CUDA)
    rng = torch.Generator().manual_seed(11)
    worst_loss = 0.0
    for _ in range(6):
        choices = draw_choices(32, 8, config.n_children, config.dataset_k, 0.3, rng)
        x_BM = sum_features(fast.features, choices)
        parts, _ = optimize(fast, x_BM)
        expected, _ = plain_step(plain, x_BM)
        worst_loss = max(worst_loss, abs(parts["total_loss"].item() - expected) / abs(expected))
    pairs = zip(fast.sae.parameters(), plain.sae.parameters(), strict=True)
    worst = max(((p - q).abs().max() / q.abs().max()).item() for p, q in pairs)
    print(f"{options}: loss rel. diff {worst_loss:.2e}, weights max rel. diff {worst:.2e}")


def adam_is_exact() -> bool:
    rng = torch.Generator(device="cuda").manual_seed(0)
    shapes = [(7, 5), (5,), (5, 7)]
    direct = [torch.nn.Parameter(torch.randn(s, device=CUDA, generator=rng)) for s in shapes]
    stepped = [torch.nn.Parameter(p.detach().clone()) for p in direct]
    direct_opt = torch.optim.Adam(direct, lr=1e-2, fused=True)
    stepped_opt = torch.optim.Adam(stepped, lr=1e-2, fused=True)
    for _ in range(5):
        grads = [torch.randn(s, device=CUDA, generator=rng) for s in shapes]
        adam_step_(direct_opt, grads)
        for param, grad in zip(stepped, grads, strict=True):
            param.grad = grad
        stepped_opt.step()
    return all(torch.equal(p, q) for p, q in zip(direct, stepped, strict=True))


def steps_per_second(recipe: str, fast: bool, steps: int = 3000) -> float:
    lab = build_lab(ToyTrainConfig(recipe=recipe, device="cuda"), CUDA)  # the seed example
    rng = torch.Generator().manual_seed(1)

    def run(first: int, last: int) -> None:
        for step in range(first, last):
            x_BM = sum_features(lab.features, draw_choices(100, 30, 2, 3, 0.0, rng))
            out = optimize(lab, x_BM)[1] if fast else plain_step(lab, x_BM)[1]
            after_step_(lab, x_BM, out, step)
        torch.cuda.synchronize()

    run(1, 300)  # warm-up
    began = time.perf_counter()
    run(300, 300 + steps)
    return steps / (time.perf_counter() - began)


def main() -> None:
    print(torch.__version__, torch.cuda.get_device_name())
    for options in SETTINGS:
        compare(options)
    print("adam direct == optimizer.step on cuda:", adam_is_exact())
    for recipe in ("original", "improved"):
        for fast in (True, False):
            rate = steps_per_second(recipe, fast)
            print(f"cuda {recipe} {'fast' if fast else 'plain'} path: {rate:.0f} steps/s")


if __name__ == "__main__":
    main()
