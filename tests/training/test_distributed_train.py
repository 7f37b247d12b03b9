"""`train-sae` data parallel: gradients averaged across two gloo ranks.

A few training steps on two ranks, each with half of every batch, equal the same steps on the
whole batches in one process (to float tolerance) and leave both ranks with identical weights;
`train-sae` under torchrun writes from rank 0 alone and trains an SAE about as good as one
process's; a --batch-size the ranks cannot share is one line and exit code 2.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from tiny_llama import save_tiny_llama

from pivotal_sae.cli import main

D_IN, STEPS, BATCH = 16, 6, 64


def _options() -> dict:
    generator = torch.Generator().manual_seed(3)
    return dict(d_in=D_IN, d_sae=32, k=4, hook_name="blocks.0.hook_resid_post", model_name="m",
                context_size=8, dataset="d", lr=4e-3, batch_size=BATCH,
                total_tokens=BATCH * STEPS, scaling_factor=1.0,
                b_dec_init=torch.randn(D_IN, generator=generator), device=torch.device("cpu"),
                seed=0)  # fmt: skip


def _batches() -> torch.Tensor:
    generator = torch.Generator().manual_seed(5)
    return torch.randn(STEPS, BATCH, D_IN, generator=generator) * 2


def _train(rank: int, world: int) -> dict[str, torch.Tensor]:
    from pivotal_sae.training import topk_trainer as lm_topk_trainer
    from pivotal_sae.training.job import _TopK

    # Latents count as dead after one step without firing, so the AuxK loss (which reads the
    # shared dead mask) takes part from the second step.
    lm_topk_trainer.DEAD_AFTER_TOKENS = BATCH
    trainer = _TopK(_options())
    for batch_NM in _batches():
        trainer.train_step(batch_NM[rank::world])
    return {
        **{name: t.detach().clone() for name, t in trainer.trainer.sae.state_dict().items()},
        "since_fired": trainer.trainer.n_forward_passes_since_fired.clone(),
    }


def _worker(rank: int, world: int, port: int, out: str) -> None:
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - gloo chatter
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    from pivotal_sae import distributed

    with distributed.launch("cpu") as ranks:
        assert ranks.device == "cpu" and ranks.world_size == world
        torch.save(_train(rank, world), f"{out}.{rank}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def pycache(tmp_path_factory) -> str:
    """Compiled bytecode shared by the ranks this module starts (sae_lens is slow to compile)."""
    return str(tmp_path_factory.getbasetemp() / "pycache")


def test_two_ranks_step_like_one_process_on_the_whole_batch(tmp_path, monkeypatch, pycache):
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    monkeypatch.setenv("PYTHONPYCACHEPREFIX", pycache)
    out = str(tmp_path / "weights")
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    first, second = torch.load(f"{out}.0"), torch.load(f"{out}.1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = _train(0, 1)
    finally:
        torch.set_num_threads(before)
    assert (single["since_fired"] > 0).any(), "no dead latent: the AuxK path went untested"
    for name, tensor in single.items():
        assert torch.equal(first[name], second[name]), name  # one SAE, on every rank
        # Float sums over 32 + 32 rows instead of 64, then averaged: ~1e-7 per step, grown
        # by Adam over a few steps.
        torch.testing.assert_close(first[name], tensor, rtol=1e-4, atol=1e-5, msg=name)


TINY_TRAIN = ["--hook", "blocks.1.hook_resid_post", "--d-sae", "64", "--k", "4",
              "--n-prompts", "96", "--n-eval-prompts", "8", "--max-tokens-in-prompt", "16",
              "--batch-size", "64", "--buffer-tokens", "256", "--context-batch-size", "8",
              "--log-every", "2", "--device", "cpu"]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> list[str]:
    model, corpus = save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), corpus_chars=20000)
    return ["--model", str(model), "--corpus", str(corpus)]


@pytest.mark.timeout(300)
def test_train_sae_on_two_ranks(tiny_llama, tmp_path, pycache):
    one, two = tmp_path / "one", tmp_path / "two"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train-sae", *tiny_llama, *TINY_TRAIN, "--out", str(one)]) == 0
    finally:
        torch.set_num_threads(before)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = pycache
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", "-m", "pivotal_sae", "train-sae", *tiny_llama,
               *TINY_TRAIN, "--out", str(two)]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("SAEs in") == 1  # rank 0 alone speaks ...
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert len(list((two / "tensorboard").iterdir())) == 1  # ... and writes
    first, second = (json.loads((run / "summary.json").read_text()) for run in (one, two))
    assert second["ranks"] == 2 and second["tokens"] == first["tokens"]
    # Each rank shuffles its own share of the tokens, so the batches differ from one
    # process's: the same training, different SGD noise. At this size (22 steps of 64 tokens)
    # seeds alone move the held-out FVU by a few hundredths.
    assert abs(second["fvu"] - first["fvu"]) < 0.1, (first["fvu"], second["fvu"])
    assert second["l0"] == first["l0"]


def test_batch_the_ranks_cannot_share_is_one_line_exit_2(tiny_llama, tmp_path, monkeypatch,
                                                        capsys):  # fmt: skip
    for name, value in {"RANK": "0", "WORLD_SIZE": "3", "LOCAL_RANK": "0",
                        "LOCAL_WORLD_SIZE": "3"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    out = tmp_path / "never"
    assert main(["train-sae", *tiny_llama, *TINY_TRAIN, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "must be multiples of the 3 ranks" in err, err
    assert not Path(out).exists()
