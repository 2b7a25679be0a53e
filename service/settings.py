"""Service settings from the environment (prefix RDVAE_; MLflow's own MLFLOW_TRACKING_URI)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


class Quota(BaseModel):
    """Per-token overrides of the default quotas; unset fields keep the defaults."""

    model_config = ConfigDict(extra="forbid")

    max_trials_per_sweep: int | None = Field(None, ge=1)
    max_epochs: int | None = Field(None, ge=1)
    max_active_sweeps_per_token: int | None = Field(None, ge=1)
    max_schedules_per_token: int | None = Field(None, ge=1)


class Settings(BaseSettings):
    """Everything configurable. The defaults are the embedded mode: SQLite, a local MLflow store, a local Ray."""

    model_config = SettingsConfigDict(env_prefix="RDVAE_", extra="ignore", populate_by_name=True)

    state_dir: Path = Field(Path(".rdvae/service"), description="Service DB, sweep folders, Ray storage, local MLflow.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///<state_dir>/service.db.")
    data_root: Path = Field(Path("data"), description="User dataset paths must resolve inside it.")
    ray_address: str | None = Field(None, description="host:port of a Ray cluster; unset: each driver's local Ray.")
    mlflow_tracking_uri: str | None = Field(
        None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "RDVAE_MLFLOW_TRACKING_URI"),
        description="Default: sqlite:///<state_dir>/mlflow.db (a local store).",
    )
    api_tokens: Annotated[list[str], NoDecode] = Field(default_factory=list, description="Comma-separated tokens.")
    admin_tokens: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated tokens that may act on every owner's sweeps and schedules."
    )
    max_schedules_per_token: int = Field(10, ge=1, description="Schedules one token may own (429 beyond).")
    trial_start_timeout_s: float = Field(
        600.0, gt=0.0, description="A running sweep that starts no trial within this many seconds is failed."
    )
    cluster_cpus: float | None = Field(None, gt=0.0, description="CPUs a trial may ask for at most; default: Ray's.")
    cluster_gpus: float | None = Field(None, ge=0.0, description="GPUs a trial may ask for at most; default: Ray's.")
    open_reads: bool = Field(True, description="GET endpoints without a token; false: reads need a token too.")
    insecure: bool = Field(False, description="Allow a non-loopback bind with no token configured.")
    host: str = Field("127.0.0.1", description="Bind host used by `python -m service`.")
    port: int = Field(8000, ge=1, le=65535)
    max_running_sweeps: int = Field(
        1, ge=1, le=256, description="Sweeps run at once; the rest wait, started round-robin by owner."
    )
    max_queued_sweeps: int = Field(1000, ge=1, description="Queue length beyond which submissions get 429.")
    max_trials_per_sweep: int = Field(200, ge=1, description="Per-token quota on `n_trials` (422 beyond).")
    max_epochs: int = Field(200, ge=1, description="Per-token quota on `epochs` (422 beyond).")
    max_active_sweeps_per_token: int = Field(4, ge=1, description="Queued + running sweeps per token (429 beyond).")
    token_quotas: dict[str, Quota] = Field(
        default_factory=dict, description='JSON: {"<owner>": {"max_epochs": 5, ...}}; owner as in GET responses.'
    )
    max_body_bytes: int = Field(65_536, ge=1024, description="Larger request bodies get 413.")
    poll_interval_s: float = Field(0.5, gt=0.0, le=60.0, description="How often the runner looks at its drivers.")
    cancel_grace_s: float = Field(60.0, gt=0.0, description="SIGTERM to SIGKILL delay when cancelling a driver.")
    max_launches: int = Field(3, ge=1, le=100, description="Driver launches per sweep (resumes after crashes).")
    driver_command: str | None = Field(None, description="Override of `python -m workers` (tests, containers).")

    @field_validator("api_tokens", "admin_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: object) -> object:
        if isinstance(value, str):
            return [token.strip() for token in value.split(",") if token.strip()]
        return value

    @property
    def all_tokens(self) -> list[str]:
        """Every accepted token, admin tokens included."""
        return [*self.api_tokens, *self.admin_tokens]

    def quota(self, owner: str, name: str) -> int:
        """The limit `name` for `owner`: its override in `token_quotas`, else the default setting."""
        override = self.token_quotas.get(owner)
        value = getattr(override, name) if override is not None else None
        return value if value is not None else getattr(self, name)

    @cached_property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.state_dir / 'service.db').resolve()}"

    @cached_property
    def resolved_tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{(self.state_dir / 'mlflow.db').resolve()}"

    @property
    def sweeps_dir(self) -> Path:
        return (self.state_dir / "sweeps").resolve()

    @property
    def ray_storage_root(self) -> Path:
        return (self.state_dir / "ray").resolve()
