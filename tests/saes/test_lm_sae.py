"""`Sae` computes what SAELens computes, on saved random SAEs of each architecture."""

from __future__ import annotations

import json

import pytest
import torch

from pivotal_sae.saes.loading import read_sae_dir, save_sae
from pivotal_sae.saes.sae import Sae, SaeLensBacked

D_IN, D_SAE = 32, 96


def _saelens_sae(architecture: str, **extra):
    from sae_lens import SAE
    from sae_lens.saes.sae import SAEMetadata

    config_cls = {
        "jumprelu": "JumpReLUSAEConfig",
        "topk": "TopKSAEConfig",
        "standard": "StandardSAEConfig",
        "gated": "GatedSAEConfig",
    }[architecture]
    import sae_lens

    cfg = getattr(sae_lens, config_cls)(
        d_in=D_IN,
        d_sae=D_SAE,
        metadata=SAEMetadata(model_name="tiny", hook_name="blocks.1.hook_resid_post"),
        **extra,
    )
    sae = SAE.from_dict(cfg.to_dict())
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        if hasattr(sae, "threshold"):
            sae.threshold.abs_()
    return sae


CASES = [
    ("jumprelu", {}),
    ("jumprelu", {"apply_b_dec_to_input": False}),
    ("topk", {"k": 7}),
    ("topk", {"k": 5, "rescale_acts_by_decoder_norm": True}),
    ("standard", {}),
]


@pytest.mark.parametrize(("architecture", "extra"), CASES)
def test_native_encode_decode_equal_saelens(architecture, extra, tmp_path):
    reference = _saelens_sae(architecture, **extra)
    reference.save_model(tmp_path)
    ours = read_sae_dir(tmp_path)
    assert type(ours) is Sae and ours.architecture == architecture
    assert ours.hook_name == "blocks.1.hook_resid_post" and ours.d_sae == D_SAE
    x = torch.randn(4, 9, D_IN)
    with torch.no_grad():
        want = reference.encode(x)
        got = ours.encode(x)
        assert torch.equal(got > 0, want > 0)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(ours.decode(got), reference.decode(want), rtol=1e-6, atol=1e-5)
        assert (want > 0).any() and not (want > 0).all()


def test_unnative_architecture_falls_back_to_saelens(tmp_path):
    reference = _saelens_sae("gated")
    reference.save_model(tmp_path)
    ours = read_sae_dir(tmp_path)
    assert isinstance(ours, SaeLensBacked) and ours.architecture == "sae_lens:gated"
    x = torch.randn(5, D_IN)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), reference.encode(x))
    assert ours.W_dec.shape == (D_SAE, D_IN)


@pytest.mark.parametrize("architecture", ["jumprelu", "topk", "standard"])
def test_our_saved_sae_loads_in_saelens(architecture, tmp_path):
    from sae_lens import SAE

    sae = Sae.random(D_IN, D_SAE, architecture=architecture, k=6, seed=3)
    with torch.no_grad():
        sae.b_enc.normal_()
        sae.b_dec.normal_()
    save_sae(sae, tmp_path)
    reference = SAE.load_from_disk(str(tmp_path))
    x = torch.randn(7, D_IN)
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(x), reference.encode(x))
        torch.testing.assert_close(sae.decode(sae.encode(x)), reference.decode(reference.encode(x)))
    assert json.loads((tmp_path / "cfg.json").read_text())["metadata"]["hook_name"] == sae.hook_name


def test_calibrated_thresholds_give_target_l0():
    acts = torch.randn(4000, D_IN) * torch.linspace(0.1, 3, D_IN)  # anisotropic on purpose
    sae = Sae.random(D_IN, 512, architecture="jumprelu", seed=0).calibrate_thresholds_(acts, 20)
    l0 = (sae.encode(torch.randn(4000, D_IN) * torch.linspace(0.1, 3, D_IN)) > 0).sum(-1)
    assert 17 < l0.float().mean() < 23
