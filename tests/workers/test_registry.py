"""Champion promotion against a real MLflow server: `@champion` moves only to a better held-out ELBO on the same
data and input shape (or when forced), versions carry their lineage, the replaced champion stays reachable."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import mlflow
import pytest
from mlflow import MlflowClient

from rdvae import DataConfig
from workers.registry import PREVIOUS_ALIAS, default_name, register_recommended
from workers.results import TrialOutcome

pytestmark = pytest.mark.slow
DIGITS = DataConfig(name="digits")
DIGITS_SHA256 = "sha256:" + "ab" * 32  # DatasetInfo.digest, what run_sweep passes


class _Identity(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input):  # noqa: ANN001, ANN201 - MLflow's interface
        return model_input


@pytest.fixture(scope="module")
def client(mlflow_server: str) -> Iterator[MlflowClient]:
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("registry-test")
    yield MlflowClient(mlflow_server)


def _trial(number: int, elbo: float, inputs: int = 64) -> TrialOutcome:
    """A trial whose logged model takes [-1, inputs] (the model metadata the registry reads the input shape from,
    as `SweepTracker.log_model` writes it)."""
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=_Identity(), metadata={"input_shape": [inputs]},
                                       pip_requirements=[])  # fmt: skip
    return TrialOutcome(trial_id=f"t{number}", number=number, status="completed", params={"beta": 1.22},
                        metrics={"elbo": elbo, "rate": 3.5, "iwae_ll": elbo + 1.0}, model_uri=info.model_uri,
                        mlflow_run_id=run.info.run_id)  # fmt: skip


def _register(  # noqa: ANN202
    client: MlflowClient, trial: TrialOutcome, name: str, force: bool = False, content_digest: str = DIGITS_SHA256
):
    return register_recommended(client, trial, experiment="rdvae", registered_name=name, dataset=DIGITS,
                                content_digest=content_digest, sweep_id=f"sweep-{trial.number}",
                                force=force)  # fmt: skip


def _champion(client: MlflowClient, name: str, alias: str = "champion") -> str:
    return client.get_model_version_by_alias(name, alias).version


def test_champion_moves_only_to_a_better_model_on_the_same_data(client: MlflowClient) -> None:
    name = "registry-digits"
    first = _register(client, _trial(0, -30.0), name)
    assert first.promoted and _champion(client, name) == first.version
    worse = _register(client, _trial(1, -42.4), name)  # a 1-epoch sweep used to take @champion
    assert not worse.promoted and _champion(client, name) == first.version
    assert "does not beat" in client.get_model_version(name, worse.version).tags["rdvae.promotion"]
    better = _register(client, _trial(2, -25.0), name)
    assert better.promoted and _champion(client, name) == better.version
    assert _champion(client, name, PREVIOUS_ALIAS) == first.version  # the replaced champion stays reachable
    other_shape = _register(client, _trial(3, -10.0, inputs=784), name)
    assert not other_shape.promoted and "other data" in other_shape.reason
    edited_file = _register(client, _trial(5, -10.0), name, content_digest="sha256:" + "cd" * 32)  # same config
    assert not edited_file.promoted and "other data" in edited_file.reason
    forced = _register(client, _trial(4, -50.0), name, force=True)
    assert forced.promoted and _champion(client, name) == forced.version


def test_versions_carry_their_lineage_and_default_names_include_the_data_set(client: MlflowClient) -> None:
    assert default_name("rdvae", DIGITS) == "rdvae-digits-champion"
    assert default_name("rdvae", DataConfig(name="file", path="sub/faces.npy")) == "rdvae-file-faces-champion"
    done = _register(client, _trial(7, -31.5), "registry-lineage")
    version = client.get_model_version("registry-lineage", done.version)
    assert version.tags["rdvae.dataset"] == "digits" and len(version.tags["rdvae.dataset_digest"]) == 16
    assert version.tags["rdvae.dataset_sha256"] == DIGITS_SHA256
    assert version.tags["rdvae.input_shape"] == "[64]" and version.tags["rdvae.beta"] == "1.22"
    assert version.tags["rdvae.elbo"] == "-31.5" and version.tags["rdvae.iwae_ll"] == "-30.5"
    assert version.tags["rdvae.rate"] == "3.5" and version.tags["rdvae.sweep_id"] == "sweep-7"
    assert "trial 7 of sweep sweep-7 on digits" in version.description and "beta=1.22" in version.description


def test_a_champion_registered_before_content_digests_is_judged_on_its_own_digest(client: MlflowClient) -> None:
    name = "registry-legacy"
    old = _register(client, _trial(10, -30.0), name)
    # what versions registered before `rdvae.dataset_sha256` carry: 16 hex of the config (and a file's bytes)
    legacy = hashlib.sha256(DIGITS.model_dump_json().encode()).hexdigest()[:16]
    client.set_model_version_tag(name, old.version, "rdvae.dataset_digest", legacy)
    client.delete_model_version_tag(name, old.version, "rdvae.dataset_sha256")
    better = _register(client, _trial(11, -25.0), name)
    assert better.promoted, better.reason  # not refused as "other data"
    client.set_model_version_tag(name, better.version, "rdvae.dataset_digest", "0" * 16)
    client.delete_model_version_tag(name, better.version, "rdvae.dataset_sha256")
    other = _register(client, _trial(12, -20.0), name)
    assert not other.promoted and "other data" in other.reason
