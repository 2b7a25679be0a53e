"""Tune stoppers of a sweep: end collapsed trials early, and end the whole sweep when the caller cancels."""

from __future__ import annotations

from ray import tune

from workers.callbacks import LIVE
from workers.trainable import FINAL_FLAG


class CollapseStopper(tune.Stopper):
    """Stop a trial whose held-out rate is still below `threshold` nats after `warmup_epochs` epochs.

    A collapsed posterior rarely recovers under a fixed objective; its remaining epochs buy nothing when the
    spec asks for a non-collapsed model. The trial keeps its last held-out metrics and is reported `stopped`.
    """

    def __init__(self, warmup_epochs: int, threshold: float) -> None:
        self.warmup_epochs, self.threshold = warmup_epochs, threshold

    def __call__(self, trial_id: str, result: dict) -> bool:
        return collapsed_after_warmup(result, self.warmup_epochs, self.threshold)

    def stop_all(self) -> bool:
        return False


def collapsed_after_warmup(result: dict, warmup_epochs: int, threshold: float) -> bool:
    """The collapse stopper's rule on one epoch's report (a trial's, or a cohort member's)."""
    # A capacity trial whose C_t is still ramping up is collapsed by design, not by failure.
    if result.get(FINAL_FLAG) == 1 or "rate" not in result or result.get("annealing") == 1:
        return False
    return int(result.get("epoch", 0)) >= warmup_epochs and float(result["rate"]) < threshold


class CancelStopper(tune.Stopper):
    """Ends the sweep when the caller's `should_stop()` says so (polled by Tune on every step)."""

    def __init__(self, sweep_id: str) -> None:
        self.sweep_id = sweep_id

    def __call__(self, trial_id: str, result: dict) -> bool:
        return self.stop_all()

    def stop_all(self) -> bool:
        live = LIVE.get(self.sweep_id)
        if live is None:
            return False
        if not live.cancelled and live.should_stop is not None and live.should_stop():
            live.cancelled = True  # latched: the sweep stays cancelled once asked
        return live.cancelled
