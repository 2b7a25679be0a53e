"""The CLI's answer: the Pareto table (max-ELBO trial, saturated MI marked), the verdict lines, the status table."""

from __future__ import annotations

from rich.console import Console

from service.cli.render import pareto_table, recommendation_lines, sweep_table


def _trial(number: int, beta: float, elbo: float, rate: float, units: int, **extra: float) -> dict:
    metrics = {"elbo": elbo, "rate": rate, "distortion": -elbo - rate, "active_units": float(units), **extra}
    return {"trial_id": f"t{number}", "number": number, "params": {"objective": "beta", "beta": beta},
            "metrics": metrics, "collapsed": rate < 0.1}  # fmt: skip


KEPT = _trial(2, 1.0, -23.218, 2.19, 8, iwae_ll=-22.907, mutual_info=2.17)
WIDE = _trial(3, 0.5, -25.41, 13.44, 8, iwae_ll=-23.73, mutual_info=5.19, mutual_info_saturated=1.0)
COLLAPSED = _trial(0, 2.0, -22.99, 0.016, 0, iwae_ll=-22.915, mutual_info=0.03)
VIEW = {
    "sweep_id": "s1",
    "front": [KEPT, WIDE],
    "recommended": KEPT,
    "max_elbo": COLLAPSED,
    "max_elbo_collapsed": True,
    "elbo_gap": 0.227,
    "elbo_gap_se": 0.063,
    "max_iwae": KEPT,
    "reason": "The max-ELBO model is collapsed: …",
    "notes": ["mutual_info is saturated for trial(s) [3]"],
}


def _render(renderable: object) -> str:
    console = Console(width=120, record=True)
    console.print(renderable)
    return console.export_text()


def test_the_table_shows_the_collapsed_max_elbo_trial_below_the_front() -> None:
    text = _render(pareto_table(VIEW))
    lines = [line for line in text.splitlines() if "│" in line]
    assert lines[-1].split("│")[1].strip() == "▲" and "β=2" in lines[-1] and "yes" in lines[-1]
    assert any("★" in line and "β=1" in line and "-22.91" in line for line in lines)  # IWAE column
    assert any("≥5.19" in line for line in lines)  # saturated MI is a bound, not a measurement


def test_the_verdict_lines_give_the_gap_with_its_standard_error() -> None:
    lines = recommendation_lines(VIEW)
    assert lines[0] == "Recommended: trial 2 (β=1), ELBO -23.22 nats."
    assert lines[1] == ("Max-ELBO trial 0: collapsed; keeping trial 2 costs 0.23 ± 0.06 nats (paired SE); "
                        "the IWAE bound puts trial 2 first.")  # fmt: skip
    assert lines[-1] == "Note: mutual_info is saturated for trial(s) [3]"
    undetermined = recommendation_lines({**VIEW, "max_elbo_collapsed": None, "max_elbo": KEPT})
    assert undetermined[1].startswith("Max-ELBO trial 2: undetermined (censored trials);")


def test_the_demo_spec_is_the_shipped_collapse_example() -> None:
    from service.stack.demo import DEFAULT_SPEC

    assert DEFAULT_SPEC.is_file(), DEFAULT_SPEC  # `make demo` runs it from the repository's examples/
    assert (DEFAULT_SPEC.parent.name, DEFAULT_SPEC.name) == ("examples", "digits_collapse.yaml")


def test_the_status_table_says_when_the_data_changed_after_submit() -> None:
    sweep = {"id": "s1", "name": "n", "status": "succeeded", "best_elbo": -23.2,
             "progress": {"total": 2, "done": 2, "completed": 2, "running": 0, "failed": 0, "collapsed": 0},
             "dataset": {"digest": "sha256:" + "a" * 64}, "trained_on": {"digest": "sha256:" + "b" * 64},
             "dataset_changed": False}  # fmt: skip
    console = Console(width=200, record=True)
    console.print(sweep_table(sweep))
    assert "changed after submit" not in console.export_text()
    console.print(sweep_table({**sweep, "dataset_changed": True}))
    shown = console.export_text()
    assert "changed after submit: checked sha256:aaaaaaaaaaaa…, trained on sha256:bbbbbbbbbbbb…" in shown
