"""Verdicts in one readable line: what a failed driver's log says went wrong, and why a finished sweep failed."""

from __future__ import annotations

import re
from collections import Counter

from workers.results import SweepResult

_NOISE = re.compile(r"^(\(\w+ pid=\d+\)|\[\d{4}-|\d{4}-\d\d-\d\d[ T]|.* (INFO|WARNING|DEBUG) )")
_ERROR_LINE = re.compile(r"^(error: |[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b)")


def one_line(text: str, limit: int = 300) -> str:
    """The line of a driver log that says what went wrong: its last `SomeError: message` line, else its last line
    that is not a Ray or logging status line; at most `limit` characters (the whole log stays in driver.log)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if _ERROR_LINE.match(line)]
    quiet = [line for line in lines if not _NOISE.match(line)]
    line = (errors or quiet or lines or ["no output"])[-1]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def no_success_error(result: SweepResult) -> str | None:
    """Why a finished, uncancelled sweep failed: none of its trials ended well (the most common trial error)."""
    if result.cancelled or any(trial.status in ("completed", "stopped") for trial in result.trials):
        return None
    errors = Counter(one_line(trial.error or "no error recorded") for trial in result.trials)
    if not errors:
        return "no trial ran"
    reason, count = errors.most_common(1)[0]
    return f"no trial succeeded: {len(result.trials)} failed; most common error ({count}x): {reason}"
