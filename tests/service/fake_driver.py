"""TEST DOUBLE of `python -m workers run` for process-management tests (queueing, SIGKILL, cancel) only.

It honours the driver contract — progress lines, result file, exit codes 0/1/3, resume from --storage-root — but
trains nothing: each "trial" sleeps FAKE_TRIAL_SECONDS. FAKE_FAIL=1 makes it exit 1 (after Ray-like INFO lines and a
traceback); FAKE_TRIAL_ERROR=<text> makes every trial fail with it; FAKE_NO_START=1 makes it start no trial (a sweep
whose resources the cluster never grants). It records every launch in <storage-root>/<sweep-id>/launches so tests
can count drivers.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["run"])
    parser.add_argument("--spec", required=True)
    parser.add_argument("--sweep-id", required=True)
    parser.add_argument("--storage-root", required=True)
    parser.add_argument("--ray-address")
    parser.add_argument("--tracking-uri")
    parser.add_argument("--progress-file", required=True)
    parser.add_argument("--result-file", required=True)
    args = parser.parse_args()
    spec = json.loads(Path(args.spec).read_text())
    state = Path(args.storage_root) / args.sweep_id
    state.mkdir(parents=True, exist_ok=True)
    with (state / "launches").open("a") as launches:
        launches.write(f"{os.getpid()}\n")
    done_file = state / "done"
    done = int(done_file.read_text()) if done_file.exists() else 0
    cancelled = False

    def on_term(_signum: int, _frame: object) -> None:
        nonlocal cancelled
        cancelled = True

    signal.signal(signal.SIGTERM, on_term)
    if os.environ.get("FAKE_FAIL") == "1":
        print("2026-11-27 10:00:00,000\tINFO worker.py:1 -- Started a local Ray instance.", file=sys.stderr)
        print('Traceback (most recent call last):\n  File "x.py", line 1, in <module>', file=sys.stderr)
        print("RuntimeError: fake driver: failing on purpose", file=sys.stderr)
        print("(raylet pid=123) INFO lines after the error", file=sys.stderr)
        return 1
    if os.environ.get("FAKE_NO_START") == "1":
        while not cancelled:
            time.sleep(0.1)
        return 3
    error = os.environ.get("FAKE_TRIAL_ERROR")
    total = spec["n_trials"]
    while done < total and not cancelled:
        _progress(args.progress_file, total, done, running=1)
        time.sleep(float(os.environ.get("FAKE_TRIAL_SECONDS", "0.3")))
        if cancelled:
            break
        done += 1
        done_file.write_text(str(done))
    _progress(args.progress_file, total, done, running=0)
    trials = _trials(done, error)
    best = trials[-1] if trials else None
    result = {
        "name": spec.get("name") or args.sweep_id,
        "trials": trials,
        "cancelled": cancelled,
        "selection": {
            "front": trials,
            "recommended": best,
            "reason": "fake",
            "max_elbo": best,
            "max_elbo_collapsed": False,
        },
        "mlflow_parent_run_id": "parent-" + args.sweep_id[:8],
        "mlflow_experiment_id": "1",
    }
    Path(args.result_file).write_text(json.dumps(result))
    return 3 if cancelled else 0


def _trials(done: int, error: str | None, running: int = 0) -> list[dict]:
    trials = [
        {
            "trial_id": f"t{i}",
            "number": i,
            "status": "failed" if error else "completed",
            "params": {"beta": 0.5 + i},
            "metrics": {} if error else {"elbo": -100.0 + i, "rate": 5.0 - i, "distortion": 95.0, "active_units": 3.0},
            "collapsed": None if error else False,
            "feasible": None if error else True,
            "error": f"ValueError: {error} (trial {i})" if error and i == done - 1 and done > 2 else error,
        }
        for i in range(done)
    ]
    return trials + [{"trial_id": f"t{done}", "number": done, "status": "running"}] * running


def _progress(path: str, total: int, completed: int, running: int) -> None:
    line = {
        "total": total,
        "completed": completed,
        "running": running,
        "failed": 0,
        "collapsed": 0,
        "best_elbo": -100.0 + completed if completed else None,
        "mlflow_parent_run_id": "parent",
        "mlflow_experiment_id": "1",
        "trials": _trials(completed, os.environ.get("FAKE_TRIAL_ERROR"), running),
    }
    with open(path, "a") as handle:
        handle.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    sys.exit(main())
