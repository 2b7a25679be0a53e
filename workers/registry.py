"""Model registry promotion: register a sweep's recommended model with its lineage, and move `@champion` only to a
model that beats the current champion on the same data set and input shape by held-out ELBO.

Rules (`promote`):
- the registered name defaults to `<experiment>-<data set>-champion`, so unnamed sweeps on different data never
  share a champion;
- every version carries a description and tags: data set, its digest, input shape, β or C, held-out ELBO, rate,
  IWAE, sweep id and trial number;
- `@champion` moves when there is none yet, or the candidate's held-out ELBO is higher than the champion's on the
  same data set digest and input shape, or the spec sets `mlflow.force_champion`; a champion on other data or
  another input shape is never replaced implicitly (the name is shared by hand: force it);
- the champion it replaces stays reachable as `@champion-previous`, and the version's `rdvae.promotion` tag says
  what was decided and why.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from rdvae import DataConfig, resolve_user_path
from workers.results import TrialOutcome
from workers.spec import SweepSpec

CHAMPION_ALIAS = "champion"
PREVIOUS_ALIAS = "champion-previous"


@dataclass(frozen=True)
class Promotion:
    """What `promote` did: the version registered, whether it became the champion, and why."""

    name: str
    version: str
    promoted: bool
    reason: str


def dataset_label(dataset: DataConfig) -> str:
    """A short name of the data set for registered names: `digits`, or `file-<stem>` for a user file."""
    if dataset.name != "file" or not dataset.path:
        return dataset.name
    stem = dataset.path.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return f"file-{stem}"


def dataset_digest(dataset: DataConfig, content_digest: str) -> str:
    """The data's identity for champion comparisons (16 hex): the data config (splits, binarisation) and the content
    digest the lineage records (`DatasetInfo.digest`, sha256 of the file's bytes): equal digests, equal data."""
    return hashlib.sha256(f"{dataset.model_dump_json()}\n{content_digest}".encode()).hexdigest()[:16]


def _legacy_dataset_digest(dataset: DataConfig) -> str:
    """The identity digest that versions registered before `rdvae.dataset_sha256` carry (config JSON, then the
    file's bytes, first 16 hex): a champion from then is compared on its own terms, not refused as other data."""
    digest = hashlib.sha256(dataset.model_dump_json().encode())
    if dataset.name == "file" and dataset.path:
        try:
            digest.update(resolve_user_path(dataset.path).read_bytes())
        except (OSError, ValueError):
            digest.update(b"unreadable")
    return digest.hexdigest()[:16]


def default_name(experiment: str, dataset: DataConfig) -> str:
    return f"{experiment}-{dataset_label(dataset)}-champion"


def version_tags(
    trial: TrialOutcome, dataset: DataConfig, content_digest: str, input_shape: list[int], sweep_id: str
) -> dict[str, str]:
    """The lineage of a registered version: what it was trained on, how, and how well it does held out."""
    tags = {
        "rdvae.dataset": dataset_label(dataset),
        "rdvae.dataset_digest": dataset_digest(dataset, content_digest),
        "rdvae.dataset_sha256": content_digest,
        "rdvae.input_shape": json.dumps(input_shape),
        "rdvae.sweep_id": sweep_id,
        "rdvae.trial_number": str(trial.number),
        "rdvae.trial_id": trial.trial_id,
    }
    for key in ("objective", "beta", "C"):
        if key in trial.params:
            tags[f"rdvae.{key}"] = str(trial.params[key])
    for key in ("elbo", "rate", "distortion", "iwae_ll", "active_units"):
        if key in trial.metrics:
            tags[f"rdvae.{key}"] = f"{trial.metrics[key]:.6g}"
    return tags


def _description(trial: TrialOutcome, tags: dict[str, str]) -> str:
    knob = next((f"{key}={tags[f'rdvae.{key}']}" for key in ("beta", "C") if f"rdvae.{key}" in tags), "")
    shown = [key for key in ("elbo", "rate", "iwae_ll") if f"rdvae.{key}" in tags]
    held_out = ", ".join(f"{key} {tags[f'rdvae.{key}']}" for key in shown)
    return (
        f"rdvae VAE, trial {trial.number} of sweep {tags['rdvae.sweep_id']} on {tags['rdvae.dataset']} "
        f"(digest {tags['rdvae.dataset_digest']}, input {tags['rdvae.input_shape']}), {knob}; "
        f"held-out nats per example: {held_out}."
    )


def _champion(client: MlflowClient, name: str) -> tuple[str, dict[str, str]] | None:
    try:
        version = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException:
        return None
    return version.version, dict(version.tags)


def _decide(
    candidate: dict[str, str],
    champion: tuple[str, dict[str, str]] | None,
    force: bool,
    legacy_digest: Callable[[], str],
) -> tuple[bool, str]:
    if champion is None:
        return True, "first champion under this name"
    version, tags = champion
    if force:
        return True, f"forced (mlflow.force_champion) over version {version}"
    digest = candidate["rdvae.dataset_digest"] if "rdvae.dataset_sha256" in tags else legacy_digest()
    same_data = (
        tags.get("rdvae.dataset_digest") == digest and tags.get("rdvae.input_shape") == candidate["rdvae.input_shape"]
    )
    if not same_data:
        return False, (
            f"champion version {version} was trained on other data ({tags.get('rdvae.dataset')}, "
            f"input {tags.get('rdvae.input_shape')}); set mlflow.force_champion to replace it"
        )
    new, old = float(candidate.get("rdvae.elbo", "nan")), float(tags.get("rdvae.elbo", "nan"))
    if math.isnan(old) or new > old:
        return True, f"held-out ELBO {new:.6g} beats version {version}'s {old:.6g}"
    return False, f"held-out ELBO {new:.6g} does not beat champion version {version}'s {old:.6g}"


def promote(
    client: MlflowClient,
    name: str,
    model_uri: str,
    tags: dict[str, str],
    description: str,
    force: bool,
    legacy_digest: Callable[[], str],
) -> Promotion:
    """Register `model_uri` as a new version of `name` with `tags`, and move `@champion` to it when it wins.
    (MLflow's fluent tracking URI must be the client's: `mlflow.register_model` links MLflow 3 logged models.)"""
    champion = _champion(client, name)
    promoted, reason = _decide(tags, champion, force, legacy_digest)
    version = mlflow.register_model(model_uri, name, tags=tags)
    client.update_model_version(name, version.version, description=description)
    if promoted:
        if champion is not None:
            client.set_registered_model_alias(name, PREVIOUS_ALIAS, champion[0])
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version.version)
    client.set_model_version_tag(name, version.version, "rdvae.promotion", reason)
    return Promotion(name, version.version, promoted, reason)


