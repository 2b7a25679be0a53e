"""Where a sweep's Tune state lives: a local filesystem whose writes are atomic, and a check before restoring."""

from __future__ import annotations

import fnmatch
import io
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.fs as pafs
import ray.cloudpickle as cloudpickle

_PARTIAL_SUFFIX = ".partial"
_TYPE_NAME = "rdvae-atomic-local"
# The files Tune restores a sweep from (the newest name of each kind wins), and how each is written: the
# experiment state is a JSON document (pickled values embedded), the search wrappers' and the searcher's are pickles.
_STATE_FILES = {
    "experiment_state-*.json": json.loads,
    "search_gen_state-*.json": cloudpickle.loads,
    "searcher-state-*.pkl": cloudpickle.loads,
}


class SweepStateError(RuntimeError):
    """A sweep's saved Tune state cannot be read: resuming it would silently start the search over."""


def _parse_error(name: str, data: bytes) -> Exception | None:
    """Why `data` is not a readable Tune state file called `name` (None when it is, or is no state file)."""
    parse = next((parse for pattern, parse in _STATE_FILES.items() if fnmatch.fnmatch(name, pattern)), None)
    try:
        if parse is not None:
            parse(data)
    except Exception as error:  # noqa: BLE001 - truncated, torn, empty, foreign: all mean unreadable
        return error
    return None


class _AtomicFile(io.RawIOBase):
    """Writes go to a hidden sibling; close() renames it over the target, so readers see old or new, never half.

    A Tune state file is renamed only if it parses: Tune may rewrite its staging copy while a sync reads it, and a
    torn copy must not replace the last good state. A stream dropped without close() leaves the target alone."""

    def __init__(self, path: str) -> None:
        super().__init__()
        target = Path(path)
        temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}{_PARTIAL_SUFFIX}")
        # 0o666 through the kernel's umask, as a plain open() creates it; an existing file keeps its own mode
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        if target.exists():
            os.fchmod(descriptor, target.stat().st_mode & 0o7777)
        self._handle = os.fdopen(descriptor, "wb")
        self._temporary, self._target = temporary, target

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:
        return self._handle.write(data)

    def flush(self) -> None:
        if not self._handle.closed:
            self._handle.flush()

    def close(self) -> None:
        if not self.closed:
            self._handle.close()
            if _parse_error(self._target.name, self._temporary.read_bytes()) is None:
                os.replace(self._temporary, self._target)
            else:
                self._temporary.unlink(missing_ok=True)
        super().close()

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None and not self.closed:  # never closed: an abandoned write, not a finished one
            handle.close()
            self._temporary.unlink(missing_ok=True)


class _AtomicLocalHandler(pafs.FileSystemHandler):
    """pyarrow's LocalFileSystem, except that output streams are atomic `_AtomicFile`s."""

    def __init__(self) -> None:
        self._local = pafs.LocalFileSystem()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _AtomicLocalHandler)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(type(self))

    def __reduce__(self) -> tuple:
        return (_AtomicLocalHandler, ())

    def get_type_name(self) -> str:
        return _TYPE_NAME

    def normalize_path(self, path: str) -> str:
        return self._local.normalize_path(path)

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return self._local.get_file_info(paths)

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return self._local.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        self._local.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self._local.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self._local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise OSError("refusing to delete the contents of the filesystem root")

    def delete_file(self, path: str) -> None:
        self._local.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self._local.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        self._local.copy_file(src, dest)

    def open_input_stream(self, path: str) -> pafs.NativeFile:
        return self._local.open_input_stream(path)

    def open_input_file(self, path: str) -> pafs.NativeFile:
        return self._local.open_input_file(path)

    def open_output_stream(self, path: str, metadata: dict | None = None) -> object:
        import pyarrow

        return pyarrow.PythonFile(_AtomicFile(path), mode="w")

    def open_append_stream(self, path: str, metadata: dict | None = None) -> pafs.NativeFile:
        return self._local.open_append_stream(path)


def atomic_local_filesystem() -> pafs.FileSystem:
    """A local pyarrow filesystem for `RunConfig(storage_filesystem=...)` that never leaves a half-written file.

    Tune uploads its experiment and searcher state from a staging folder with a plain copy; a driver killed
    during that copy would leave a truncated state file, and Tune, failing to restore it, starts the whole sweep
    again. Through this filesystem a killed copy leaves the previous file in place (and a hidden `.partial`), and
    a state file that does not parse is never committed.
    """
    return pafs.PyFileSystem(_AtomicLocalHandler())


@contextmanager
def checkpoint_directory(checkpoint: object) -> Iterator[Path]:
    """A Tune checkpoint's folder, read in place when it is on this machine's disk. (`Checkpoint.as_directory`
    reads in place only on pyarrow's own LocalFileSystem and copies everything else, ours included, to /tmp.)"""
    path = Path(checkpoint.path)  # type: ignore[attr-defined]
    if checkpoint.filesystem.type_name.endswith(_TYPE_NAME) and path.is_dir():  # type: ignore[attr-defined]
        yield path
    else:
        with checkpoint.as_directory() as directory:  # type: ignore[attr-defined]
            yield Path(directory)


def check_restorable(experiment_dir: Path) -> None:
    """Raise SweepStateError naming the file when the newest saved state of any kind cannot be parsed.

    Also removes `.partial` files left by a killed write. Tune itself would log the failure, then restart the
    experiment from nothing with a half-restored search: trials lost, budgets counted twice.
    """
    for leftover in experiment_dir.rglob(f".*{_PARTIAL_SUFFIX}"):
        leftover.unlink(missing_ok=True)
    for pattern in _STATE_FILES:
        found = sorted(experiment_dir.glob(pattern))
        if not found:
            continue
        newest = found[-1]
        error = _parse_error(newest.name, newest.read_bytes())
        if error is not None:
            raise SweepStateError(
                f"sweep state file {newest} is unreadable ({type(error).__name__}: {error}); refusing to resume "
                "the sweep from nothing. Finished trials are in MLflow; start a new sweep id to run it again."
            ) from error
