"""Sweep storage: atomic writes through Tune's filesystem interface, and the refusal to resume unreadable state."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from workers.storage import SweepStateError, atomic_local_filesystem, check_restorable

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


def test_pyarrow_copy_files_and_listing_go_through_it(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    (staging / "trial").mkdir(parents=True)
    (staging / "trial" / "result.json").write_text("{}")
    (staging / "experiment_state-1.json").write_bytes(pickle.dumps({"trials": []}))
    filesystem = atomic_local_filesystem()
    pafs.copy_files(str(staging), str(tmp_path / "storage"), destination_filesystem=filesystem)
    copied = filesystem.get_file_info(pafs.FileSelector(str(tmp_path / "storage"), recursive=True))
    assert sorted(Path(info.path).name for info in copied) == ["experiment_state-1.json", "result.json", "trial"]
    assert pickle.loads(pickle.dumps(filesystem)).type_name == filesystem.type_name  # shipped to trial actors


def test_an_unreadable_newest_state_file_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "experiment_state-2026-01-01.json").write_text(json.dumps({"runner_data": {}}))
    (tmp_path / "search_gen_state-2026-01-01.json").write_bytes(pickle.dumps({"counter": 3}))
    check_restorable(tmp_path)
    time.sleep(0.01)
    newest = tmp_path / "search_gen_state-2026-01-02.json"
    newest.write_bytes(pickle.dumps({"counter": 5})[:7])  # truncated
    with pytest.raises(SweepStateError, match="search_gen_state-2026-01-02.json is unreadable"):
        check_restorable(tmp_path)
