"""Tests of rdvae.models: config validation, shapes, likelihoods and the MADE autoregressive property."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from rdvae import ModelConfig, build_model


def test_made_decoder_refuses_a_gaussian_likelihood() -> None:
    with pytest.raises(ValidationError, match="made.*bernoulli"):
        ModelConfig(decoder="made", likelihood="gaussian")


@pytest.mark.parametrize(
    ("field", "value"),
    [("latent_dim", 0), ("hidden_dims", ()), ("hidden_dims", (0,)), ("gaussian_std", 0.0), ("encoder", "rnn")],
)
def test_model_config_refuses_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        ModelConfig(**{field: value})


def test_model_config_refuses_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="latent_dims"):
        ModelConfig(latent_dims=4)


@pytest.mark.parametrize("part", ["encoder", "decoder"])
@pytest.mark.parametrize("image_shape", [(1, 6, 6), (1, 28, 30), (36,)])
def test_conv_needs_image_sides_divisible_by_four(part: str, image_shape: tuple[int, ...]) -> None:
    config = ModelConfig(**{part: "conv"})
    with pytest.raises(ValueError, match="divisible by 4"):
        build_model(config, math.prod(image_shape), image_shape)


@pytest.mark.parametrize(
    "config",
    [
        ModelConfig(latent_dim=3, hidden_dims=(16,)),
        ModelConfig(encoder="conv", decoder="conv", latent_dim=3),
        ModelConfig(decoder="made", latent_dim=3, hidden_dims=(32, 32)),
        ModelConfig(likelihood="gaussian", gaussian_variance="learned", latent_dim=3, hidden_dims=(16,)),
        ModelConfig(decoder="conv", likelihood="gaussian", gaussian_variance="learned", latent_dim=3),
    ],
)
def test_forward_shapes(config: ModelConfig) -> None:
    model = build_model(config, 64, (1, 8, 8))
    x = torch.rand(5, 64).round()
    log_likelihood, mu, logvar = model(x)
    assert log_likelihood.shape == (5,)
    assert mu.shape == logvar.shape == (5, 3)
    assert torch.isfinite(log_likelihood).all()
    assert model.reconstruct_mean(mu).shape == (5, 64)


def test_bernoulli_log_likelihood_matches_torch_distributions() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=2, hidden_dims=(8,)), 10, (1, 10, 1))
    x = torch.rand(4, 10).round()
    z = torch.randn(4, 2)
    expected = torch.distributions.Bernoulli(logits=model.decoder(z)).log_prob(x).sum(-1)
    torch.testing.assert_close(model.log_likelihood(x, z), expected)


def test_fixed_gaussian_log_likelihood_matches_torch_distributions() -> None:
    torch.manual_seed(0)
    config = ModelConfig(likelihood="gaussian", gaussian_std=0.3, latent_dim=2, hidden_dims=(8,))
    model = build_model(config, 10, (1, 10, 1))
    x = torch.rand(4, 10)
    z = torch.randn(4, 2)
    expected = torch.distributions.Normal(model.decoder(z), 0.3).log_prob(x).sum(-1)
    torch.testing.assert_close(model.log_likelihood(x, z), expected)


def test_made_logits_depend_only_on_earlier_pixels() -> None:
    torch.manual_seed(0)
    dim = 12
    model = build_model(ModelConfig(decoder="made", latent_dim=2, hidden_dims=(24, 24)), dim, (1, 3, 4))
    x = torch.rand(1, dim).round().requires_grad_(True)
    z = torch.randn(1, 2)
    logits = model.decoder(x, z)
    jacobian = torch.stack([torch.autograd.grad(logits[0, d], x, retain_graph=True)[0][0] for d in range(dim)])
    # jacobian[d, j] = d logit_d / d x_j must vanish for j >= d (upper triangle with the diagonal).
    assert torch.count_nonzero(torch.triu(jacobian)) == 0
    # ... and the strictly lower triangle is used: every pixel after the first sees some earlier pixel.
    assert (torch.tril(jacobian, diagonal=-1).abs().sum(1)[1:] > 0).all()


def test_made_logits_depend_on_the_latent() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(decoder="made", latent_dim=2, hidden_dims=(16,)), 6, (1, 2, 3))
    x = torch.rand(1, 6).round()
    assert not torch.allclose(model.decoder(x, torch.zeros(1, 2)), model.decoder(x, torch.ones(1, 2)))


def test_made_sampling_is_consistent_with_its_logits() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(decoder="made", latent_dim=2, hidden_dims=(16,)), 6, (1, 2, 3))
    z = torch.randn(3, 2)
    greedy = model.reconstruct_mean(z)
    assert set(greedy.unique().tolist()) <= {0.0, 1.0}
    # Greedy decoding picks, for every pixel, the more likely value given the pixels before it.
    probs = torch.sigmoid(model.decoder(greedy, z))
    assert torch.equal(greedy, (probs > 0.5).float())


def test_encoder_log_variance_is_clamped() -> None:
    model = build_model(ModelConfig(latent_dim=2, hidden_dims=(4,)), 4, (1, 2, 2))
    with torch.no_grad():
        model.encoder[-1].bias.fill_(1e6)
    _, logvar = model.encode(torch.ones(1, 4))
    assert float(logvar.detach().max()) == 10.0


@pytest.mark.parametrize("hidden", [(8,), (8, 8), (5, 12)])
def test_narrow_made_sees_its_whole_context_and_nothing_after(hidden: tuple[int, ...]) -> None:
    # Width < D - 1: a hidden layer cannot hold every degree, yet output d must still see x_{d-1} (and, through the
    # direct connections, all of x_<d) and never x_j for j >= d (Germain et al. 2015).
    dim = 20
    torch.manual_seed(0)
    model = build_model(ModelConfig(decoder="made", latent_dim=2, hidden_dims=hidden), dim, (1, 4, 5))
    x, z = torch.rand(1, dim), torch.randn(1, 2)
    jacobian = torch.autograd.functional.jacobian(lambda inputs: model.decoder(inputs, z)[0], x)[:, 0, :]
    for d in range(dim):  # 0-based: output d is pixel d + 1
        assert torch.all(jacobian[d, d:] == 0), f"output {d} depends on x_j, j >= {d}"
        assert torch.all(jacobian[d, :d] != 0), f"output {d} is blind to some of x_<{d}: {jacobian[d, :d]}"


@pytest.mark.parametrize(("width", "dim"), [(8, 20), (500, 784), (63, 64), (256, 64)])
def test_made_hidden_degrees_cover_1_to_d_minus_1(width: int, dim: int) -> None:
    from rdvae._made import hidden_degrees

    degrees = hidden_degrees(width, dim)
    assert degrees.shape == (width,) and int(degrees.min()) == 1 and int(degrees.max()) <= dim - 1
    if width < dim - 1:  # spread over the whole range, not the first `width` values
        assert int(degrees.max()) >= (dim - 1) * (width - 1) // width
    else:
        assert set(degrees.tolist()) == set(range(1, dim))
