"""Bring your own data end to end over real HTTP: examples/counts_nb.yaml and examples/gaussian_real.yaml through
uvicorn, the real `workers` driver, a real MLflow server and a Ray head, each to a recommended model that makes
sense for its data (rate > 0, distortion below a latent-free model, rates recovered), with the data set's lineage
in GET /v1/sweeps/{id} and as the MLflow dataset input of the sweep's parent run."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml
from scipy import stats
from service_helpers import ApiProcess, real_stack_env, reap_drivers, wait_until

from rdvae import DataConfig, load_data, synthetic_counts

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
FINISHED = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, mlflow_server: str, ray_cluster: str) -> Iterator[ApiProcess]:
    root = tmp_path_factory.mktemp("byo")
    from sklearn.datasets import load_breast_cancer

    np.save(root / "breast_cancer.npy", load_breast_cancer().data)  # what the example's comment asks users to do
    # both examples at once: their Ray and MLflow start-up overlaps
    env = real_stack_env(root, mlflow_server, ray_cluster, RDVAE_MAX_RUNNING_SWEEPS="2")
    process = ApiProcess(env, root / "api.log").start()
    yield process
    process.stop()
    reap_drivers(root / "state")


def _example(name: str, run: str, **overrides: object) -> dict:
    spec = yaml.safe_load((EXAMPLES / name).read_text())
    # fewer, shorter trials than the example (CI time); everything else as a user would submit it
    spec.update(n_trials=2, max_concurrent_trials=2, iwae_samples=10, sampler="random", **overrides)
    spec["mlflow"] = {"experiment_name": f"byo-{run}", "registered_model_name": f"byo-{run}"}
    return spec


@pytest.fixture(scope="module")
def finished(api: ApiProcess) -> dict[str, tuple[dict, dict]]:
    """Both examples submitted together; each name -> (GET /v1/sweeps/{id}, GET .../pareto) once finished."""
    specs = {
        "counts": _example("counts_nb.yaml", "counts", epochs=20),
        "real": _example("gaussian_real.yaml", "real", epochs=40),
    }
    results = {}
    with api.client() as client:
        urls = {}
        for name, spec in specs.items():
            accepted = client.post("/v1/sweeps", json=spec)
            assert accepted.status_code == 202, accepted.text
            urls[name] = accepted.json()["status_url"]
        for name, url in urls.items():
            done = wait_until(lambda url=url: (body := client.get(url).json())["status"] in FINISHED and body, 300)
            assert done["status"] == "succeeded", done["error"]
            pareto = client.get(f"{url}/pareto").json()
            assert pareto["recommended"] is not None, pareto["reason"]
            results[name] = (done, pareto)
    return results


def _logged_dataset(mlflow_server: str, parent_run_id: str) -> tuple[object, dict[str, str]]:
    run = mlflow.MlflowClient(mlflow_server).get_run(parent_run_id)
    (entry,) = run.inputs.dataset_inputs
    return entry.dataset, {tag.key: tag.value for tag in entry.tags}


def test_counts_nb_example_recovers_the_known_rates(finished: dict, mlflow_server: str) -> None:
    done, pareto = finished["counts"]
    recommended = pareto["recommended"]["metrics"]
    data = DataConfig(name="synthetic_counts", synthetic_examples=2000, synthetic_latent_dim=2)
    splits = load_data(data)
    validation = splits.validation.numpy().astype(np.float64)
    library = validation.sum(1, keepdims=True)
    proportions = splits.train.numpy().sum(0) / splits.train.numpy().sum()
    # the best latent-free model of the same family: per-feature proportions x library, the true dispersion
    baseline = -stats.nbinom.logpmf(validation, 4.0, 4.0 / (4.0 + library * proportions)).sum(1).mean()
    assert recommended["rate"] > 1.0
    assert recommended["distortion"] < baseline - 20.0, (recommended["distortion"], baseline)
    dataset = done["dataset"]
    assert (dataset["name"], dataset["shape"], dataset["likelihood"]) == ("synthetic_counts", [2000, 50], "nb")
    logged, tags = _logged_dataset(mlflow_server, done["mlflow_parent_run_id"])
    assert tags["rdvae.dataset.digest"] == dataset["digest"]
    assert logged.digest == dataset["digest"].removeprefix("sha256:")[:32]
    assert tags["rdvae.dataset.likelihood"] == "nb" and tags["mlflow.data.context"] == "training"
    # the champion, loaded back from the registry, reconstructs the generator's means
    mlflow.set_tracking_uri(mlflow_server)
    champion = mlflow.pytorch.load_model("models:/byo-counts@champion").vae.eval()
    counts, true_mean = synthetic_counts(data)
    order = np.random.default_rng(data.split_seed).permutation(counts.shape[0])
    n_train = splits.train.shape[0]
    true_validation = true_mean[order][n_train : n_train + splits.validation.shape[0]]
    with torch.no_grad():
        mu, _logvar = champion.encode(splits.validation)
        recovered = champion.reconstruct_mean(mu, splits.validation.sum(1)).numpy()
    assert np.corrcoef(np.log(recovered.ravel()), np.log(true_validation.ravel()))[0, 1] > 0.9


def test_gaussian_real_example_models_a_real_valued_file(api: ApiProcess, finished: dict, mlflow_server: str) -> None:
    data_root = Path(api.env["RDVAE_DATA_ROOT"])
    done, pareto = finished["real"]
    recommended = pareto["recommended"]["metrics"]
    splits = load_data(DataConfig(name="file", path="breast_cancer.npy"), root=data_root)
    mean, std = splits.train.double().mean(0), splits.train.double().std(0)
    # a latent-free model: independent Gaussians per feature, fitted to the training split, in the data's units
    baseline = float(-torch.distributions.Normal(mean, std).log_prob(splits.validation.double()).sum(1).mean())
    assert recommended["rate"] > 1.0
    assert recommended["distortion"] < baseline - 10.0, (recommended["distortion"], baseline)
    digest = hashlib.sha256((data_root / "breast_cancer.npy").read_bytes()).hexdigest()
    assert done["dataset"] == {
        "name": "file",
        "path": "breast_cancer.npy",
        "key": None,
        "digest": f"sha256:{digest}",
        "shape": [569, 30],
        "dtype": "float64",
        "likelihood": "gaussian",
        "binarization": "none",
    }
    assert done["trained_on"] == done["dataset"] and done["dataset_changed"] is False  # the real driver's report
    _logged, tags = _logged_dataset(mlflow_server, done["mlflow_parent_run_id"])
    assert tags["rdvae.dataset.digest"] == f"sha256:{digest}" and tags["rdvae.dataset.shape"] == "[569, 30]"
