"""VAE models: Gaussian encoders (MLP, conv), factorised and autoregressive decoders, standard normal prior."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator
from torch import nn
from torch.nn import functional as F

from rdvae._made import MadeDecoder
from rdvae.likelihoods import Likelihood, LikelihoodHead


class ModelConfig(BaseModel):
    """Architecture of a VAE: encoder and decoder family, decoder likelihood, sizes."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # no true -> 1, no "3" -> 3

    encoder: Literal["mlp", "conv"] = "mlp"
    decoder: Literal["mlp", "conv", "made"] = Field(
        "mlp", description="`made`: autoregressive masked MLP conditioned on z (the 'powerful' decoder)."
    )
    likelihood: Likelihood = Field(
        "bernoulli",
        description="p(x|z): `bernoulli` (x in {0, 1}), `gaussian` (any real x), `poisson`, `nb` (negative "
        "binomial) or `zinb` (zero-inflated NB) for non-negative integer counts, with the observed library size "
        "as in scVI. See rdvae.likelihoods.",
    )
    gaussian_variance: Literal["fixed", "learned"] = "fixed"
    gaussian_std: float = Field(0.1, gt=0.0, description="Standard deviation of a fixed-variance Gaussian decoder.")
    standardize: bool = Field(
        False,
        description="`gaussian` only: standardise each feature with the training split's mean and std; the "
        "statistics are stored with the model, which reports D and reconstructions in the data's own units.",
    )
    latent_dim: int = Field(16, ge=1, le=512)
    # lax only as a container (a JSON/YAML list is the usual spelling); each width is a strict int
    hidden_dims: tuple[StrictInt, ...] = Field((200, 200), min_length=1, max_length=6, strict=False)
    activation: Literal["tanh", "relu"] = "tanh"

    @model_validator(mode="after")
    def _compatible(self) -> ModelConfig:
        if self.decoder == "made" and self.likelihood != "bernoulli":
            raise ValueError("decoder 'made' models binary pixels: it needs likelihood 'bernoulli'")
        if self.standardize and self.likelihood != "gaussian":
            raise ValueError(f"standardize applies to likelihood 'gaussian' only, not {self.likelihood!r}")
        if any(width < 1 or width > 8192 for width in self.hidden_dims):
            raise ValueError(f"hidden_dims must lie in [1, 8192], got {list(self.hidden_dims)}")
        return self


def _activation(name: str) -> nn.Module:
    return nn.Tanh() if name == "tanh" else nn.ReLU()


def _mlp(sizes: list[int], activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(fan_in, fan_out))
        if index < len(sizes) - 2:
            layers.append(_activation(activation))
    return nn.Sequential(*layers)


def _check_conv_shape(image_shape: tuple[int, ...]) -> None:
    if len(image_shape) != 3 or image_shape[1] % 4 or image_shape[2] % 4:
        raise ValueError(f"conv encoder/decoder needs images [C, H, W] with H, W divisible by 4, got {image_shape}")


class _ConvEncoder(nn.Module):
    def __init__(self, image_shape: tuple[int, ...], out_dim: int) -> None:
        super().__init__()
        _check_conv_shape(image_shape)
        channels, height, width = image_shape
        self.image_shape = image_shape
        self.net = nn.Sequential(
            nn.Conv2d(channels, 32, 4, 2, 1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, 2, 1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64 * (height // 4) * (width // 4), out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.view(-1, *self.image_shape))


class _ConvDecoder(nn.Module):
    def __init__(self, latent_dim: int, image_shape: tuple[int, ...], out_channels: int) -> None:
        super().__init__()
        _check_conv_shape(image_shape)
        _, height, width = image_shape
        self.grid = (64, height // 4, width // 4)
        self.project = nn.Linear(latent_dim, 64 * (height // 4) * (width // 4))
        self.net = nn.Sequential(
            nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, out_channels, 4, 2, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.project(z).view(-1, *self.grid)).flatten(1)


class VAE(nn.Module):
    """q(z|x) = N(mu(x), diag exp(logvar(x))), p(z) = N(0, I), p(x|z) from the configured decoder."""

    def __init__(self, config: ModelConfig, input_dim: int, image_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.config = config
        self.input_dim = input_dim
        self.image_shape = tuple(image_shape)
        hidden = list(config.hidden_dims)
        latent = config.latent_dim
        if config.encoder == "mlp":
            self.encoder: nn.Module = _mlp([input_dim, *hidden, 2 * latent], config.activation)
        else:
            self.encoder = _ConvEncoder(self.image_shape, 2 * latent)
        self.likelihood = LikelihoodHead(
            config.likelihood, input_dim, config.gaussian_variance, config.gaussian_std, config.standardize
        )
        channels = self.likelihood.channels
        if config.decoder == "mlp":
            self.decoder: nn.Module = _mlp([latent, *hidden[::-1], input_dim * channels], config.activation)
        elif config.decoder == "conv":
            self.decoder = _ConvDecoder(latent, self.image_shape, self.image_shape[0] * channels)
        else:
            self.decoder = MadeDecoder(input_dim, latent, hidden, config.activation)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [B, D] -> (mu: [B, Z], logvar: [B, Z])."""
        mu, logvar = self.encoder(self.likelihood.encoder_input(x)).chunk(2, dim=-1)
        return mu, logvar.clamp(-16.0, 10.0)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z) summed over pixels. x: [B, D], z: [B, Z] -> [B] (nats)."""
        if self.config.decoder == "made":
            logits = self.decoder(x, z)
            return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        return self.likelihood.log_prob(x, self.decoder(z))

    @torch.no_grad()
    def reconstruct_mean(self, z: torch.Tensor, library: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder mean in the data's units (greedy autoregressive mean for MADE). z: [B, Z] -> [B, D].

        Count likelihoods scale their proportions by `library: [B]` (observed library sizes) when given."""
        if self.config.decoder == "made":
            return self.decoder.sample(z, greedy=True)
        return self.likelihood.mean(self.decoder(z), library)

    def forward(
        self, x: torch.Tensor, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One reparameterised sample: x: [B, D] -> (log p(x|z): [B], mu: [B, Z], logvar: [B, Z]).

        `noise: [B, Z]` is the standard normal draw of z; by default a fresh one (a cohort passes its own)."""
        mu, logvar = self.encode(x)
        z = mu + (torch.randn_like(mu) if noise is None else noise) * (0.5 * logvar).exp()
        return self.log_likelihood(x, z), mu, logvar


def build_model(config: ModelConfig, input_dim: int, image_shape: tuple[int, ...]) -> VAE:
    """Build a VAE for inputs of `input_dim` pixels shaped `image_shape` ([C, H, W])."""
    return VAE(config, input_dim, image_shape)
