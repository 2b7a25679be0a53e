"""Driver supervisor: holds the sweep's lock while its `workers` driver runs, forwards SIGTERM, records the exit code.

Started by the runner in a new session, so it and its driver outlive an API process that dies. The exclusive
`flock` on `<sweep dir>/driver.lock` is how a restarted runner knows whether a driver is still alive (no PID
reuse pitfalls); the driver inherits the locked descriptor, so the lock lasts while either process lives.

    python -m service.queue._supervise SWEEP_DIR -- COMMAND...
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
from pathlib import Path

LOCK_FILE = "driver.lock"
PID_FILE = "supervisor.pid"
EXIT_FILE = "exit_code"
LOG_FILE = "driver.log"


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m service.queue._supervise SWEEP_DIR -- COMMAND...", file=sys.stderr)
        return 2
    sweep_dir, command = Path(argv[0]), argv[2:]
    child: subprocess.Popen | None = None
    pending: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        if child is None:
            pending.append(signum)  # before the driver exists: deliver it once it does
        else:
            child.send_signal(signum)

    # installed before the PID file appears, so the runner can never kill us with a default SIGTERM
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    lock = os.open(sweep_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(lock, fcntl.LOCK_EX)
    _write_atomic(sweep_dir / PID_FILE, str(os.getpid()))
    (sweep_dir / EXIT_FILE).unlink(missing_ok=True)
    with (sweep_dir / LOG_FILE).open("ab") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, pass_fds=(lock,))
        for signum in pending:
            child.send_signal(signum)
        code = child.wait()
    code = 128 - code if code < 0 else code
    _write_atomic(sweep_dir / EXIT_FILE, str(code))
    return code


def _write_atomic(path: Path, text: str) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(text)
    os.replace(partial, path)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
