"""The verdict in plain words: did the max-ELBO model collapse, what keeping another costs (± SE), what IWAE says."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from rdvae.metrics import paired_difference
from workers.results import PairedGap, TrialOutcome
from workers.spec import SweepSpec

PerExample = Mapping[str, Mapping[str, np.ndarray]]
_SYMBOLS = {"beta": "β", "C": "C", "learning_rate": "lr"}


def label(trial: TrialOutcome) -> str:
    """`trial 3 (β=1.22, decoder=made)`: the number and the sampled values that matter."""
    params = trial.params
    shown = [
        f"{_SYMBOLS.get(k, k)}={v:.3g}" if isinstance(v, float) else f"{_SYMBOLS.get(k, k)}={v}"
        for k, v in sorted(params.items())
        if k != "objective"
    ]
    if params.get("objective") == "capacity":
        shown.insert(0, "capacity")
    return f"trial {trial.number}" + (f" ({', '.join(shown)})" if shown else "")


def paired_gap(
    per_example: PerExample, first: TrialOutcome, second: TrialOutcome, key: str, metric: str
) -> PairedGap | None:
    """first minus second in `metric` (mean over held-out examples), with the paired SE when both trials left
    per-example values under `key` ('elbo' or 'iwae'); None when a trial lacks the metric."""
    if metric not in first.metrics or metric not in second.metrics:
        return None
    a, b = per_example.get(first.trial_id, {}).get(key), per_example.get(second.trial_id, {}).get(key)
    if a is None or b is None or a.shape != b.shape or a.shape[0] < 2:
        return PairedGap(gap=first.metrics[metric] - second.metrics[metric])
    gap, standard_error = paired_difference(torch.from_numpy(a), torch.from_numpy(b))
    return PairedGap(gap=gap, standard_error=standard_error, examples=int(a.shape[0]))


def undetermined(
    max_elbo: TrialOutcome | None, completed: Sequence[TrialOutcome], censored: Sequence[TrialOutcome]
) -> bool:
    """Whether censoring leaves 'is the max-ELBO model collapsed?' open: no trial trained to the end, a stopped trial
    already beats it, or it is not collapsed while stopped collapsed trials might have ended above it."""
    if max_elbo is None or not completed:
        return True
    best = max_elbo.metrics["elbo"]
    if any(t.metrics["elbo"] >= best for t in censored):
        return True
    return not max_elbo.collapsed and any(t.collapsed for t in censored)


def _state(trial: TrialOutcome, latent_dim: int) -> str:
    m = trial.metrics
    return f"rate {m['rate']:.3g} nats, {int(m.get('active_units', 0))} of {latent_dim} active units"


def _gap_text(gap: PairedGap, what: str) -> str:
    if gap.standard_error is None:
        return f"{gap.gap:.3f} nats{what} (no per-example values, so no standard error)"
    ratio = abs(gap.gap) / gap.standard_error if gap.standard_error > 0 else float("inf")
    within = "" if gap.significant() else ", within noise (< 2 SE)"
    return (
        f"{gap.gap:.3f} ± {gap.standard_error:.3f} nats{what} (paired standard error over {gap.examples} held-out "
        f"examples; {ratio:.1f} SE{within})"
    )


def _models(count: int) -> str:
    return "1 feasible model" if count == 1 else f"{count} feasible models"


def _latent_dim(spec: SweepSpec, trial: TrialOutcome) -> int:
    return int(trial.params.get("latent_dim", spec.model.latent_dim))


def explain(
    spec: SweepSpec,
    *,
    max_elbo: TrialOutcome | None,
    recommended: TrialOutcome | None,
    feasible_count: int,
    completed_count: int,
    elbo_gap: PairedGap | None,
    max_iwae: TrialOutcome | None,
    iwae_gap: PairedGap | None,
    verdict_open: bool,
    failed: int,
) -> str:
    """The reason string: answers the seed question for this sweep."""
    if max_elbo is None:
        return f"no recommendation: no trial produced held-out metrics ({failed} failed)"
    rules = ", ".join(["not collapsed", *(c.describe() for c in spec.constraints)])
    best = f"{label(max_elbo)} has the best held-out ELBO, {max_elbo.metrics['elbo']:.3f} nats"
    state = _state(max_elbo, _latent_dim(spec, max_elbo))
    parts = []
    if max_elbo.collapsed:
        parts.append(
            f"The max-ELBO model is collapsed: {best}, with {state} — its decoder ignores z and models x on its own."
        )
    elif verdict_open:
        parts.append(
            f"Among the {completed_count} trial(s) trained to the full budget, {best}, and it is not collapsed "
            f"({state})."
        )
    elif recommended is not None and recommended.trial_id == max_elbo.trial_id:
        parts.append(f"The max-ELBO model is not collapsed: {best}, with {state}.")
    else:
        violated = [
            c.describe() for c in spec.constraints if c.metric in max_elbo.metrics and c.violation(max_elbo.metrics) > 0
        ]
        parts.append(
            f"The max-ELBO model is not collapsed but infeasible: {best}, and fails "
            f"{', '.join(violated) or 'a constraint'}."
        )
    if verdict_open:
        parts.append(
            "Whether the sweep's max-ELBO model collapses is undetermined: trials stopped early (see notes) are "
            "censored, and trained to the end one of them may have beaten it; re-run with early_stopping off to "
            "settle it."
        )
    if recommended is None:
        parts.append(f"No recommendation: none of the evaluated trials is feasible ({rules}).")
        return " ".join(parts)
    if recommended.trial_id == max_elbo.trial_id:
        parts.append(f"Keep it: it is also the best ELBO of the {_models(feasible_count)} ({rules}).")
    else:
        parts.append(
            f"Keep {label(recommended)} instead: the best ELBO of the {_models(feasible_count)} ({rules}), "
            f"{recommended.metrics['elbo']:.3f} nats, with {_state(recommended, _latent_dim(spec, recommended))}."
        )
        if elbo_gap is not None:
            parts.append(f"It costs {_gap_text(elbo_gap, ' of held-out ELBO')}.")
    parts.append(_iwae_text(spec, max_elbo, recommended, max_iwae, iwae_gap))
    return " ".join(part for part in parts if part)


def _iwae_text(
    spec: SweepSpec,
    max_elbo: TrialOutcome,
    recommended: TrialOutcome,
    max_iwae: TrialOutcome | None,
    iwae_gap: PairedGap | None,
) -> str:
    if max_iwae is None:
        return "No IWAE bound was computed (iwae_samples = 0)."
    k = spec.iwae_samples
    if recommended.trial_id == max_elbo.trial_id:
        if max_iwae.trial_id == max_elbo.trial_id:
            return (
                f"The tighter IWAE bound (k={k}) agrees: {max_iwae.metrics['iwae_ll']:.3f} nats, the best of the sweep."
            )
        return (
            f"The tighter IWAE bound (k={k}) prefers {label(max_iwae)} ({max_iwae.metrics['iwae_ll']:.3f} vs "
            f"{max_elbo.metrics['iwae_ll']:.3f} nats): the two bounds disagree on the best model."
        )
    if iwae_gap is None:
        return f"The IWAE bound (k={k}) puts {label(max_iwae)} first."
    looser = [t.metrics["iwae_ll"] - t.metrics["elbo"] for t in (recommended, max_elbo)]
    why = (
        f"the ELBO's preference for the max-ELBO model comes from its looser bound on the other "
        f"(ELBO-to-IWAE gap {looser[0]:.3f} vs {looser[1]:.3f} nats)"
    )
    if iwae_gap.significant() is False:
        ahead = recommended if iwae_gap.gap < 0 else max_elbo
        level = iwae_gap.model_copy(update={"gap": abs(iwae_gap.gap)})
        return (
            f"The tighter IWAE bound (k={k}) cannot separate the two: {label(ahead)} is ahead by "
            f"{_gap_text(level, '')}" + (f"; {why}." if looser[0] > looser[1] else ".")
        )
    if iwae_gap.gap < 0:
        reversed_gap = iwae_gap.model_copy(update={"gap": -iwae_gap.gap})
        return (
            f"The tighter IWAE bound (k={k}) ranks them the other way: {recommended.metrics['iwae_ll']:.3f} for "
            f"{label(recommended)} vs {max_elbo.metrics['iwae_ll']:.3f}, ahead by {_gap_text(reversed_gap, '')}: "
            f"{why}."
        )
    return (
        f"The tighter IWAE bound (k={k}) agrees with the ELBO ordering: the max-ELBO model is ahead by "
        f"{_gap_text(iwae_gap, '')}; the best IWAE is {label(max_iwae)}."
    )
