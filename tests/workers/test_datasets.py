"""The sweep driver checks its data set before Ray starts: bad data is exit 2 naming the field, in about a second."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rdvae import DataError
from workers import SweepSpec
from workers.datasets import check_sweep_data, conv_field

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, None),
        ({"model": {"encoder": "conv"}}, "model.encoder"),
        ({"model": {"decoder": "conv"}}, "model.decoder"),
        ({"model": {"decoder": "conv"}, "search_space": {"decoder": ["mlp"]}}, None),
        ({"search_space": {"decoder": ["mlp", "conv"]}}, "search_space.decoder"),
    ],
)
def test_the_field_that_chooses_conv_is_named(fields: dict, expected: str | None) -> None:
    assert conv_field(SweepSpec.model_validate(fields)) == expected


def test_a_spec_is_checked_against_its_data_root(tmp_path: Path) -> None:
    np.save(tmp_path / "real.npy", np.random.default_rng(0).standard_normal((30, 5)))
    spec = SweepSpec.model_validate({"dataset": {"name": "file", "path": "real.npy"}})
    with pytest.raises(DataError, match="'bernoulli' needs values in") as error:
        check_sweep_data(spec, tmp_path)
    assert error.value.field == "model.likelihood"
    gaussian = SweepSpec.model_validate({**spec.model_dump(), "model": {"likelihood": "gaussian"}})
    assert check_sweep_data(gaussian, tmp_path).shape == [30, 5]


def test_the_driver_refuses_bad_data_before_starting_ray(tmp_path: Path) -> None:
    np.save(tmp_path / "grey.npy", np.random.default_rng(0).random((30, 5)))
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps({"dataset": {"name": "file", "path": "grey.npy"}, "n_trials": 1}))
    env = {**os.environ, "RDVAE_DATA_ROOT": str(tmp_path), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "workers", "run", "--spec", str(spec_path), "--sweep-id", "bad-data"]
    started = time.monotonic()
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "model.likelihood: likelihood 'bernoulli' needs values in {0, 1}" in done.stderr
    assert "ray" not in done.stderr.lower() and not (tmp_path / ".rdvae").exists()
    assert time.monotonic() - started < 60
