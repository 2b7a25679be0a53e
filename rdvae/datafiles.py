"""User data files under the data root: path confinement, headers read before any data, .npy/.npz/.h5ad loading.

The contract of a `file` data set (`DataConfig(name="file", path=..., key=...)`):

- `path` is relative to the data root (`RDVAE_DATA_ROOT`, default `./data`) and must stay inside it: no `..`, no
  symlink out of it, suffix `.npy`, `.npz` or `.h5ad` (also after resolving symlinks).
- `.npy`: the array itself. `.npz`: the array named `key` (default `x`); a missing name is an error that lists the
  names present. `.h5ad` (AnnData): `X`, or the layer named `key`; dense or scipy sparse (CSR/CSC), densified to
  float32. HDF5 external links, external storage and virtual data sets are refused (they could read files outside
  the data root).
- Shape `[N, D]`, `[N, H, W]` (one channel) or `[N, C, H, W]`, at least 10 examples; real numbers (bool, integer,
  float); no pickled objects.
- Size: the array's bytes, read from the header before any data (`.npz`: the zip member's uncompressed size and
  its npy header, before decompressing; `.h5ad`: N x D x 4 bytes of dense float32), must not exceed
  `RDVAE_MAX_DATA_BYTES` (default 1 GiB).

Errors are `DataError`s that name the field (`dataset.path`, `dataset.key`) and the user's path as given, never
an absolute server path or a symlink target.
"""

from __future__ import annotations

import hashlib
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import h5py

DATA_ROOT_ENV = "RDVAE_DATA_ROOT"
MAX_DATA_BYTES_ENV = "RDVAE_MAX_DATA_BYTES"
DEFAULT_MAX_DATA_BYTES = 1 << 30
NPZ_DEFAULT_KEY = "x"
SUFFIXES = (".npy", ".npz", ".h5ad")
MIN_EXAMPLES = 10


class DataError(ValueError):
    """Bad data for a run: `field` is the config field to change (`dataset.path`, `model.likelihood`, ...)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class ArrayHeader:
    """What a file says about its array before any of the data is read."""

    shape: tuple[int, ...]
    dtype: np.dtype
    sparse: bool = False

    @property
    def nbytes(self) -> int:
        """Bytes of the array once in memory (sparse: dense float32, what training uses)."""
        itemsize = 4 if self.sparse else self.dtype.itemsize
        return math.prod(self.shape) * itemsize

    @property
    def image_shape(self) -> tuple[int, ...]:
        """[C, H, W] for images ([N, H, W] gets one channel), [D] for feature vectors."""
        rest = self.shape[1:]
        return (1, *rest) if len(rest) == 2 else rest


def data_root() -> Path:
    """The directory user data paths must resolve inside (`RDVAE_DATA_ROOT`, default `./data`)."""
    return Path(os.environ.get(DATA_ROOT_ENV, "data")).resolve()


def max_data_bytes() -> int:
    """The size limit of one data array (`RDVAE_MAX_DATA_BYTES`, default 1 GiB)."""
    return int(os.environ.get(MAX_DATA_BYTES_ENV, DEFAULT_MAX_DATA_BYTES))


def shown(path: str) -> str:
    """The user's path as given, quoted and shortened for messages."""
    return repr(path if len(path) <= 100 else path[:100] + "...")


def resolve_user_path(path: str, root: Path | None = None) -> Path:
    """Resolve `path` (relative to `root`) and refuse anything that escapes the root, symlinks included."""
    root = (root or data_root()).resolve()
    name = shown(path)
    candidate = Path(path)
    if ".." in candidate.parts:
        raise DataError("dataset.path", f"data path {name}: '..' is not allowed")
    full = candidate if candidate.is_absolute() else root / candidate
    try:
        resolved = full.resolve()
        is_file = resolved.is_file()
    except (OSError, ValueError) as error:  # a name too long for the file system, an embedded NUL byte
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise DataError("dataset.path", f"data path {name}: {reason}") from error
    if not resolved.is_relative_to(root):
        raise DataError("dataset.path", f"data path {name} resolves outside the data root")
    if full.suffix not in SUFFIXES or resolved.suffix != full.suffix:
        raise DataError("dataset.path", f"data path {name}: expected a .npy, .npz or .h5ad file")
    if not is_file:
        raise DataError("dataset.path", f"data path {name}: no such file under the data root")
    return resolved


