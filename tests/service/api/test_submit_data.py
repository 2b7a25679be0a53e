"""Bring-your-own-data at submit: every bad data case is a 422 naming the field, and an accepted sweep shows its
data set's lineage (digest, shape, likelihood) in GET /v1/sweeps/{id}."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import anndata
import numpy as np
import pytest
from fastapi.testclient import TestClient
from scipy import sparse
from service_helpers import TOKEN
from sqlalchemy.orm import Session, sessionmaker

from service.api.app import create_app
from service.queue import store
from service.queue.db import session_scope
from service.settings import Settings
from workers import Selection, SweepResult, SweepSpec
from workers.datasets import check_sweep_data

AUTH = {"Authorization": f"Bearer {TOKEN}"}
TINY = {"n_trials": 2, "epochs": 1}
RNG = np.random.default_rng(0)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, start_runner=False)) as test_client:
        yield test_client


@pytest.fixture
def files(settings: Settings) -> Path:
    """A data root with one file per case of the issue."""
    root = settings.data_root
    np.save(root / "grey.npy", RNG.random((40, 16)).astype(np.float32))  # an expression matrix scaled to [0, 1]
    np.save(root / "standardised.npy", RNG.standard_normal((40, 16)))
    np.save(root / "counts.npy", RNG.poisson(30.0, size=(40, 16)) * 130)  # raw counts up to ~6 000
    np.save(root / "nan.npy", np.where(RNG.random((40, 16)) > 0.9, np.nan, 0.5))
    np.save(root / "images.npy", RNG.random((40, 1, 6, 6)))
    np.savez(root / "labelled.npz", y=np.zeros(1797), images=RNG.random((40, 16)))
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (1_000_000, 1000)})
    with zipfile.ZipFile(root / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", header.getvalue())  # declares 4 GB
    counts = sparse.csr_matrix(RNG.poisson(2.0, size=(40, 16)).astype(np.float32))
    anndata.AnnData(X=counts.multiply(1 / 7).tocsr(), layers={"counts": counts}).write_h5ad(root / "cells.h5ad")
    return root


def _submit(client: TestClient, dataset: dict, **model: object) -> tuple[int, dict]:
    answer = client.post("/v1/sweeps", json={**TINY, "dataset": dataset, "model": model}, headers=AUTH)
    return answer.status_code, answer.json()


@pytest.mark.parametrize(
    ("dataset", "model", "field", "reason"),
    [
        # a [0, 1]-scaled matrix with the defaults: refused, never silently Bernoulli-sampled
        ({"path": "grey.npy"}, {}, "body.model.likelihood", "'bernoulli' needs values in {0, 1}"),
        ({"path": "counts.npy"}, {"likelihood": "bernoulli"}, "body.model.likelihood", "needs values in {0, 1}"),
        ({"path": "standardised.npy"}, {"likelihood": "poisson"}, "body.model.likelihood", "non-negative integer"),
        ({"path": "grey.npy"}, {"likelihood": "nb"}, "body.model.likelihood", "not all integers"),
        ({"path": "counts.npy", "binarization": "static"}, {}, "body.dataset.binarization", "must lie in [0, 1]"),
        ({"path": "nan.npy"}, {"likelihood": "gaussian"}, "body.dataset.path", "contains NaN or inf"),
        (
            {"path": "labelled.npz"},
            {},
            "body.dataset.key",
            "no array 'x' in the .npz (arrays present: ['images', 'y'])",
        ),
        ({"path": "labelled.npz", "key": "y"}, {}, "body.dataset.key", "array 'y': expected shape [N, D]"),
        ({"path": "bomb.npz"}, {}, "body.dataset.path", "holds 4,000,000,000 bytes, over the limit"),
        ({"path": "images.npy"}, {"likelihood": "gaussian", "encoder": "conv"}, "body.model.encoder", "divisible by 4"),
        ({"path": "cells.h5ad"}, {"likelihood": "zinb"}, "body.model.likelihood", "not all integers"),
        ({"path": "cells.h5ad", "key": "raw"}, {"likelihood": "zinb"}, "body.dataset.key", "no layer 'raw'"),
        ({"path": "table.csv"}, {}, "body.dataset.path", "expected a .npy, .npz or .h5ad file"),
    ],
)
def test_bad_data_is_422_at_submit_naming_the_field(
    client: TestClient, files: Path, dataset: dict, model: dict, field: str, reason: str
) -> None:
    status, body = _submit(client, {"name": "file", **dataset}, **model)
    assert status == 422, body
    assert body["errors"] == [{"field": field, "reason": body["errors"][0]["reason"]}]
    assert reason in body["errors"][0]["reason"]
    assert str(files) not in body["detail"]  # only the user's path, never the server's
    assert client.get("/v1/sweeps").json()["total"] == 0


def test_built_in_sets_are_checked_against_the_likelihood_too(client: TestClient) -> None:
    status, body = _submit(client, {"name": "digits", "binarization": "none"})
    assert status == 422 and body["errors"][0]["field"] == "body.model.likelihood"
    status, body = _submit(client, {"name": "synthetic_counts", "binarization": "static"}, likelihood="nb")
    assert status == 422 and body["errors"][0]["field"] == "body.dataset.binarization"
    status, body = _submit(client, {"name": "synthetic_counts"}, decoder="conv", likelihood="nb")
    assert status == 422 and body["errors"][0]["field"] == "body.model.decoder"
    refused = client.post(
        "/v1/sweeps",
        json={
            **TINY,
            "dataset": "synthetic_counts",
            "model": {"likelihood": "nb"},
            "search_space": {"decoder": ["mlp", "conv"]},
        },
        headers=AUTH,
    )
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "body.search_space.decoder"


@pytest.mark.parametrize(
    ("dataset", "model", "shape", "dtype"),
    [
        ({"path": "standardised.npy"}, {"likelihood": "gaussian", "standardize": True}, [40, 16], "float64"),
        ({"path": "counts.npy"}, {"likelihood": "nb"}, [40, 16], "int64"),
        ({"path": "grey.npy", "binarization": "dynamic"}, {}, [40, 16], "float32"),
        ({"path": "cells.h5ad", "key": "counts"}, {"likelihood": "zinb"}, [40, 16], "float32"),
        ({"path": "labelled.npz", "key": "images"}, {"likelihood": "gaussian"}, [40, 16], "float64"),
    ],
)
def test_an_accepted_sweep_shows_its_data_sets_lineage(
    client: TestClient, files: Path, dataset: dict, model: dict, shape: list[int], dtype: str
) -> None:
    status, body = _submit(client, {"name": "file", **dataset}, **model)
    assert status == 202, body
    detail = client.get(body["status_url"]).json()
    digest = hashlib.sha256((files / dataset["path"]).read_bytes()).hexdigest()
    assert detail["dataset"] == {
        "name": "file",
        "path": dataset["path"],
        "key": dataset.get("key"),
        "digest": f"sha256:{digest}",
        "shape": shape,
        "dtype": dtype,
        "likelihood": model.get("likelihood", "bernoulli"),
        "binarization": dataset.get("binarization", "none"),
    }


def test_a_file_replaced_after_submit_shows_what_the_driver_trained_on(
    client: TestClient, files: Path, factory: sessionmaker[Session]
) -> None:
    status, body = _submit(client, {"name": "file", "path": "standardised.npy"}, likelihood="gaussian")
    assert status == 202, body
    spec = SweepSpec.model_validate(client.get(body["status_url"]).json()["spec"])

    def driver_reports() -> dict:  # what the runner stores when the driver's result.json arrives
        result = SweepResult(name="x", trials=[], selection=Selection(), dataset=check_sweep_data(spec, files))
        with session_scope(factory) as session:
            store.apply_result(store.get_sweep(session, body["id"]), result)
        return client.get(body["status_url"]).json()

    assert client.get(body["status_url"]).json()["dataset_changed"] is None  # nothing trained yet
    same = driver_reports()
    assert same["trained_on"] == same["dataset"] and same["dataset_changed"] is False
    np.save(files / "standardised.npy", RNG.standard_normal((50, 16)))  # replaced before a (re)launched driver read it
    changed = driver_reports()
    assert changed["dataset_changed"] is True and changed["dataset"] == same["dataset"]
    digest = hashlib.sha256((files / "standardised.npy").read_bytes()).hexdigest()
    assert changed["trained_on"]["digest"] == f"sha256:{digest}" and changed["trained_on"]["shape"] == [50, 16]


def test_a_built_in_set_has_the_digest_of_its_array(client: TestClient) -> None:
    status, body = _submit(client, {"name": "digits"})
    assert status == 202
    dataset = client.get(body["status_url"]).json()["dataset"]
    assert dataset["shape"] == [1797, 64] and dataset["binarization"] == "static"
    assert dataset["digest"].startswith("sha256:") and len(dataset["digest"]) == 7 + 64


def test_schedules_check_the_data_as_submit_does(client: TestClient, files: Path) -> None:
    spec = {**TINY, "dataset": {"name": "file", "path": "grey.npy"}}
    answer = client.post("/v1/schedules", json={"cron": "0 2 * * *", "spec": spec}, headers=AUTH)
    assert answer.status_code == 422
    assert [e["field"] for e in answer.json()["errors"]] == ["body.spec.model.likelihood"]
