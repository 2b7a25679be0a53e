"""Tests of user data files: .npz keys, AnnData .h5ad, sizes read from headers before loading, safe path messages."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import anndata
import h5py
import numpy as np
import pytest
import torch
from scipy import sparse

from rdvae import DataConfig, DataError, ModelConfig, inspect_dataset, load_data


def _file(name: str, **fields: object) -> DataConfig:
    return DataConfig(name="file", path=name, **fields)


def test_user_files_are_never_binarised_by_default_and_built_in_grey_sets_are() -> None:
    assert _file("x.npy").binarization == "none"
    assert DataConfig(name="digits").binarization == "static"
    assert DataConfig(name="mnist5k").binarization == "static"
    assert DataConfig(name="synthetic_counts").binarization == "none"
    assert _file("x.npy", binarization="dynamic").binarization == "dynamic"


def test_grey_levels_in_a_user_file_load_unchanged(data_root: Path) -> None:
    values = np.random.default_rng(0).random((30, 6)).astype(np.float32)
    np.save(data_root / "grey.npy", values)
    splits = load_data(_file("grey.npy"))
    total = torch.cat([splits.train, splits.validation, splits.test])
    assert len(total.unique()) > 100  # not Bernoulli-sampled
    assert sorted(total.sum(1).tolist()) == pytest.approx(sorted(values.sum(1).tolist()))


def test_npz_reads_the_named_key_and_defaults_to_x(data_root: Path) -> None:
    np.savez(data_root / "set.npz", y=np.zeros(30), images=np.full((30, 4, 8), 0.5), x=np.ones((30, 3)))
    assert load_data(_file("set.npz")).input_dim == 3
    named = load_data(_file("set.npz", key="images"))
    assert named.input_dim == 32 and named.image_shape == (1, 4, 8)


def test_an_npz_without_the_key_names_it_and_the_keys_present(data_root: Path) -> None:
    np.savez(data_root / "set.npz", y=np.zeros(30), images=np.full((30, 4), 0.5))
    with pytest.raises(DataError, match=r"no array 'x' in the \.npz \(arrays present: \['images', 'y'\]\)") as error:
        load_data(_file("set.npz"))
    assert error.value.field == "dataset.key"
    with pytest.raises(DataError, match=r"no array 'labels'"):
        load_data(_file("set.npz", key="labels"))


def test_a_key_on_a_npy_is_refused(data_root: Path) -> None:
    np.save(data_root / "one.npy", np.zeros((20, 3)))
    with pytest.raises(DataError, match="a .npy holds one array") as error:
        load_data(_file("one.npy", key="x"))
    assert error.value.field == "dataset.key"


def _bomb(path: Path, declared_shape: tuple[int, ...], payload: bytes = b"") -> None:
    """A .npz whose member's npy header declares `declared_shape` of float32 but holds only `payload`."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": declared_shape})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", header.getvalue() + payload)


def test_an_npz_whose_header_declares_4_gb_is_refused_before_any_allocation(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _bomb(data_root / "bomb.npz", (1_000_000, 1_000))  # 4 GB of float32 declared by a ~200-byte archive
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("np.load ran before the size check"))
    with pytest.raises(DataError, match=r"holds 4,000,000,000 bytes, over the limit of 1,073,741,824 bytes"):
        load_data(_file("bomb.npz"))


