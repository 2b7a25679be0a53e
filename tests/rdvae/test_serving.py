"""PosteriorMean: the servable view of a VAE returns the encoder means and keeps the VAE reachable."""

from __future__ import annotations

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
