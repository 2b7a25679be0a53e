"""Data against model: the values each likelihood needs, conv shapes, and the data set's lineage (digest, shape).

`inspect_dataset` is the submit-time check (the service and the sweep driver call it before anything runs):
header and size first, then the values, then a `DatasetInfo` with the digest that MLflow and the API record.
`check_splits` is the same value rule at training time, on the tensors `fit` is about to train on.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, Field

from rdvae.data import DataConfig, DataSplits, check_binarizable, load_raw
from rdvae.datafiles import DataError, file_digest, read_array, resolve_user_path, shown
from rdvae.likelihoods import COUNT_LIKELIHOODS
from rdvae.models import ModelConfig


@dataclass(frozen=True)
class ValueSummary:
    """What the likelihood rules need to know about a data set's values."""

    minimum: float
    maximum: float
    integral: bool
    binary: bool


def summarize(values: np.ndarray | torch.Tensor) -> ValueSummary:
    """Range, integrality and binariness of the finite entries of `values` (any shape). NaN/inf are refused where
    data are loaded; in tensors handed to `fit` directly they surface as a diverged loss naming the step."""
    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    array = array[np.isfinite(array)] if array.size else array
    if array.size == 0:
        return ValueSummary(minimum=0.0, maximum=0.0, integral=True, binary=True)
    integral = bool(np.all(array == np.round(array)))
    return ValueSummary(
        minimum=float(array.min()),
        maximum=float(array.max()),
        integral=integral,
        binary=integral and bool(np.all((array == 0) | (array == 1))),
    )


def check_likelihood(summary: ValueSummary, likelihood: str, binarized: bool, name: str) -> None:
    """Bernoulli needs {0, 1} (grey levels in [0, 1] when binarised); counts need non-negative integers; a
    Gaussian takes any finite value. Raises `DataError` on `model.likelihood` saying what to change."""
    found = f"data set {name} has values in [{summary.minimum:.4g}, {summary.maximum:.4g}]"
    if likelihood == "bernoulli" and not binarized and not summary.binary:
        raise DataError(
            "model.likelihood",
            f"likelihood 'bernoulli' needs values in {{0, 1}}; {found}, not all 0 or 1: set dataset.binarization "
            "'static' or 'dynamic' for grey levels in [0, 1], or use likelihood 'gaussian'",
        )
    if likelihood in COUNT_LIKELIHOODS and (summary.minimum < 0 or not summary.integral):
        raise DataError(
            "model.likelihood",
            f"likelihood {likelihood!r} needs non-negative integer counts; {found}"
            f"{'' if summary.integral else ', not all integers'}: use likelihood 'gaussian' for real values",
        )


def check_conv(image_shape: tuple[int, ...], field: str, name: str) -> None:
    """Conv encoders/decoders halve H and W twice: images [C, H, W] with H and W divisible by 4."""
    if len(image_shape) != 3 or image_shape[1] % 4 or image_shape[2] % 4:
        shape = "feature vectors" if len(image_shape) != 3 else f"images {list(image_shape)}"
        raise DataError(
            field, f"conv needs images [C, H, W] with H and W divisible by 4; data set {name} holds {shape}"
        )


def check_splits(splits: DataSplits, model: ModelConfig) -> None:
    """The likelihood rule on the tensors about to be trained on (dynamic binarisation: train holds grey levels)."""
    held_out = summarize(torch.cat([splits.validation, splits.test]))
    train = summarize(splits.train)
    for summary, binarized in ((train, splits.dynamic), (held_out, False)):
        check_likelihood(summary, model.likelihood, binarized, "(training data)")


class DatasetInfo(BaseModel):
    """A data set's lineage: what it is, its digest and shape, and the likelihood it is modelled with."""

    name: str = Field(description="Registered data set or `file`.")
    path: str | None = Field(None, description="`file`: the path as given, relative to the data root.")
    key: str | None = None
    digest: str = Field(description="`sha256:<hex>` of the file's bytes; of the float32 array for built-in sets.")
    shape: list[int] = Field(description="Shape of the stored array, examples first.")
    dtype: str
    likelihood: str
    binarization: str


@functools.lru_cache(maxsize=16)
def _builtin(config: DataConfig) -> tuple[ValueSummary, tuple[int, ...], tuple[int, ...], str]:
    values, image_shape = load_raw(config)
    array = np.ascontiguousarray(values, dtype=np.float32)
    digest = hashlib.sha256(array.tobytes()).hexdigest()
    return summarize(array), tuple(array.shape), image_shape, f"sha256:{digest}"


def _raw_values_key(data: DataConfig) -> DataConfig:
    """The fields a built-in set's values depend on (the seed and sizes of the synthetic sets only): the cache key."""
    if not data.name.startswith("synthetic"):
        return DataConfig(name=data.name)
    sizes = {"synthetic_examples": data.synthetic_examples, "synthetic_latent_dim": data.synthetic_latent_dim}
    return DataConfig(name=data.name, split_seed=data.split_seed, **sizes)


def inspect_dataset(
    data: DataConfig, model: ModelConfig, conv_field: str | None = None, root: Path | None = None
) -> DatasetInfo:
    """Check `data` against `model` before a run: path, header, size, shape, dtype, NaN/inf, value range for the
    likelihood, conv divisibility (when `conv_field`, the field choosing conv, is given). Raises `DataError`."""
    if data.name == "file":
        name = shown(str(data.path))
        path = resolve_user_path(str(data.path), root)
        array, header = read_array(path, name, data.key)
        values = array.reshape(array.shape[0], -1).astype(np.float32)
        check_binarizable(values, data)
        summary, shape, image_shape = summarize(values), header.shape, header.image_shape
        dtype, digest = str(header.dtype), file_digest(path)
    else:
        name = repr(data.name)
        summary, shape, image_shape, digest = _builtin(_raw_values_key(data))
        dtype = "float32"
        if data.binarization != "none" and (summary.minimum < 0.0 or summary.maximum > 1.0):
            raise DataError(
                "dataset.binarization",
                f"{data.binarization} binarisation samples Bernoulli(x): values must lie in [0, 1], data set {name} "
                f"has [{summary.minimum:.4g}, {summary.maximum:.4g}]; use binarization 'none'",
            )
    check_likelihood(summary, model.likelihood, data.binarization != "none", name)
    if conv_field is not None:
        check_conv(image_shape, conv_field, name)
    return DatasetInfo(
        name=data.name,
        path=data.path,
        key=data.key,
        digest=digest,
        shape=list(shape),
        dtype=dtype,
        likelihood=model.likelihood,
        binarization=data.binarization,
    )