def _npy_header(handle: IO[bytes], name: str) -> tuple[tuple[int, ...], np.dtype]:
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        else:  # 2.0 and 3.0 differ only in the header's text encoding
            shape, _fortran, dtype = np.lib.format.read_array_header_2_0(handle)
    except (ValueError, EOFError, OSError) as error:
        raise DataError("dataset.path", f"data file {name}: not a readable numpy array file ({error})") from error
    if dtype.hasobject:
        raise DataError("dataset.path", f"data file {name}: not a readable numpy array file (pickled objects)")
    return tuple(int(s) for s in shape), dtype


def _npz_member(archive: zipfile.ZipFile, name: str, key: str | None) -> zipfile.ZipInfo:
    infos = archive.infolist()
    members = {info.filename.removesuffix(".npy"): info for info in infos if info.filename.endswith(".npy")}
    if not members:
        raise DataError("dataset.path", f"data file {name}: the .npz archive holds no array")
    wanted = key or NPZ_DEFAULT_KEY
    if wanted not in members:
        raise DataError(
            "dataset.key",
            f"data file {name}: no array {wanted!r} in the .npz (arrays present: {sorted(members)}); "
            "name the one to use with dataset.key",
        )
    return members[wanted]


def _h5_element(handle: h5py.File, name: str, key: str | None) -> str:
    import h5py

    element = "X" if key is None else f"layers/{key}"
    if key is not None and key not in handle.get("layers", {}):
        present = sorted(handle["layers"]) if "layers" in handle else []
        raise DataError("dataset.key", f"data file {name}: no layer {key!r} in the AnnData file (layers: {present})")
    if element not in handle:
        raise DataError("dataset.path", f"data file {name}: the AnnData file holds no X matrix; name a layer")
    parts = element.split("/")
    for depth in range(1, len(parts) + 1):
        link = handle.get("/".join(parts[:depth]), getlink=True)
        if isinstance(link, h5py.ExternalLink):
            raise DataError("dataset.path", f"data file {name}: {element} is an external link (not followed)")
    node = handle[element]
    children = [node] if isinstance(node, h5py.Dataset) else [node[k] for k in node]
    datasets = [child for child in children if isinstance(child, h5py.Dataset)]
    if any(d.is_virtual or d.external for d in datasets):
        raise DataError("dataset.path", f"data file {name}: {element} uses external or virtual storage (refused)")
    return element


def _h5ad_header(path: Path, name: str, key: str | None) -> ArrayHeader:
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            node = handle[_h5_element(handle, name, key)]
            if isinstance(node, h5py.Dataset):
                return ArrayHeader(tuple(int(s) for s in node.shape), node.dtype)
            encoding = node.attrs.get("encoding-type", "")
            if encoding not in ("csr_matrix", "csc_matrix") or "data" not in node:
                raise DataError("dataset.path", f"data file {name}: unsupported AnnData matrix encoding {encoding!r}")
            shape = tuple(int(s) for s in node.attrs["shape"])
            return ArrayHeader(shape, node["data"].dtype, sparse=True)
    except DataError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as error:  # not HDF5, or an X without its parts
        raise DataError("dataset.path", f"data file {name}: not a readable AnnData (.h5ad) file") from error