def test_an_npz_member_that_unpacks_over_the_limit_is_refused_before_decompressing(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    np.savez_compressed(data_root / "zeros.npz", x=np.zeros((5_000, 1_000), dtype=np.float32))
    assert (data_root / "zeros.npz").stat().st_size < 100_000  # 20 MB of zeros in a few kB
    monkeypatch.setenv("RDVAE_MAX_DATA_BYTES", "1000000")
    opened: list[str] = []
    original = zipfile.ZipFile.open
    monkeypatch.setattr(
        zipfile.ZipFile, "open", lambda self, name, *a, **k: opened.append(str(name)) or original(self, name, *a, **k)
    )
    with pytest.raises(DataError, match=r"unpacks to 20,000,128 bytes, over the limit of 1,000,000 bytes"):
        load_data(_file("zeros.npz"))
    assert opened == []  # no member was opened, so nothing was decompressed


def test_a_npy_over_the_limit_is_refused_from_its_header(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    np.save(data_root / "big.npy", np.zeros((100, 100), dtype=np.float64))
    monkeypatch.setenv("RDVAE_MAX_DATA_BYTES", "79999")
    with pytest.raises(DataError, match=r"holds 80,000 bytes, over the limit of 79,999 bytes \(RDVAE_MAX_DATA_BYTES\)"):
        load_data(_file("big.npy"))


def _anndata(path: Path, matrix: np.ndarray | sparse.spmatrix, **layers: object) -> None:
    anndata.AnnData(X=matrix, layers=layers or None).write_h5ad(path)


def test_h5ad_reads_x_and_sparse_layers(data_root: Path) -> None:
    counts = np.random.default_rng(0).poisson(3.0, size=(30, 12)).astype(np.float32)
    _anndata(data_root / "cells.h5ad", sparse.csr_matrix(np.log1p(counts)), counts=sparse.csr_matrix(counts))
    x = load_data(_file("cells.h5ad"))
    assert x.input_dim == 12 and x.image_shape == (12,)
    layer = load_data(_file("cells.h5ad", key="counts"))
    total = torch.cat([layer.train, layer.validation, layer.test])
    assert float(total.sum()) == pytest.approx(float(counts.sum()))
    info = inspect_dataset(_file("cells.h5ad", key="counts"), ModelConfig(likelihood="nb"))
    assert info.shape == [30, 12] and info.likelihood == "nb"
    with pytest.raises(DataError, match="likelihood 'nb' needs non-negative integer counts") as error:
        inspect_dataset(_file("cells.h5ad"), ModelConfig(likelihood="nb"))  # X holds log1p values
    assert error.value.field == "model.likelihood"


def test_h5ad_names_a_missing_layer_and_the_layers_present(data_root: Path) -> None:
    _anndata(data_root / "cells.h5ad", np.ones((20, 3), dtype=np.float32), counts=np.ones((20, 3)))
    with pytest.raises(DataError, match=r"no layer 'raw' in the AnnData file \(layers: \['counts'\]\)") as error:
        load_data(_file("cells.h5ad", key="raw"))
    assert error.value.field == "dataset.key"


def test_h5ad_external_links_are_not_followed(data_root: Path, tmp_path: Path) -> None:
    with h5py.File(tmp_path / "secret.h5", "w") as secret:
        secret["X"] = np.ones((20, 3))
    with h5py.File(data_root / "link.h5ad", "w") as linked:
        linked["X"] = h5py.ExternalLink(str(tmp_path / "secret.h5"), "X")
    with pytest.raises(DataError, match="X is an external link") as error:
        load_data(_file("link.h5ad"))
    assert str(tmp_path) not in str(error.value)


def test_a_file_that_is_not_hdf5_is_refused(data_root: Path) -> None:
    (data_root / "fake.h5ad").write_bytes(b"not hdf5" * 20)
    with pytest.raises(DataError, match=r"'fake.h5ad': not a readable AnnData \(\.h5ad\) file"):
        load_data(_file("fake.h5ad"))
    with h5py.File(data_root / "broken.h5ad", "w") as broken:  # a CSR matrix without its shape
        broken.create_group("X").attrs["encoding-type"] = "csr_matrix"
        broken["X"]["data"] = np.ones(3)
    with pytest.raises(DataError, match=r"'broken.h5ad': not a readable AnnData"):
        load_data(_file("broken.h5ad"))


def test_path_errors_name_only_the_users_path(data_root: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "secret.npy", np.zeros((20, 3)))
    os.symlink(tmp_path / "secret.npy", data_root / "link.npy")
    for path in ("link.npy", str(tmp_path / "secret.npy"), "missing.npy", "/proc/self/root/etc/passwd.npy"):
        with pytest.raises(DataError) as error:
            load_data(_file(path))
        message = str(error.value)
        assert str(data_root) not in message.replace(path, "")  # neither the root nor a resolved target
        assert "secret" not in message.replace(path, "") and "/proc/" not in message.replace(path, "")
        assert error.value.field == "dataset.path"
