"""SweepSpec validation: bad values are refused where they enter, with the field named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workers import SpecError, SweepSpec, load_spec
from workers.spec import parse_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"search_space": {"beta": {"low": 0.0, "high": 1.0}}}, "search_space.beta.low"),
        ({"search_space": {"beta": {"low": -1.0, "high": 1.0}}}, "search_space.beta.low"),
        ({"search_space": {"C": {"low": -1.0, "high": 5.0}}}, "search_space.C.low"),
        ({"search_space": {"beta": {"low": 2.0, "high": 2.0}}}, "search_space.beta"),
        ({"dataset": "imagenet"}, "dataset.name"),
        ({"sampler": "bayes"}, "sampler"),
        ({"objectives": [{"metric": "accuracy"}]}, "objectives.0.metric"),
        ({"constraints": [{"metric": "active_units", "op": ">", "value": 2}]}, "constraints.0.op"),
        ({"resources": {"cpus": 1, "gpus": 1.5}}, "resources.gpus"),
        ({"n_trials": 0}, "n_trials"),
        ({"search_space": {"decoder": ["made"]}, "model": {"likelihood": "gaussian"}}, "search_space.decoder"),
        ({"search_space": {"beta": {"low": 3.0, "high": 1.0}}}, "empty range"),
        ({"search_space": {"C": {"low": 4.0, "high": 4.0}}}, "search_space.C"),
        ({"search_space": {"C": {"low": 4.0, "high": 1.0}}}, "empty range"),
        ({"search_space": {"objective": []}}, "search_space.objective"),
        ({"search_space": {"objective": ["vq"]}}, "search_space.objective.0"),
        ({"search_space": {"learning_rate": {"low": 0.0, "high": 0.1}}}, "search_space.learning_rate.low"),
        ({"constraints": [{"metric": "accuracy", "value": 1}]}, "constraints.0.metric"),
        ({"constraints": [{"metric": "iwae_ll", "value": -90}], "iwae_samples": 0}, "iwae_ll needs iwae_samples"),
        ({"objectives": [{"metric": "elbo"}, {"metric": "elbo"}]}, "repeated metric"),
        ({"objectives": [{"metric": "elbo", "direction": "up"}]}, "objectives.0.direction"),
        ({"resources": {"gpus": -0.25}}, "resources.gpus"),
        ({"resources": {"cpus": 0}}, "resources.cpus"),
        ({"max_failures": -1}, "max_failures"),
        ({"epochs": 0}, "epochs"),
        ({"dataset": {"name": "file"}}, "dataset"),
        ({"betta": 2.0}, "betta"),
        # nested rdvae configs are as strict as the spec: no true -> 1, no "3" -> 3, no false -> 0
        ({"model": {"latent_dim": True}}, "model.latent_dim"),
        ({"model": {"hidden_dims": [16, "32"]}}, "model.hidden_dims.1"),
        ({"dataset": {"name": "digits", "split_seed": False}}, "dataset.split_seed"),
        ({"dataset": {"name": "digits", "validation_fraction": "0.2"}}, "dataset.validation_fraction"),
    ],
)
def test_invalid_specs_name_the_field(patch: dict, field: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec({"dataset": "digits", **patch})
    assert field in str(caught.value)


def test_concurrency_is_capped_by_the_number_of_trials() -> None:
    assert SweepSpec(n_trials=3, max_concurrent_trials=8).max_concurrent_trials == 3


def test_non_collapse_is_asked_by_objective_or_constraint() -> None:
    assert SweepSpec().asks_for_non_collapse()
    assert not parse_spec({"objectives": [{"metric": "elbo"}], "constraints": []}).asks_for_non_collapse()


@pytest.mark.parametrize("name", ["digits_beta.yaml", "mnist5k_rd.yaml", "capacity.yaml", "digits_collapse.yaml"])
def test_examples_load(name: str) -> None:
    spec = load_spec(EXAMPLES / name)
    assert spec.n_trials >= 1 and spec.objectives[0].metric == "elbo"


def test_load_spec_reads_json_and_refuses_other_files(tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"dataset": "digits", "sampler": "tpe"}))
    assert load_spec(path).sampler == "tpe"
    other = tmp_path / "spec.toml"
    other.write_text("")
    with pytest.raises(SpecError, match="expected a .yaml"):
        load_spec(other)


def test_a_gpu_fraction_is_accepted_as_given() -> None:
    spec = parse_spec({"dataset": "digits", "resources": {"cpus": 2, "gpus": 0.25}})
    assert (spec.resources.cpus, spec.resources.gpus) == (2.0, 0.25)


def test_yaml_exponent_floats_are_numbers_and_quoted_numbers_stay_refused(tmp_path: Path) -> None:
    # PyYAML alone reads `1e-3` (no dot) as a string, which the strict spec would refuse
    path = tmp_path / "spec.yaml"
    path.write_text("dataset: digits\nlearning_rate: 1e-3\nsearch_space:\n  beta: {low: 1e-2, high: 1E1}\n")
    spec = load_spec(path)
    assert (spec.learning_rate, spec.search_space.beta.low, spec.search_space.beta.high) == (0.001, 0.01, 10.0)
    path.write_text("dataset: digits\nlearning_rate: '1e-3'\n")
    with pytest.raises(SpecError, match="learning_rate"):
        load_spec(path)
