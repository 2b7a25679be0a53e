"""Sweep storage: atomic writes through Tune's filesystem interface, and the refusal to resume unreadable state."""

from __future__ import annotations

import gc
import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from workers.storage import SweepStateError, atomic_local_filesystem, check_restorable, checkpoint_directory

ROOT = Path(__file__).resolve().parents[2]
_PREVIOUS = pickle.dumps({"counter": 3})

# A child that copies a large file through the given filesystem the way Tune uploads its state, then is killed.
_KILLED_COPY = """
import sys, pyarrow.fs as pafs
from workers.storage import atomic_local_filesystem
source, target, kind = sys.argv[1:]
filesystem = atomic_local_filesystem() if kind == "atomic" else pafs.LocalFileSystem()
with filesystem.open_output_stream(target) as out, open(source, "rb") as handle:
    out.write(handle.read(1 << 20))
    print("half", flush=True)
    sys.stdin.readline()  # killed here, mid-copy
    out.write(handle.read())
"""


def _killed_mid_copy(tmp_path: Path, kind: str) -> Path:
    source, target = tmp_path / "source.bin", tmp_path / "search_gen_state-x.json"
    source.write_bytes(os.urandom(3 << 20))
    target.write_bytes(_PREVIOUS)
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_COPY, str(source), str(target), kind],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert child.stdout is not None and child.stdout.readline().strip() == b"half"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    return target


def test_a_copy_killed_midway_leaves_the_previous_file_whole(tmp_path: Path) -> None:
    target = _killed_mid_copy(tmp_path, "atomic")
    assert target.read_bytes() == _PREVIOUS
    check_restorable(tmp_path)  # removes the hidden .partial the killed write left
    assert not list(tmp_path.glob(".*.partial"))


def test_the_plain_local_filesystem_is_what_truncates(tmp_path: Path) -> None:
    # The failure the atomic filesystem exists for: pyarrow's local output stream truncates in place.
    target = _killed_mid_copy(tmp_path, "plain")
    assert target.stat().st_size == 1 << 20


def test_completed_writes_replace_and_keep_the_permissions_of_a_plain_write(tmp_path: Path) -> None:
    filesystem = atomic_local_filesystem()
    for payload in (b"first", b"second, longer"):
        with filesystem.open_output_stream(str(tmp_path / "state.json")) as out:
            out.write(payload)
    assert (tmp_path / "state.json").read_bytes() == b"second, longer"
    (tmp_path / "plain").write_bytes(b"")
    assert (tmp_path / "state.json").stat().st_mode == (tmp_path / "plain").stat().st_mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain", "state.json"]


def test_pyarrow_copy_files_replaces_files_instead_of_rewriting_them(tmp_path: Path) -> None:
    staging, storage = tmp_path / "staging", tmp_path / "storage"
    (staging / "trial").mkdir(parents=True)
    (staging / "trial" / "result.json").write_text("{}")
    (staging / "experiment_state-1.json").write_text(json.dumps({"trial_data": [1]}))
    storage.mkdir()
    (storage / "experiment_state-1.json").write_text(json.dumps({"trial_data": []}))
    os.link(storage / "experiment_state-1.json", tmp_path / "held")  # a reader holding the old file
    filesystem = atomic_local_filesystem()
    pafs.copy_files(str(staging), str(storage), destination_filesystem=filesystem)  # as Tune uploads its state
    assert json.loads((storage / "experiment_state-1.json").read_text()) == {"trial_data": [1]}
    assert json.loads((tmp_path / "held").read_text()) == {"trial_data": []}  # replaced, never written in place
    copied = filesystem.get_file_info(pafs.FileSelector(str(storage), recursive=True))
    assert sorted(Path(info.path).name for info in copied) == ["experiment_state-1.json", "result.json", "trial"]
    assert pickle.loads(pickle.dumps(filesystem)).type_name == filesystem.type_name  # shipped to trial actors


def test_a_torn_state_file_never_replaces_the_last_good_one(tmp_path: Path) -> None:
    # Tune may rewrite its staging copy while a sync reads it: a torn experiment state must not be committed
    filesystem, state, other = atomic_local_filesystem(), tmp_path / "experiment_state-1.json", tmp_path / "a.bin"
    state.write_text(json.dumps({"trial_data": []}))
    with filesystem.open_output_stream(str(state)) as out:
        out.write(b'{"trial_data": [')
    assert json.loads(state.read_text()) == {"trial_data": []}
    with filesystem.open_output_stream(str(other)) as out:  # any other file is committed as written
        out.write(b"x")
    abandoned = filesystem.open_output_stream(str(other))
    abandoned.write(b"half")
    del abandoned  # dropped without close(): not a finished write
    gc.collect()
    assert other.read_bytes() == b"x" and sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", state.name]


def test_checkpoints_on_it_are_read_in_place(tmp_path: Path) -> None:
    from ray.train import Checkpoint

    (tmp_path / "model.pt").write_bytes(b"weights")
    checkpoint = Checkpoint(str(tmp_path), filesystem=atomic_local_filesystem())
    with checkpoint_directory(checkpoint) as directory:  # Checkpoint.as_directory would copy it to /tmp first
        assert directory == tmp_path


def test_an_unreadable_newest_state_file_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "experiment_state-2026-01-01.json").write_text(json.dumps({"runner_data": {}}))
    (tmp_path / "search_gen_state-2026-01-01.json").write_bytes(pickle.dumps({"counter": 3}))
    check_restorable(tmp_path)
    newest = tmp_path / "search_gen_state-2026-01-02.json"
    newest.write_bytes(pickle.dumps({"counter": 5})[:7])  # truncated
    with pytest.raises(SweepStateError, match="search_gen_state-2026-01-02.json is unreadable"):
        check_restorable(tmp_path)
