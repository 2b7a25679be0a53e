"""A daemon thread that calls a function every `interval` seconds, sooner on `wake()`, until `stop()`.

The runner and the scheduler both poll the DB this way; an exception in one call is logged and the next call
comes on time, so a transient DB error does not kill the loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)


class PollingThread:
    """`step` runs in a daemon thread named `name`: first at once (or after one interval with `wait_first`), then
    `interval()` seconds after each call ends, or as soon as `wake()` is called."""

    def __init__(
        self, name: str, step: Callable[[], None], interval: Callable[[], float], *, wait_first: bool = False
    ) -> None:
        self.name = name
        self._step = step
        self._interval = interval
        self._wait_first = wait_first
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def wake(self) -> None:
        self._wake.set()

    def _pause(self) -> None:
        self._wake.wait(self._interval())
        self._wake.clear()

    def _loop(self) -> None:
        if self._wait_first:
            self._pause()
        while not self._stop.is_set():
            try:
                self._step()
            except Exception:  # logged, not swallowed silently; the next call is the retry
                logger.exception("%s: polling step failed", self.name)
            self._pause()
