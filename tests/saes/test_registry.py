"""Every registered architecture offers the same interface: dense and sparse encode that agree,
decode, and a directory that reads back as the same SAE."""

from __future__ import annotations

import pytest
import torch

from pivotal_sae.saes.hierarchical import HierarchicalSae
from pivotal_sae.saes.hierarchical_lm import HierarchicalLmSae
from pivotal_sae.saes.loading import read_sae_dir
from pivotal_sae.saes.sae import ARCHITECTURES, Sae, SaeInfo
from pivotal_sae.saes.toy_io import save_toy_sae


def _hierarchical(seed: int) -> HierarchicalLmSae:
    g = torch.Generator().manual_seed(seed)
    toy = HierarchicalSae(24, 10, 3, 2, generator=g)
    with torch.no_grad():
        for p in toy.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    info = SaeInfo("hierarchical", d_in=24, d_sae=30, hook_name="blocks.0.hook_resid_post", k=3)
    return HierarchicalLmSae(
        info, 2, True, W_dec_child=toy.W_dec_child.detach(), child_ratio_H=toy.child_ratio_H,
        **{n: getattr(toy, n).detach() for n in ("W_enc", "b_enc", "W_dec", "b_dec",
                                                  "W_enc_child", "b_enc_child")},
    )  # fmt: skip


def _make(architecture: str, seed: int) -> Sae:
    if architecture == "hierarchical":
        return _hierarchical(seed)
    sae = Sae.random(24, 30, architecture=architecture, k=4, seed=seed)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.2, generator=torch.Generator().manual_seed(seed))
    return sae


def test_the_registry_names_every_architecture_we_compute():
    assert set(ARCHITECTURES) == {"jumprelu", "topk", "standard", "hierarchical"}


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_sparse_encode_agrees_with_dense_and_directories_round_trip(architecture, tmp_path):
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    sae = _make(architecture, seed)
    x_BSM = torch.randn(3, 5, 24, generator=torch.Generator().manual_seed(seed + 1))
    acts_BSE = sae.encode(x_BSM)
    sparse = sae.encode_sparse(x_BSM)
    if architecture in ("topk", "hierarchical"):
        assert sparse is not None
        rebuilt = torch.zeros_like(acts_BSE).scatter_(-1, sparse.indices_NK, sparse.values_NK)
        assert torch.equal(rebuilt, acts_BSE)
    else:
        assert sparse is None  # a varying number of latents per token: dense only
    back = read_sae_dir(sae.save(tmp_path / "sae"))
    assert type(back) is type(sae) and back.d_sae == sae.d_sae
    assert torch.equal(back.encode(x_BSM), acts_BSE)
    assert torch.allclose(back.decode(acts_BSE), sae.decode(acts_BSE))


def test_the_toy_lab_and_the_lm_view_encode_a_hierarchical_sae_alike(tmp_path):
    toy = HierarchicalSae(24, 10, 3, 2, generator=torch.Generator().manual_seed(3))
    save_toy_sae(toy, tmp_path)
    lm_view = read_sae_dir(tmp_path)
    x_BM = torch.randn(16, 24)
    out = toy(x_BM)
    assert torch.allclose(lm_view.decode(lm_view.encode(x_BM)), out.recon_BM, atol=1e-5)
