"""Tests of rdvae.data: splits, binarisation, and the refusal of every bad user data file or path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from rdvae import DataConfig, load_data, resolve_user_path


def _rows(tensor: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in tensor}


def test_unknown_dataset_is_refused_with_the_choices() -> None:
    with pytest.raises(ValidationError, match=r"unknown dataset 'nope'.*digits"):
        DataConfig(name="nope")


def test_file_dataset_needs_a_path_and_others_refuse_one() -> None:
    with pytest.raises(ValidationError, match="needs `path`"):
        DataConfig(name="file")
    with pytest.raises(ValidationError, match="only for dataset 'file'"):
        DataConfig(name="digits", path="x.npy")


def test_splits_are_disjoint_complete_and_deterministic() -> None:
    config = DataConfig(name="digits", binarization="none", split_seed=3)
    splits = load_data(config)
    train, validation, test = _rows(splits.train), _rows(splits.validation), _rows(splits.test)
    # digits has 1 797 distinct images: disjoint row sets that add up to all of them.
    assert len(train) + len(validation) + len(test) == 1797
    assert not (train & validation or train & test or validation & test)
    assert (splits.validation.shape[0], splits.test.shape[0]) == (180, 180)
    again = load_data(config)
    assert torch.equal(again.train, splits.train) and torch.equal(again.test, splits.test)
    other = load_data(DataConfig(name="digits", binarization="none", split_seed=4))
    assert not torch.equal(other.test, splits.test)
    assert _rows(other.train) | _rows(other.validation) | _rows(other.test) == train | validation | test


def test_static_binarisation_is_binary_and_fixed_by_the_seed() -> None:
    splits = load_data(DataConfig(name="digits"))
    assert set(splits.train.unique().tolist()) == {0.0, 1.0}
    assert not splits.dynamic
    assert torch.equal(load_data(DataConfig(name="digits")).train, splits.train)
    assert splits.image_shape == (1, 8, 8) and splits.input_dim == 64


def test_dynamic_binarisation_keeps_train_probabilities_and_fixes_held_out_bits() -> None:
    splits = load_data(DataConfig(name="digits", binarization="dynamic"))
    assert splits.dynamic
    assert len(splits.train.unique()) > 2  # grey levels: binarised afresh in every epoch by the trainer
    for held_out in (splits.validation, splits.test):
        assert set(held_out.unique().tolist()) == {0.0, 1.0}
    again = load_data(DataConfig(name="digits", binarization="dynamic"))
    assert torch.equal(again.validation, splits.validation) and torch.equal(again.test, splits.test)


def test_synthetic_data_has_the_configured_size() -> None:
    splits = load_data(DataConfig(name="synthetic", synthetic_examples=500, binarization="none"))
    assert splits.train.shape[0] + splits.validation.shape[0] + splits.test.shape[0] == 500
    assert float(splits.train.min()) >= 0.0 and float(splits.train.max()) <= 1.0
    assert len(splits.train.unique()) > 1000  # probabilities sigmoid(Wz + b), not bits


def test_mnist5k_is_5000_images_of_28_by_28() -> None:
    splits = load_data(DataConfig(name="mnist5k"))
    assert splits.image_shape == (1, 28, 28)
    assert splits.train.shape == (4000, 784)
    assert splits.validation.shape[0] == splits.test.shape[0] == 500


# --- user files -----------------------------------------------------------------------------------------------


def _file(name: str) -> DataConfig:
    return DataConfig(name="file", path=name, binarization="none")


def test_a_valid_image_file_loads_with_its_shape(data_root: Path) -> None:
    values = np.random.default_rng(0).random((40, 4, 8)).astype(np.float64)
    np.save(data_root / "images.npy", values)
    splits = load_data(_file("images.npy"))
    assert splits.image_shape == (1, 4, 8)
    assert splits.input_dim == 32
    total = torch.cat([splits.train, splits.validation, splits.test])
    assert _rows(total) == _rows(torch.from_numpy(values.reshape(40, -1).astype(np.float32)))


def test_a_valid_npz_prefers_the_array_named_x(data_root: Path) -> None:
    np.savez(data_root / "set.npz", labels=np.zeros((20, 3)), x=np.full((20, 5), 0.5))
    assert load_data(_file("set.npz")).input_dim == 5


def test_an_absolute_path_inside_the_root_is_accepted(data_root: Path) -> None:
    np.save(data_root / "ok.npy", np.zeros((20, 3)))
    assert resolve_user_path(str(data_root / "ok.npy")) == (data_root / "ok.npy").resolve()


def test_dot_dot_is_refused(data_root: Path) -> None:
    (data_root / "sub").mkdir()
    np.save(data_root / "ok.npy", np.zeros((20, 3)))
    with pytest.raises(ValueError, match=r"'\.\.' is not allowed"):
        load_data(_file("sub/../ok.npy"))


def test_an_absolute_path_outside_the_root_is_refused(data_root: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "outside.npy", np.zeros((20, 3)))
    with pytest.raises(ValueError, match="outside the data root"):
        load_data(_file(str(tmp_path / "outside.npy")))


def test_a_symlink_out_of_the_root_is_refused(data_root: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "secret.npy", np.zeros((20, 3)))
    os.symlink(tmp_path / "secret.npy", data_root / "link.npy")
    with pytest.raises(ValueError, match="outside the data root"):
        load_data(_file("link.npy"))


def test_a_symlink_to_another_suffix_is_refused(data_root: Path) -> None:
    (data_root / "notes.txt").write_text("hello")
    os.symlink(data_root / "notes.txt", data_root / "notes.npy")
    with pytest.raises(ValueError, match=r"expected a \.npy, \.npz or \.h5ad file"):
        load_data(_file("notes.npy"))


def test_a_wrong_suffix_is_refused(data_root: Path) -> None:
    (data_root / "table.csv").write_text("0,1\n1,0\n")
    with pytest.raises(ValueError, match=r"expected a \.npy, \.npz or \.h5ad file"):
        load_data(_file("table.csv"))


def test_a_missing_file_is_refused(data_root: Path) -> None:
    with pytest.raises(ValueError, match="no such file"):
        load_data(_file("absent.npy"))


def test_the_root_can_be_passed_explicitly(tmp_path: Path) -> None:
    np.save(tmp_path / "here.npy", np.zeros((20, 3)))
    assert load_data(_file("here.npy"), root=tmp_path).input_dim == 3


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.array([[0.5, np.nan]] * 20), "NaN or inf"),
        (np.array([[0.5, np.inf]] * 20), "NaN or inf"),
        (np.zeros((0, 10)), "empty array"),
        (np.zeros((10, 0)), "empty array"),
        (np.zeros(50), r"expected shape \[N, D\]"),
        (np.zeros((20, 1, 2, 2, 2)), r"expected shape \[N, D\]"),
        (np.array([["a", "b"]] * 20), "expected real numbers"),
        (np.full((20, 2), 0.5 + 0.5j), "expected real numbers"),
        (np.zeros((5, 3)), "too few to split"),
    ],
)
def test_bad_arrays_are_refused(data_root: Path, array: np.ndarray, message: str) -> None:
    np.save(data_root / "bad.npy", array)
    with pytest.raises(ValueError, match=message):
        load_data(_file("bad.npy"))


def test_a_pickled_object_array_is_refused(data_root: Path) -> None:
    np.save(data_root / "objects.npy", np.array([{"a": 1}] * 20, dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="not a readable numpy array file"):
        load_data(_file("objects.npy"))


@pytest.mark.parametrize("content", [b"definitely not numpy" * 10, None])
def test_a_corrupt_npy_is_refused(data_root: Path, content: bytes | None) -> None:
    if content is None:  # a truncated file: a valid header, then too few bytes
        np.save(data_root / "bad.npy", np.zeros((100, 10)))
        content = (data_root / "bad.npy").read_bytes()[:300]
    (data_root / "bad.npy").write_bytes(content)
    with pytest.raises(ValueError, match="not a readable numpy array file"):
        load_data(_file("bad.npy"))


def test_an_empty_npz_is_refused(data_root: Path) -> None:
    np.savez(data_root / "none.npz")
    with pytest.raises(ValueError, match="holds no array"):
        load_data(_file("none.npz"))


def test_fractions_that_leave_no_training_data_are_refused(data_root: Path) -> None:
    np.save(data_root / "ten.npy", np.zeros((10, 3)))
    config = DataConfig(name="file", path="ten.npy", binarization="none", validation_fraction=0.49, test_fraction=0.49)
    with pytest.raises(ValueError, match="no training split"):
        load_data(config)
