"""Our sparse-decoding TopK training SAE has SAELens's losses and gradients exactly."""

from __future__ import annotations

import torch


def test_sparse_decode_matches_saelens_losses_and_gradients():
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.saes.sae import TrainStepInput

    from pivotal_sae.training.topk_trainer import SparseDecodeTopKTrainingSAE

    torch.manual_seed(0)
    cfg = TopKTrainingSAEConfig(d_in=32, d_sae=128, k=6)
    reference, ours = TopKTrainingSAE(cfg), SparseDecodeTopKTrainingSAE(cfg)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(50, 32)
    dead = torch.rand(128) < 0.3  # exercises the AuxK loss as well
    outputs = []
    for sae in (reference, ours):
        step = TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=dead,
                              n_training_steps=0, is_logging_step=False)  # fmt: skip
        out = sae.training_forward_pass(step)
        out.loss.backward()
        outputs.append(out)
    for name in ("mse_loss", "auxiliary_reconstruction_loss"):
        torch.testing.assert_close(outputs[0].losses[name], outputs[1].losses[name])
    assert outputs[1].losses["auxiliary_reconstruction_loss"] > 0
    torch.testing.assert_close(outputs[0].feature_acts, outputs[1].feature_acts)
    for (name, p), (_, q) in zip(
        reference.named_parameters(), ours.named_parameters(), strict=True
    ):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-6, msg=name)
