"""Tests of rdvae.datacheck: each likelihood's value rule, conv shapes, the digest, and the NB VAE on known counts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from rdvae import (
    DataConfig,
    DataError,
    ModelConfig,
    ObjectiveConfig,
    RunConfig,
    TrainConfig,
    fit,
    inspect_dataset,
    load_data,
    synthetic_counts,
)


def _file(name: str, **fields: object) -> DataConfig:
    return DataConfig(name="file", path=name, **fields)


GREY = np.random.default_rng(0).random((30, 16)).astype(np.float32)
COUNTS = np.random.default_rng(1).poisson(5.0, size=(30, 16)).astype(np.int64)


@pytest.mark.parametrize(
    ("array", "likelihood", "binarization", "field", "message"),
    [
        (GREY, "bernoulli", "none", "model.likelihood", r"'bernoulli' needs values in \{0, 1\}.*not all 0 or 1"),
        (COUNTS, "bernoulli", "none", "model.likelihood", r"'bernoulli' needs values in \{0, 1\}"),
        (GREY, "poisson", "none", "model.likelihood", "'poisson' needs non-negative integer counts.*not all integers"),
        (GREY * 3.0, "nb", "none", "model.likelihood", "'nb' needs non-negative integer counts"),
        (COUNTS - 2, "zinb", "none", "model.likelihood", r"'zinb' needs non-negative integer counts.*\[-2, "),
        (COUNTS, "bernoulli", "static", "dataset.binarization", r"values must lie in \[0, 1\]"),
        (np.where(GREY > 0.5, np.nan, GREY), "gaussian", "none", "dataset.path", r"contains NaN or inf \(\d+ values\)"),
        (np.where(GREY > 0.5, np.inf, GREY), "gaussian", "none", "dataset.path", "contains NaN or inf"),
    ],
)
def test_values_are_checked_against_the_likelihood(
    data_root: Path, array: np.ndarray, likelihood: str, binarization: str, field: str, message: str
) -> None:
    np.save(data_root / "data.npy", array)
    with pytest.raises(DataError, match=message) as error:
        inspect_dataset(_file("data.npy", binarization=binarization), ModelConfig(likelihood=likelihood))
    assert error.value.field == field


@pytest.mark.parametrize(
    ("array", "likelihood", "binarization"),
    [
        (GREY, "bernoulli", "static"),
        (GREY, "bernoulli", "dynamic"),
        ((GREY > 0.5).astype(np.uint8), "bernoulli", "none"),
        (1e3 * (GREY - 0.5), "gaussian", "none"),
        (COUNTS, "poisson", "none"),
        (COUNTS.astype(np.float64), "nb", "none"),
        (COUNTS, "zinb", "none"),
    ],
)
def test_values_the_likelihood_models_are_accepted(
    data_root: Path, array: np.ndarray, likelihood: str, binarization: str
) -> None:
    np.save(data_root / "data.npy", array)
    info = inspect_dataset(_file("data.npy", binarization=binarization), ModelConfig(likelihood=likelihood))
    digest = hashlib.sha256((data_root / "data.npy").read_bytes()).hexdigest()
    assert info.digest == f"sha256:{digest}" and info.shape == [30, 16] and info.dtype == str(array.dtype)
    assert (info.likelihood, info.binarization, info.path) == (likelihood, binarization, "data.npy")


def test_training_refuses_what_the_likelihood_cannot_model(data_root: Path, make_run: object) -> None:
    np.save(data_root / "grey.npy", GREY)
    run = make_run(data=_file("grey.npy"), epochs=1)  # bernoulli on grey levels, no binarisation asked
    with pytest.raises(DataError, match=r"'bernoulli' needs values in \{0, 1\}"):
        fit(run)


def test_conv_needs_images_divisible_by_4(data_root: Path) -> None:
    np.save(data_root / "images.npy", np.zeros((20, 1, 6, 8)))
    np.save(data_root / "vectors.npy", np.zeros((20, 16)))
    with pytest.raises(DataError, match=r"divisible by 4; data set 'images.npy' holds images \[1, 6, 8\]") as error:
        inspect_dataset(_file("images.npy"), ModelConfig(likelihood="gaussian"), conv_field="model.encoder")
    assert error.value.field == "model.encoder"
    with pytest.raises(DataError, match="holds feature vectors"):
        inspect_dataset(_file("vectors.npy"), ModelConfig(likelihood="gaussian"), conv_field="model.decoder")
    np.save(data_root / "ok.npy", np.zeros((20, 8, 12)))
    assert inspect_dataset(_file("ok.npy"), ModelConfig(likelihood="gaussian"), conv_field="model.encoder")


def test_built_in_sets_have_a_stable_digest_of_their_array() -> None:
    digits = inspect_dataset(DataConfig(name="digits"), ModelConfig())
    assert digits.shape == [1797, 64] and digits.binarization == "static"
    assert digits.digest == inspect_dataset(DataConfig(name="digits", split_seed=5), ModelConfig()).digest
    counts = inspect_dataset(DataConfig(name="synthetic_counts"), ModelConfig(likelihood="nb"))
    assert counts.shape == [2000, 50] and counts.digest != digits.digest
    with pytest.raises(DataError, match="'bernoulli' needs values in"):
        inspect_dataset(DataConfig(name="digits", binarization="none"), ModelConfig())


def test_synthetic_counts_follow_the_known_negative_binomial_model() -> None:
    config = DataConfig(name="synthetic_counts", synthetic_examples=3000)
    counts, mean = synthetic_counts(config)
    assert counts.shape == (3000, 50) and np.all(counts == np.round(counts)) and counts.min() >= 0
    # NB(mean, theta = 4): Var = mean + mean^2 / 4, checked on pooled standardised residuals
    residuals = (counts - mean) / np.sqrt(mean + mean**2 / 4.0)
    assert abs(residuals.mean()) < 0.02 and abs(residuals.var() - 1.0) < 0.05
    assert np.array_equal(synthetic_counts(config)[0], counts)


def test_an_nb_vae_recovers_the_rates_of_known_counts_and_beats_a_latent_free_model() -> None:
    """Fit on synthetic_counts (2 true latent dimensions): it needs rate, reconstructs the true means, and its
    distortion beats the best latent-free NB model (per-feature proportions, the true dispersion)."""
    data = DataConfig(name="synthetic_counts", synthetic_examples=2000)
    run = RunConfig(
        data=data,
        model=ModelConfig(likelihood="nb", latent_dim=2, hidden_dims=(64,)),
        objective=ObjectiveConfig(),
        train=TrainConfig(epochs=40, batch_size=64, learning_rate=3e-3, iwae_samples=20, device="cpu", seed=0),
    )
    result = fit(run)
    assert result.test is not None
    splits = load_data(data)
    test = splits.test.numpy().astype(np.float64)
    library = test.sum(1, keepdims=True)
    proportions = splits.train.numpy().sum(0) / splits.train.numpy().sum()
    baseline_mean = library * proportions
    theta = 4.0
    baseline_distortion = -stats.nbinom.logpmf(test, theta, theta / (theta + baseline_mean)).sum(1).mean()
    assert result.test.rate > 1.0
    assert result.test.distortion < baseline_distortion - 20.0, (result.test.distortion, baseline_distortion)
    assert result.test.iwae_ll is not None and -result.test.iwae_ll < baseline_distortion
    # the reconstructed means track the true ones (the generator's order is undone by the split's permutation)
    counts, true_mean = synthetic_counts(data)
    order = np.random.default_rng(data.split_seed).permutation(counts.shape[0])
    true_test = true_mean[order][-splits.test.shape[0] :]
    model = result.model.eval()
    with torch.no_grad():
        mu, _logvar = model.encode(splits.test)
        recovered = model.reconstruct_mean(mu, splits.test.sum(1)).numpy()
    correlation = np.corrcoef(np.log(recovered.ravel()), np.log(true_test.ravel()))[0, 1]
    baseline_correlation = np.corrcoef(np.log(baseline_mean.ravel()), np.log(true_test.ravel()))[0, 1]
    assert correlation > 0.95 and correlation > baseline_correlation + 0.05, (correlation, baseline_correlation)
    theta_learned = float(model.likelihood.log_theta.detach().exp().median())
    assert 2.0 < theta_learned < 8.0  # the true inverse dispersion is 4