def read_header(path: Path, name: str, key: str | None = None) -> ArrayHeader:
    """The stored array's shape and dtype, from the file's header only. `name`: the user's path, for messages."""
    if path.suffix == ".h5ad":
        return _h5ad_header(path, name, key)
    if key is not None and path.suffix == ".npy":
        raise DataError("dataset.key", f"data file {name}: a .npy holds one array; dataset.key is for .npz/.h5ad")
    if path.suffix == ".npy":
        with path.open("rb") as handle:
            shape, dtype = _npy_header(handle, name)
            offset = handle.tell()
        header = ArrayHeader(shape, dtype)
        if offset + header.nbytes > path.stat().st_size:
            raise DataError("dataset.path", f"data file {name}: not a readable numpy array file (truncated)")
        return header
    try:
        with zipfile.ZipFile(path) as archive:
            member = _npz_member(archive, name, key)
            _check_size(member.file_size, name, "unpacks to")  # before any decompression
            with archive.open(member) as handle:
                shape, dtype = _npy_header(handle, name)
    except zipfile.BadZipFile as error:
        raise DataError("dataset.path", f"data file {name}: not a readable .npz (zip) archive") from error
    return ArrayHeader(shape, dtype)


def _check_size(nbytes: int, name: str, verb: str = "holds") -> None:
    limit = max_data_bytes()
    if nbytes > limit:
        raise DataError(
            "dataset.path",
            f"data file {name}: {verb} {nbytes:,} bytes, over the limit of {limit:,} bytes ({MAX_DATA_BYTES_ENV})",
        )


def check_header(header: ArrayHeader, name: str) -> None:
    """Size, shape and dtype rules of the contract (module docstring), before any data is read."""
    _check_size(header.nbytes, name)
    if len(header.shape) < 2 or len(header.shape) > 4:
        raise DataError(
            "dataset.path", f"data file {name}: expected shape [N, D], [N, H, W] or [N, C, H, W], got {header.shape}"
        )
    if header.shape[0] == 0 or math.prod(header.shape[1:]) == 0:
        raise DataError("dataset.path", f"data file {name}: empty array of shape {header.shape}")
    kind = header.dtype.kind
    if kind not in "biuf":
        raise DataError("dataset.path", f"data file {name}: expected real numbers, got dtype {header.dtype}")
    if header.shape[0] < MIN_EXAMPLES:
        raise DataError(
            "dataset.path",
            f"data file {name}: {header.shape[0]} examples are too few to split (need >= {MIN_EXAMPLES})",
        )


def _element_name(path: Path, key: str | None) -> str:
    if path.suffix == ".npz":
        return f"array {key or NPZ_DEFAULT_KEY!r}"
    return "X" if key is None else f"layer {key!r}"


def read_array(path: Path, name: str, key: str | None = None) -> tuple[np.ndarray, ArrayHeader]:
    """Check the header, then load the array (dense, its stored dtype) and return it with the header."""
    header = read_header(path, name, key)
    try:
        check_header(header, name if path.suffix == ".npy" else f"{name}, {_element_name(path, key)}")
    except DataError as error:  # the array `key` chose is the one to change
        raise DataError("dataset.key" if key is not None else error.field, error.reason) from None
    try:
        if path.suffix == ".h5ad":
            import anndata
            import h5py

            with h5py.File(path, "r") as handle:
                matrix = anndata.io.read_elem(handle[_h5_element(handle, name, key)])
            array = matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix)
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                array = archive[key or NPZ_DEFAULT_KEY]
        else:
            array = np.load(path, allow_pickle=False)
    except DataError:
        raise
    except (OSError, EOFError, ValueError, KeyError, TypeError, NotImplementedError, zipfile.BadZipFile) as error:
        raise DataError("dataset.path", f"data file {name}: not a readable numpy array file ({error})") from error
    if tuple(array.shape) != header.shape:
        raise DataError("dataset.path", f"data file {name}: holds shape {array.shape}, its header says {header.shape}")
    return array, header


def file_digest(path: Path) -> str:
    """`sha256:<hex>` of the file's bytes (what `sha256sum` prints), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"