def register_recommended(
    client: MlflowClient,
    trial: TrialOutcome,
    *,
    experiment: str,
    registered_name: str | None,
    dataset: DataConfig,
    content_digest: str,
    sweep_id: str,
    force: bool,
) -> Promotion:
    """Register a sweep's recommended trial (its `model_uri`) under the spec's name or the data set's default."""
    from mlflow.models import get_model_info

    shape = (get_model_info(trial.model_uri).metadata or {}).get("input_shape", [])
    tags = version_tags(trial, dataset, content_digest, [int(size) for size in shape], sweep_id)
    name = registered_name or default_name(experiment, dataset)
    description = _description(trial, tags)
    return promote(client, name, trial.model_uri, tags, description, force, lambda: _legacy_dataset_digest(dataset))


def register_champion(
    client: MlflowClient, spec: SweepSpec, sweep_id: str, trial: TrialOutcome, content_digest: str
) -> str:
    """`register_recommended` for a sweep's spec; the parent run's `rdvae.champion` tag text."""
    done = register_recommended(client, trial, experiment=spec.mlflow.experiment_name,
                                registered_name=spec.mlflow.registered_model_name, dataset=spec.dataset,
                                content_digest=content_digest, sweep_id=sweep_id,
                                force=spec.mlflow.force_champion)  # fmt: skip
    verdict = "now @champion" if done.promoted else "not promoted"
    return f"models:/{done.name}/{done.version} ({verdict}: {done.reason})"
