"""SweepSpec: the one schema of a sweep — API request body, stored record and what every trial receives."""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rdvae import DataConfig, ModelConfig, is_collapsed
from rdvae.metrics import COLLAPSE_RATE_THRESHOLD

ObjectiveMetric = Literal["elbo", "iwae_ll", "active_units", "mutual_info", "rate"]
ConstraintMetric = Literal["active_units", "mutual_info", "rate", "elbo", "distortion", "iwae_ll"]
SamplerName = Literal["nsga2", "tpe", "gp", "random", "grid"]
ObjectiveFamily = Literal["beta", "capacity"]
NON_COLLAPSE_METRICS = ("active_units", "mutual_info", "rate")
MAX_SEED = 2**32 - 1  # Optuna's samplers seed NumPy's RandomState, which takes 0 .. 2**32 - 1


def _printable(value: str) -> str:
    # NUL and other control characters break Postgres text columns and MLflow names, and a lone surrogate (a JSON
    # "\ud800" escape) cannot even be written back as UTF-8: refused here rather than as a 500 or a failed sweep
    for char in value:
        category = unicodedata.category(char)
        if category == "Cc":
            raise ValueError(f"control character {char!r} is not allowed")
        if category == "Cs":
            raise ValueError(f"lone surrogate {char!r} is not valid Unicode")
    return value


PlainText = Annotated[str, AfterValidator(_printable)]


class _Strict(BaseModel):
    # NaN and ±Infinity are valid JSON literals for Python's parser but no valid value of any field here; strict:
    # no bool → int and no "3" → 3 (a quoted number or `true` for `n_trials` is a client bug, not a request)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class LogRange(_Strict):
    """A positive range searched on a log scale."""

    low: float = Field(gt=0.0)
    high: float = Field(gt=0.0)

    @model_validator(mode="after")
    def _ordered(self) -> LogRange:
        if not self.low < self.high:
            raise ValueError(f"empty range: low ({self.low}) must be < high ({self.high})")
        return self


class LinearRange(_Strict):
    """A non-negative range searched on a linear scale."""

    low: float = Field(ge=0.0)
    high: float = Field(ge=0.0)

    @model_validator(mode="after")
    def _ordered(self) -> LinearRange:
        if not self.low < self.high:
            raise ValueError(f"empty range: low ({self.low}) must be < high ({self.high})")
        return self


class SearchSpace(_Strict):
    """What Optuna searches. `beta` applies to the `beta` family, `C` (nats) and `gamma` to `capacity`."""

    objective: list[ObjectiveFamily] = Field(
        default_factory=lambda: ["beta"], min_length=1, description="One family, or both as a categorical."
    )
    beta: LogRange = Field(default_factory=lambda: LogRange(low=0.05, high=20.0))
    C: LinearRange = Field(default_factory=lambda: LinearRange(low=0.0, high=30.0))
    gamma: float = Field(100.0, gt=0.0, le=1e5, description="Weight of |R - C| (fixed, not searched).")
    capacity_anneal_fraction: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="Fraction of each trial's optimiser steps over which C_t rises from 0 to C; C is held after.",
    )
    capacity_anneal_steps: int | None = Field(
        None,
        ge=0,
        le=10_000_000,
        description="Optimiser steps of the C_t ramp, instead of the fraction; refused when the run is shorter.",
    )
    learning_rate: LogRange | None = Field(None, description="Searched when given, else `SweepSpec.learning_rate`.")
    latent_dim: list[int] | None = Field(None, min_length=1, description="Categorical choice of latent sizes.")
    decoder: list[Literal["mlp", "conv", "made"]] | None = Field(
        None, min_length=1, description="Categorical choice of decoder family (e.g. factorised vs autoregressive)."
    )

    @field_validator("objective", "decoder")
    @classmethod
    def _no_repeats(cls, values: list[str] | None) -> list[str] | None:
        if values is not None and len(set(values)) != len(values):
            raise ValueError(f"repeated choices in {values}")
        return values

    @field_validator("latent_dim")
    @classmethod
    def _latent_sizes(cls, values: list[int] | None) -> list[int] | None:
        if values is not None and any(v < 1 or v > 512 for v in values):
            raise ValueError(f"latent_dim choices must lie in [1, 512], got {values}")
        if values is not None and len(set(values)) != len(values):
            raise ValueError(f"repeated choices in {values}")
        return values


