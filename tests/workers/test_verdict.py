"""The verdict on hand-built sweeps: censoring, paired standard errors, IWAE vs ELBO, one collapse threshold."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workers import SweepSpec, TrialOutcome
from workers.selection import select
from workers.stoppers import CollapseStopper
from workers.sweep import _stopper
from workers.trainable import run_config

SPEC = SweepSpec.model_validate(
    {
        "epochs": 100,
        "iwae_samples": 100,
        "model": {"latent_dim": 8, "hidden_dims": [256, 256], "decoder": "made"},
        "objectives": [{"metric": "elbo"}, {"metric": "rate"}],
        "constraints": [{"metric": "active_units", "op": ">=", "value": 1}],
    }
)


def trial(
    number: int,
    beta: float,
    elbo: float,
    rate: float,
    units: int,
    iwae: float | None = None,
    status: str = "completed",
    epochs: int = 100,
) -> TrialOutcome:
    metrics = {"elbo": elbo, "rate": rate, "distortion": -elbo - rate, "active_units": float(units)}
    if iwae is not None:
        metrics["iwae_ll"] = iwae
    return TrialOutcome(
        trial_id=f"t{number}", number=number, status=status, params={"beta": beta}, metrics=metrics, epochs=epochs
    )


# The digits case of the README, as measured: trained to the end, the collapsed beta = 2 model has the best ELBO.
FULL = [
    trial(0, 1.0, -23.52, 3.5, 8, iwae=-22.93),
    trial(1, 2.0, -23.08, 0.017, 0, iwae=-22.99),
    trial(2, 4.0, -23.20, 0.004, 0, iwae=-23.10),
]
# The same sweep with the collapse stopper on: beta = 2 and 4 were cut at epoch 16 with their early ELBO.
STOPPED = [
    FULL[0],
    trial(1, 2.0, -25.09, 0.02, 0, status="stopped", epochs=16),
    trial(2, 4.0, -25.60, 0.01, 0, status="stopped", epochs=16),
]


def test_trained_to_the_end_the_collapsed_max_elbo_model_is_reported_and_another_recommended() -> None:
    selection = select(SPEC, FULL)
    assert selection.max_elbo is not None and selection.max_elbo.number == 1
    assert selection.max_elbo_collapsed is True
    assert selection.recommended is not None and selection.recommended.number == 0
    assert selection.elbo_gap == pytest.approx(0.44)
    assert selection.reason.startswith("The max-ELBO model is collapsed: trial 1 (β=2)")
    assert "Keep trial 0 (β=1) instead" in selection.reason
    # IWAE ranks the two the other way round; the answer says so, with the ELBO-to-IWAE gaps behind it.
    assert selection.max_iwae is not None and selection.max_iwae.number == 0
    assert selection.bounds_disagree is True
    assert selection.iwae_gap is not None and selection.iwae_gap.gap == pytest.approx(-0.06)
    assert "ranks them the other way" in selection.reason and "0.590 vs 0.090" in selection.reason


def test_a_stopped_collapsed_trial_is_never_evidence_that_the_max_elbo_model_is_not_collapsed() -> None:
    selection = select(SPEC, STOPPED)
    # Only trial 0 trained to the end; the collapsed trials were censored at epoch 16 of 100.
    assert selection.max_elbo is not None and selection.max_elbo.number == 0
    assert selection.max_elbo_collapsed is None  # undetermined, not False
    assert selection.censored_trials == [1, 2]
    assert "Among the 1 trial(s) trained to the full budget, trial 0 (β=1)" in selection.reason
    assert "undetermined" in selection.reason and "The max-ELBO model is not collapsed" not in selection.reason
    assert any("trial 1 at epoch 16, 2 at epoch 16 of 100" in note for note in selection.notes)
    # Censored trials sit on no front: front members are compared on equal terms.
    assert [t.number for t in selection.front] == [0]


def test_a_stopped_non_collapsed_trial_leaves_a_collapsed_verdict_standing() -> None:
    trials = [FULL[1], trial(3, 0.5, -26.0, 12.0, 8, status="stopped", epochs=10), FULL[0]]
    selection = select(SPEC, trials)
    assert selection.max_elbo_collapsed is True and selection.censored_trials == [3]


def test_a_stopped_trial_already_ahead_of_every_finished_one_leaves_the_verdict_open() -> None:
    trials = [FULL[0], trial(4, 1.5, -23.0, 2.0, 8, status="stopped", epochs=40)]
    assert select(SPEC, trials).max_elbo_collapsed is None


def test_elbo_gap_standard_error_is_paired_over_the_same_held_out_examples() -> None:
    collapsed = np.array([1.0, 2.0, 3.0, 4.0])
    informative = np.array([0.5, 1.5, 3.5, 3.0])
    trials = [
        trial(0, 2.0, float(collapsed.mean()), 0.01, 0, iwae=2.6),
        trial(1, 1.0, float(informative.mean()), 3.0, 8, iwae=2.7),
    ]
    per_example = {
        "t0": {"elbo": collapsed, "iwae": collapsed + 0.1},
        "t1": {"elbo": informative, "iwae": informative + 0.6},
    }
    selection = select(SPEC, trials, per_example)
    # By hand: differences 0.5, 0.5, -0.5, 1.0; mean 0.375; squared deviations sum to 1.1875;
    # sample variance 1.1875 / 3; SE = sqrt(1.1875 / 3) / sqrt(4).
    assert selection.elbo_gap == pytest.approx(0.375)
    assert selection.elbo_gap_se == pytest.approx(math.sqrt(1.1875 / 3) / 2)
    assert selection.iwae_gap is not None and selection.iwae_gap.examples == 4
    assert selection.iwae_gap.gap == pytest.approx(0.375 + 0.1 - 0.6)
    # 0.375 nats at 1.2 SE: the answer says it is within noise.
    assert "0.375 ± 0.315 nats of held-out ELBO" in selection.reason and "within noise" in selection.reason


def test_without_per_example_values_the_gap_has_no_standard_error() -> None:
    selection = select(SPEC, FULL)
    assert selection.elbo_gap_se is None and "no standard error" in selection.reason


def test_one_collapse_threshold_for_verdict_selection_stopper_and_trials() -> None:
    spec = SPEC.model_copy(update={"collapse_rate_threshold": 0.5})
    spec = SweepSpec.model_validate(
        {**spec.model_dump(), "early_stopping": {"stop_collapsed": True, "collapse_warmup_epochs": 2}}
    )
    # The trial itself said "not collapsed" (a 0.1 threshold); at R = 0.3 the spec's 0.5 nats decides.
    low_rate = trial(0, 3.0, -23.0, 0.3, 2)
    low_rate.metrics["collapsed"] = 0.0
    selection = select(spec, [low_rate, FULL[0]])
    assert selection.max_elbo_collapsed is True and selection.collapse_rate_threshold == 0.5
    assert selection.recommended is not None and selection.recommended.number == 0
    assert spec.constraint_violations(low_rate.metrics)[-1] > 0  # what Optuna is told
    stopper = next(s for s in _stopper(spec, "s")._stoppers if isinstance(s, CollapseStopper))
    assert stopper.threshold == 0.5
    assert run_config(spec, {"beta": 1.0}).train.collapse_rate_threshold == 0.5  # what each trial evaluates with


def test_the_threshold_stored_under_early_stopping_moves_to_the_top_level() -> None:
    old = SweepSpec.model_validate({"early_stopping": {"collapse_rate_threshold": 0.3}})
    assert old.collapse_rate_threshold == 0.3
    with pytest.raises(ValueError, match="give it once"):
        SweepSpec.model_validate({"collapse_rate_threshold": 0.2, "early_stopping": {"collapse_rate_threshold": 0.3}})


def test_saturated_mutual_info_on_the_front_is_flagged() -> None:
    spec = SweepSpec.model_validate({"objectives": [{"metric": "elbo"}, {"metric": "mutual_info"}]})
    saturated = trial(0, 0.5, -25.0, 13.0, 8)
    saturated.metrics.update({"mutual_info": 5.1, "mutual_info_saturated": 1.0, "mutual_info_cap": math.log(180)})
    healthy = trial(1, 1.0, -23.5, 3.0, 8)
    healthy.metrics.update({"mutual_info": 2.9, "mutual_info_saturated": 0.0, "mutual_info_cap": math.log(180)})
    selection = select(spec, [saturated, healthy])
    assert any("mutual_info is saturated for trial(s) [0]" in note and "use `rate`" in note for note in selection.notes)
