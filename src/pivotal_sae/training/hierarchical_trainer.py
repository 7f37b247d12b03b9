"""Training the toy lab's hierarchical SAE on language-model activations (`train-sae --arch
hierarchical`); the directory it writes loads as `saes.hierarchical.HierarchicalLmSae`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pivotal_sae.saes.sae import SaeInfo


class HierarchicalTrainer:
    """Adam on the reconstruction loss of inputs scaled to mean norm sqrt(d_in), as for TopK."""

    def __init__(self, *, n_children: int, **options: Any) -> None:
        from pivotal_sae.saes.hierarchical import HierarchicalSae

        self.options = options
        self.scale = float(options["scaling_factor"])
        generator = torch.Generator().manual_seed(options["seed"])
        sae = HierarchicalSae(
            options["d_in"], options["d_sae"], options["k"], n_children, generator=generator
        )
        self.sae = sae.to(options["device"])
        with torch.no_grad():
            self.sae.b_dec.copy_(options["b_dec_init"])
        self.optimizer = torch.optim.Adam(self.sae.parameters(), lr=options["lr"])
        steps = max(options["total_tokens"] // options["batch_size"], 1)
        warm, decay = max(steps // 20, 1), max(steps // 5, 1)

        def multiplier(step: int) -> float:  # SAELens's constant schedule with warm-up and decay
            return min((step + 1) / warm, 1.0, max(steps - step, 0) / decay)

        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, multiplier)

    def train_step(self, batch_NM: torch.Tensor) -> Any:
        x = batch_NM.to(self.options["device"]) * self.scale
        out = self.sae(x)
        loss = (out.recon_BM - x).pow(2).sum(-1).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.sae.parameters(), 1.0)
        self.optimizer.step()
        self.schedule.step()
        self.sae.normalize_decoder_()
        self.sae.update_child_ratios_(out)
        return x, out

    @torch.no_grad()
    def metrics(self, output: Any) -> dict[str, float]:
        x, out = output
        error = (out.recon_BM - x).pow(2).sum(-1)
        children = (out.child_values_BK > 0).sum(-1).float().mean()
        return {
            "mse": float(error.mean()) / self.scale**2,
            "fvu": float(error.sum() / (x - x.mean(0)).pow(2).sum()),
            "l0": float((out.values_BK > 0).sum(-1).float().mean() + children),
            "lr": float(self.optimizer.param_groups[0]["lr"]),
        }

    def save_state(self, directory: Path) -> None:
        """Everything the next steps depend on: weights and child ratios, Adam, schedule."""
        from pivotal_sae.runs import atomic_save_safetensors, atomic_save_torch

        directory.mkdir(parents=True, exist_ok=True)
        atomic_save_safetensors(directory / "sae_weights.safetensors", self.sae.state_dict())
        atomic_save_torch(directory / "trainer_state.pt",
                          {"optimizer": self.optimizer.state_dict(),
                           "schedule": self.schedule.state_dict()})  # fmt: skip

    def load_state(self, directory: Path) -> None:
        from safetensors.torch import load_file

        self.sae.load_state_dict(load_file(str(directory / "sae_weights.safetensors")))
        state = torch.load(directory / "trainer_state.pt", map_location=self.options["device"],
                           weights_only=True)  # fmt: skip
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])

    @torch.no_grad()
    def save(self, directory: Path) -> None:
        from pivotal_sae.runs import atomic_save_safetensors, atomic_write_json
        from pivotal_sae.saes.loading import sae_cfg_dict

        state = {k: v.detach().clone() for k, v in self.sae.state_dict().items()}
        for name in ("W_enc", "W_enc_child"):  # fold the input scale into the weights
            state[name] *= self.scale
        for name in ("W_dec", "W_dec_child", "b_dec"):
            state[name] /= self.scale
        o = self.options
        info = SaeInfo(
            architecture="hierarchical", d_in=o["d_in"], d_sae=o["d_sae"], k=o["k"],
            hook_name=o["hook_name"], apply_b_dec_to_input=False, model_name=o["model_name"],
        )  # fmt: skip
        cfg = sae_cfg_dict(info)
        cfg.update(k=o["k"], n_children=self.sae.n_children, relu=True)
        cfg["metadata"].update(context_size=o["context_size"], dataset_path=o["dataset"])
        directory.mkdir(parents=True, exist_ok=True)
        atomic_save_safetensors(directory / "sae_weights.safetensors", state)
        atomic_write_json(directory / "cfg.json", cfg)