class ObjectiveSpec(_Strict):
    """One optimisation objective: a held-out metric and its direction.

    elbo: -(D + R), the β = 1 bound, whatever β trained the model. iwae_ll: the tighter k-sample bound.
    rate: R = E_x KL(q(z|x) || p(z)), keeps ranking models at any rate (with a collapse constraint it is the
    discriminating non-collapse objective). mutual_info: the N-point estimate of I(x; z) <= R, capped at log N of
    the validation set (5.2 nats on digits, 6.2 on mnist5k): models above the cap tie. active_units: saturates at
    latent_dim, so healthy models tie.
    """

    metric: ObjectiveMetric
    direction: Literal["maximize", "minimize"] = "maximize"


class Constraint(_Strict):
    """A feasibility rule on a held-out metric, e.g. active_units >= 2."""

    metric: ConstraintMetric
    op: Literal[">=", "<="] = ">="
    value: float

    def violation(self, metrics: dict[str, float]) -> float:
        """How far `metrics` are from satisfying the rule: <= 0 when satisfied (Optuna's convention)."""
        observed = metrics[self.metric]
        return self.value - observed if self.op == ">=" else observed - self.value

    def describe(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


class Resources(_Strict):
    """Per-trial resources: CPUs and a GPU fraction (0.25 lets four trials share one GPU)."""

    cpus: float = Field(1.0, gt=0.0, le=256.0)
    gpus: float = Field(0.0, ge=0.0, le=1.0, description="GPU fraction per trial, in [0, 1].")
    cuda_graph: bool = Field(
        False,
        description="On a GPU, capture each trial's (or cohort's) whole training step in a CUDA graph and replay it "
        "(rdvae `TrainConfig.cuda_graph`): the step of a small VAE is launch-bound, and the graph removes the "
        "launches. Where capture is not possible the trial trains eagerly and its log says why; on CPU it is ignored.",
    )


class EarlyStopping(_Strict):
    """ASHA on held-out ELBO plus a collapse-aware stopper; both off by default.

    A stopped trial keeps the metrics of the epoch it stopped at: it is *censored*. The verdict compares only trials
    trained to the full budget and says which were censored, because early stopping biases it: a collapsed model
    stopped at epoch 16 of 100 looks worse than it would have ended (the digits case of the README), and ASHA on
    ELBO favours trials that collapse early. Turn them on for wide exploratory sweeps, not for the final answer.
    """

    asha: bool = False
    grace_period: int = Field(2, ge=1, description="Epochs before ASHA may stop a trial.")
    reduction_factor: float = Field(3.0, gt=1.0)
    stop_collapsed: bool = Field(False, description="End trials whose rate stays below the threshold after warm-up.")
    collapse_warmup_epochs: int = Field(3, ge=1)


class MlflowSpec(_Strict):
    """Where and under which names the sweep is recorded."""

    experiment_name: PlainText = Field("rdvae", min_length=1, max_length=200)
    registered_model_name: PlainText | None = Field(
        None,
        max_length=200,
        description="Register the recommended model under this name (default `<experiment>-<data set>-champion`); "
        "alias `champion` moves only to a better held-out ELBO on the same data (see workers/registry.py).",
    )
    log_models: bool = True
    force_champion: bool = Field(
        False, description="Move `@champion` to this sweep's model even if it does not beat the current champion."
    )


class SweepSpec(_Strict):
    """A rate-distortion sweep: data, model, search space, objectives, constraints and execution limits."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {
                    "name": "digits-beta",
                    "dataset": "digits",
                    "n_trials": 8,
                    "max_concurrent_trials": 2,
                    "epochs": 10,
                    "search_space": {"objective": ["beta"], "beta": {"low": 0.1, "high": 10.0}},
                    "objectives": [
                        {"metric": "elbo", "direction": "maximize"},
                        {"metric": "active_units", "direction": "maximize"},
                    ],
                    "constraints": [{"metric": "active_units", "op": ">=", "value": 2}],
                    "sampler": "nsga2",
                    "seed": 0,
                }
            ]
        },
    )

    name: PlainText | None = Field(None, max_length=200)
    dataset: DataConfig = Field(
        default_factory=DataConfig, description="A data set name (`digits`) or a full data config object."
    )
    model: ModelConfig = Field(default_factory=lambda: ModelConfig(latent_dim=16, hidden_dims=(200,)))
    search_space: SearchSpace = Field(default_factory=SearchSpace)
    n_trials: int = Field(8, ge=1, le=10_000)
    max_concurrent_trials: int = Field(2, ge=1, le=1_024)
    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(128, ge=1, le=65_536)
    learning_rate: float = Field(1e-3, gt=0.0, le=1.0)
    iwae_samples: int = Field(100, ge=0, le=10_000, description="k of each trial's final held-out IWAE bound.")
    resources: Resources = Field(default_factory=Resources)
    objectives: list[ObjectiveSpec] = Field(
        default_factory=lambda: [ObjectiveSpec(metric="elbo"), ObjectiveSpec(metric="active_units")],
        min_length=1,
        max_length=2,
    )
    constraints: list[Constraint] = Field(
        default_factory=lambda: [Constraint(metric="active_units", op=">=", value=1)], max_length=8
    )
    sampler: SamplerName = "nsga2"
    grid_points: int = Field(5, ge=2, le=100, description="Grid sampler: points per searched dimension.")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    collapse_rate_threshold: float = Field(
        COLLAPSE_RATE_THRESHOLD,
        gt=0.0,
        le=1e4,
        description="Nats: a model whose held-out rate is below it (or with no active unit) is collapsed — for the "
        "verdict, the stopper, the selection and the plot alike.",
    )
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    max_failures: int = Field(1, ge=0, le=10, description="Retries of a failed trial before it is recorded failed.")
    cohort_size: int = Field(
        1,
        ge=1,
        le=1024,
        description="Trials trained together as one stacked program (one Tune trial, `rdvae.fit_cohort`); each "
        "member stays a trial of its own. On a GPU a cohort of 64-128 is where the speed is; on CPU stacking is "
        "neutral, so the default, 1, keeps one trial per Tune trial.",
    )
    mlflow: MlflowSpec = Field(default_factory=MlflowSpec)
    warm_start_params: list[dict[str, float | int | str]] = Field(
        default_factory=list,
        max_length=100,
        description="Parameter sets evaluated first (e.g. the previous sweep's front); clipped into the ranges.",
    )

    @model_validator(mode="before")
    @classmethod
    def _one_collapse_threshold(cls, data: Any) -> Any:
        # Specs stored before the threshold moved to the top level carry it under early_stopping.
        stopping = data.get("early_stopping") if isinstance(data, dict) else None
        if not isinstance(stopping, dict) or "collapse_rate_threshold" not in stopping:
            return data
        stopping = dict(stopping)
        moved = stopping.pop("collapse_rate_threshold")
        if "collapse_rate_threshold" in data and data["collapse_rate_threshold"] != moved:
            raise ValueError(
                "early_stopping.collapse_rate_threshold: moved to collapse_rate_threshold (one threshold for the "
                "verdict, the stopper and the plot); give it once"
            )
        return {**data, "early_stopping": stopping, "collapse_rate_threshold": moved}

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset_by_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("warm_start_params")
    @classmethod
    def _printable_params(cls, values: list[dict[str, float | int | str]]) -> list[dict[str, float | int | str]]:
        for index, params in enumerate(values):
            for key, value in params.items():
                try:
                    _printable(key)
                    if isinstance(value, str):
                        _printable(value)
                except ValueError as error:
                    raise ValueError(f"entry {index}, parameter {key!r}: {error}") from None
        return values

    @model_validator(mode="after")
    def _consistent(self) -> SweepSpec:
        metrics = [objective.metric for objective in self.objectives]
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"objectives: repeated metric in {metrics}")
        if self.max_concurrent_trials > self.n_trials:
            self.max_concurrent_trials = self.n_trials
        if self.sampler == "grid" and self.search_space.learning_rate is not None and self.grid_points**3 > 10_000:
            raise ValueError("grid: too many grid points; lower grid_points")
        decoders = self.search_space.decoder or [self.model.decoder]
        if "made" in decoders and self.model.likelihood != "bernoulli":
            raise ValueError("search_space.decoder: 'made' models binary pixels; it needs model.likelihood 'bernoulli'")
        for constraint in self.constraints:
            if constraint.metric == "iwae_ll" and self.iwae_samples == 0:
                raise ValueError("constraints: iwae_ll needs iwae_samples >= 1")
        if "iwae_ll" in metrics and self.iwae_samples == 0:
            raise ValueError("objectives: iwae_ll needs iwae_samples >= 1")
        return self

    def constraint_violations(self, metrics: dict[str, float]) -> list[float]:
        """Optuna's convention: one value per constraint, <= 0 when it holds; a collapsed model violates one more
        (present when the spec asks for non-collapse)."""
        values = [constraint.violation(metrics) for constraint in self.constraints]
        if self.asks_for_non_collapse():
            values.append(1.0 if self.is_collapsed(metrics) else -1.0)
        return values

    def is_collapsed(self, metrics: dict[str, float]) -> bool:
        """The one collapse rule of the sweep: rate below `collapse_rate_threshold` or no active unit."""
        if "rate" not in metrics:
            return metrics.get("collapsed", 0.0) >= 0.5
        return is_collapsed(metrics["rate"], int(metrics.get("active_units", 1)), self.collapse_rate_threshold)

    def asks_for_non_collapse(self) -> bool:
        """True when an objective or a lower-bound constraint rewards a non-collapsed latent code."""
        rewarded = any(o.metric in NON_COLLAPSE_METRICS and o.direction == "maximize" for o in self.objectives)
        return rewarded or any(c.metric in NON_COLLAPSE_METRICS and c.op == ">=" for c in self.constraints)


class SpecError(ValueError):
    """A sweep specification that cannot be read or validated; the message names the field."""


_SWEEP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_sweep_id(sweep_id: str) -> str:
    """A sweep id names a directory: 1-128 letters, digits, '.', '_' or '-', not starting with a dot or dash."""
    if not _SWEEP_ID.match(sweep_id):
        raise SpecError(f"sweep_id {sweep_id!r}: use 1-128 letters, digits, '.', '_' or '-'")
    return sweep_id


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem, each naming its field as a dotted path (`search_space.beta.low: ...`)."""
    lines = []
    for problem in error.errors():
        field = ".".join(str(part) for part in problem["loc"]) or "spec"
        lines.append(f"{field}: {problem['msg']}")
    return "; ".join(lines)


def parse_spec(data: Any) -> SweepSpec:
    """Validate a mapping as a SweepSpec, raising SpecError with the offending fields named."""
    if not isinstance(data, dict):
        raise SpecError(f"spec: expected a mapping of fields, got {type(data).__name__}")
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(f"invalid sweep spec: {describe_validation_error(error)}") from error


class SpecYamlLoader(yaml.SafeLoader):
    """SafeLoader that reads `1e-3` as a float, as YAML 1.2 does (PyYAML follows YAML 1.1: a string without a dot)."""


SpecYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_spec(path: str | Path) -> SweepSpec:
    """Read a SweepSpec from a .yaml/.yml or .json file."""
    path = Path(path)
    if path.suffix not in (".yaml", ".yml", ".json"):
        raise SpecError(f"spec file {path}: expected a .yaml, .yml or .json file")
    try:
        text = path.read_text()
    except OSError as error:
        raise SpecError(f"spec file {path}: cannot be read ({error.strerror})") from error
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.load(text, Loader=SpecYamlLoader)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise SpecError(f"spec file {path}: not valid {path.suffix[1:].upper()} ({error})") from error
    return parse_spec(data)
