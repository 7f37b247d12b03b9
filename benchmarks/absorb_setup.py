"""Shared set-up of the end-to-end absorption benchmarks: presets, a random Gemma-2-shaped
model, random JumpReLU SAEs calibrated to a target L0, and random token contexts.

Needs only torch and transformers (no sae_lens, no tokenizer download, no corpus), so the same
scripts run on a bare GPU machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pivotal_sae.absorption.jobs.setup import Models
from pivotal_sae.lm.contexts import ContextBatch
from pivotal_sae.lm.model import LanguageModel, parse_dtype
from pivotal_sae.lm.random_models import SHAPES, VOCAB
from pivotal_sae.saes.sae import Sae


@dataclass(frozen=True)
class Preset:
    shape: str
    dtype: str
    d_sae: int
    l0: int
    seq: int
    ablator_hook: str
    reader_hook: str
    batch_size: int


PRESETS = {
    # The CPU claim: 4 layers, d 256, SAEs of width 4,096.
    "small": Preset("gemma-2-small", "float32", 4096, 64, 128,
                    "blocks.2.hook_mlp_out", "blocks.3.hook_resid_post", 8),
    # The original's setting: Gemma-2-2B, Gemma Scope-like 65k JumpReLU SAEs at L0 ≈ 70, an
    # MLP-out ablator at layer 20 and a residual reader at layer 21, 100-token prompts.
    "gemma2-2b": Preset("gemma-2-2b", "bfloat16", 65536, 70, 100,
                        "blocks.20.hook_mlp_out", "blocks.21.hook_resid_post", 16),
}  # fmt: skip


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="small", choices=list(PRESETS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, help="model dtype (default: the preset's)")
    p.add_argument("--d-sae", type=int, default=None)
    p.add_argument("--l0", type=int, default=None, help="target L0 of the JumpReLU SAEs")
    p.add_argument("--seq", type=int, default=None, help="tokens per context, BOS included")
    p.add_argument("--batch-size", type=int, default=None, help="contexts per forward pass")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    preset = PRESETS[args.preset]
    for name in ("dtype", "d_sae", "l0", "seq", "batch_size"):
        if getattr(args, name) is None:
            setattr(args, name, getattr(preset, name))
    args.shape, args.ablator_hook, args.reader_hook = (
        preset.shape, preset.ablator_hook, preset.reader_hook)  # fmt: skip
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    return args


def random_model(shape: str, dtype: str, device: str, seed: int = 0) -> LanguageModel:
    """A random Gemma-2 of the published shape, built on the device (eager attention, as
    Gemma-2 needs for its soft-capping); no tokenizer: contexts are random ids."""
    from transformers import Gemma2Config, Gemma2Model

    config = Gemma2Config(vocab_size=VOCAB, sliding_window=4096, attn_implementation="eager",
                          **SHAPES[shape])  # fmt: skip
    torch.manual_seed(seed)
    with torch.device(device):
        model = Gemma2Model(config).to(parse_dtype(dtype)).eval()
    return LanguageModel(model, None, f"random-{shape}")


def contexts(n: int, seq: int, batch_size: int, seed: int, start: int = 0) -> list[ContextBatch]:
    """Random token ids, BOS (id 2) first; every position but BOS counts."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for first in range(start, start + n, batch_size):
        b = min(batch_size, start + n - first)
        ids = torch.randint(1000, VOCAB, (b, seq), generator=g)
        ids[:, 0] = 2
        mask = torch.ones(b, seq, dtype=torch.long)
        count = mask.bool().clone()
        count[:, 0] = False
        out.append(ContextBatch(torch.arange(first, first + b), ids, mask, count))
    return out


@torch.no_grad()
def calibrated_sae(lm: LanguageModel, hook: str, d_sae: int, l0: int, dtype: torch.dtype,
                   calibration: list[ContextBatch], seed: int) -> Sae:  # fmt: skip
    """A random JumpReLU SAE whose per-latent thresholds make it fire at L0 ≈ `l0` here."""
    acts = torch.cat([
        lm.activations(b.input_ids_BS, b.attention_mask_BS, [hook])[hook][
            b.count_mask_BS.to(lm.device)]
        for b in calibration
    ])  # fmt: skip
    # Calibrated in the dtype it runs in: thresholds set in float32 and then rounded to bf16
    # let ~40 % more latents fire than asked.
    sae = Sae.random(lm.d_model, d_sae, architecture="jumprelu", hook_name=hook, seed=seed,
                     dtype=dtype, device=lm.device)  # fmt: skip
    # On fresh tokens a threshold at the (f+1)-th largest of n values is passed by a share
    # (f+1)/(n+1) on average, not f/n: ask for E/n fewer so that L0 lands on target.
    return sae.calibrate_thresholds_(acts, max(l0 - d_sae / acts.shape[0], 1.0))


def build(args: argparse.Namespace, with_reader: bool) -> Models:
    started = time.perf_counter()
    lm = random_model(args.shape, args.dtype, args.device, args.seed)
    calibration = contexts(max(8, 16384 // args.seq), args.seq, args.batch_size, args.seed + 1,
                           start=10**6)  # fmt: skip
    ablator = calibrated_sae(lm, args.ablator_hook, args.d_sae, args.l0, lm.dtype, calibration,
                             seed=1)  # fmt: skip
    models = Models(lm, ablator, args.ablator_hook)
    if with_reader:
        reader = calibrated_sae(lm, args.reader_hook, args.d_sae, args.l0, torch.float32,
                                calibration, seed=2)  # fmt: skip
        models.reader, models.reader_hook = reader, args.reader_hook
    sync(args.device)
    print(f"set-up {time.perf_counter() - started:.1f} s: {lm.name} ({lm.n_layers} layers, "
          f"d {lm.d_model}, {args.dtype}), SAEs {args.d_sae} latents, target L0 {args.l0}",
          file=sys.stderr)  # fmt: skip
    return models


def sync(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def memory(device: str | torch.device) -> dict[str, float]:
    """Peak host RSS of this process so far and peak memory allocated on the GPU, in GB."""
    import resource

    report = {
        "host_peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    }
    if torch.device(device).type == "cuda":
        report["gpu_peak_allocated_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return report


def machine(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
