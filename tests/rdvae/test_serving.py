"""PosteriorMean: the servable view of a VAE returns the encoder means and keeps the VAE reachable."""

from __future__ import annotations

import pytest
import torch

from rdvae import ModelConfig, PosteriorMean, build_model


def test_posterior_mean_returns_mu_of_each_input_deterministically() -> None:
    torch.manual_seed(0)
    vae = build_model(ModelConfig(latent_dim=3, hidden_dims=(8,)), input_dim=16, image_shape=(1, 4, 4)).eval()
    servable = PosteriorMean(vae)
    x = torch.rand(5, 16)
    out = servable(x)
    mu, _ = vae.encode(x)
    assert out.shape == (5, 3)
    assert torch.equal(out, mu)
    assert torch.equal(servable(x), out)  # no sampling: the same input gives the same code
    assert servable.vae is vae


def test_posterior_mean_takes_float64_and_names_a_wrong_shape() -> None:
    torch.manual_seed(0)
    vae = build_model(ModelConfig(latent_dim=3, hidden_dims=(8,)), input_dim=16, image_shape=(1, 4, 4)).eval()
    servable = PosteriorMean(vae)
    x = torch.rand(5, 16)
    assert torch.allclose(servable(x.double()), servable(x)) and servable(x.double()).dtype == torch.float32
    with pytest.raises(ValueError, match=r"expected inputs of shape \[N, 16\], got \[5, 15\]"):
        servable(x[:, :15])
