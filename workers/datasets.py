"""A sweep's data against its model choices, checked before anything runs: at submit and in the driver."""

from __future__ import annotations

from pathlib import Path

from rdvae import DataError, DatasetInfo, inspect_dataset
from workers.spec import SpecError, SweepSpec


def conv_field(spec: SweepSpec) -> str | None:
    """The spec field that puts a conv layer in some trial (the data must then be images with H, W divisible by 4)."""
    if spec.model.encoder == "conv":
        return "model.encoder"
    if spec.search_space.decoder is not None:
        return "search_space.decoder" if "conv" in spec.search_space.decoder else None
    return "model.decoder" if spec.model.decoder == "conv" else None


def check_sweep_data(spec: SweepSpec, root: Path | None = None) -> DatasetInfo:
    """Path, header and size, shape, dtype, NaN/inf, values against `model.likelihood`, conv shapes; the data set's
    digest and shape. Raises `DataError` whose `field` is a dotted path into the spec (`dataset.path`, ...)."""
    return inspect_dataset(spec.dataset, spec.model, conv_field=conv_field(spec), root=root)


def checked_or_spec_error(spec: SweepSpec, root: Path | None = None) -> DatasetInfo:
    """`check_sweep_data`, its refusal as a `SpecError` naming the field (what the `workers` CLI reports)."""
    try:
        return check_sweep_data(spec, root)
    except DataError as error:
        raise SpecError(f"invalid sweep spec: {error.field}: {error.reason}") from error
