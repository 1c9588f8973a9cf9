"""The champion reader against a fake MLflow REST API (its answers copied from a real server):
the requests it makes, how it reads the answers, and the errors it raises."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import requests
from requests.adapters import BaseAdapter, HTTPAdapter

from services.core.errors import FailedPrecondition, Unavailable
from services.model.artifact import ArtifactRefused, ModelArtifact, sha256_of
from services.model.champion import ChampionReader, mlflow_session
from services.model.lineage import Lineage
from services.model.versions import VersionInfo, version_tags

TRACKING = "http://127.0.0.1:5000"
SOURCE = "mlflow-artifacts:/1/44fe44ac/artifacts/model"
LINEAGE = Lineage(topic="interactions", row_count=600, content_hash="ab" * 32,
                  partition_offsets={0: 400, 1: 200}, user_count=3, item_count=4)
METRICS = {"ndcg_at_10": 0.5, "users_evaluated": 40.0}
HYPERPARAMETERS = {"factors": 8.0, "alpha": 2.5}


def model_version(**fields: Any) -> dict[str, Any]:
    """A ModelVersion as MLflow 3 writes it in JSON."""
    return {
        "name": "recsys-mf", "version": "7", "creation_timestamp": 1796291070160,
        "last_updated_timestamp": 1796291070160, "current_stage": "None", "description": "",
        "source": SOURCE, "run_id": "44fe44ac", "status": "READY", "run_link": "",
        "tags": [{"key": k, "value": v}
                 for k, v in version_tags(METRICS, LINEAGE, HYPERPARAMETERS).items()],
        "aliases": ["champion"], **fields,
    }


@dataclass
class FakeMlflow(BaseAdapter):
    """Answers each URL path from `answers` (status, body); 404 for any other path. Records
    every request with the timeout it was sent with; `refuse` fails them as a closed port."""

    answers: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    refuse: bool = False
    sent: list[tuple[requests.PreparedRequest, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    def answer(self, path: str, status: int, body: Mapping[str, Any] | bytes) -> None:
        self.answers[path] = (status, body if isinstance(body, bytes)
                              else json.dumps(body).encode())

    def send(self, request: requests.PreparedRequest, **options: Any) -> requests.Response:
        self.sent.append((request, options["timeout"]))
        if self.refuse:
            raise requests.ConnectionError("[Errno 111] Connection refused")
        status, body = self.answers.get(urlsplit(request.url or "").path,
                                        (404, b"<h1>Not Found</h1>"))
        response = requests.Response()
        response.status_code = status
        response.reason = {200: "OK", 400: "Bad Request", 404: "Not Found",
                           500: "Internal Server Error", 503: "Service Unavailable"}[status]
        response.raw = io.BytesIO(body)
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass


@pytest.fixture
def mlflow() -> FakeMlflow:
    return FakeMlflow()


@pytest.fixture
def reader(mlflow: FakeMlflow) -> ChampionReader:
    session = requests.Session()
    session.mount("http://", mlflow)
    return ChampionReader(tracking_uri=f"{TRACKING}/", model_name="recsys-mf", timeout_s=3,
                          session=session)


ALIAS = "/api/2.0/mlflow/registered-models/alias"


def test_champion_asks_for_the_alias_and_reads_the_version(
        mlflow: FakeMlflow, reader: ChampionReader) -> None:
    mlflow.answer(ALIAS, 200, {"model_version": model_version()})
    assert reader.champion() == VersionInfo(
        version="7", model_name="recsys-mf", aliases=("champion",), run_id="44fe44ac",
        source=SOURCE, metrics=METRICS, lineage=LINEAGE, created_at_ms=1796291070160,
        hyperparameters=HYPERPARAMETERS)
    ((request, timeout),) = mlflow.sent
    url = urlsplit(request.url or "")
    assert (request.method, f"{url.scheme}://{url.netloc}{url.path}") == ("GET",
                                                                           f"{TRACKING}{ALIAS}")
    assert parse_qs(url.query) == {"name": ["recsys-mf"], "alias": ["champion"]}
    assert timeout == 3


def test_a_version_mlflow_wrote_sparsely_is_read_with_defaults(
        mlflow: FakeMlflow, reader: ChampionReader) -> None:
    # proto3 JSON leaves empty fields out: a version registered by hand, without our tags
    mlflow.answer(ALIAS, 200, {"model_version": {"name": "recsys-mf", "version": "2",
                                                 "source": SOURCE}})
    info = reader.champion()
    assert info is not None
    assert (info.version, info.run_id, info.aliases, info.created_at_ms) == ("2", "", (), 0)
    assert (info.metrics, info.lineage) == ({}, None)


@pytest.mark.parametrize(("status", "code", "message"), [
    (404, "RESOURCE_DOES_NOT_EXIST", "Registered Model with name=recsys-mf not found"),
    (400, "INVALID_PARAMETER_VALUE", "Registered model alias champion not found."),
])
def test_no_model_or_no_alias_is_no_champion(mlflow: FakeMlflow, reader: ChampionReader,
                                             status: int, code: str, message: str) -> None:
    mlflow.answer(ALIAS, status, {"error_code": code, "message": message})
    assert reader.champion() is None


@pytest.mark.parametrize(("status", "body", "detail"), [
    (500, {"error_code": "INTERNAL_ERROR", "message": "database is locked"},
     "HTTP 500 INTERNAL_ERROR: database is locked"),
    (503, b"<html>upstream down</html>", "HTTP 503 Service Unavailable"),
    (404, b"<h1>Not Found</h1>", "HTTP 404 Not Found"),  # a proxy, not MLflow's API
])
def test_other_answers_are_unavailable_naming_the_server(
        mlflow: FakeMlflow, reader: ChampionReader, status: int, body: Any,
        detail: str) -> None:
    mlflow.answer(ALIAS, status, body)
    with pytest.raises(Unavailable) as failed:
        reader.champion()
    assert failed.value.message == (
        f"MLflow at {TRACKING} failed to look up the champion: {detail}")


def test_an_unreachable_server_is_unavailable(mlflow: FakeMlflow,
                                              reader: ChampionReader) -> None:
    mlflow.refuse = True
    with pytest.raises(Unavailable, match=f"MLflow at {TRACKING} failed to look up the "
                                          "champion: .*Connection refused"):
        reader.champion()


def version(source: str = SOURCE, sha256: str = "") -> VersionInfo:
    return VersionInfo(version="7", model_name="recsys-mf", aliases=("champion",),
                       run_id="44fe44ac", source=source, metrics={}, lineage=None,
                       created_at_ms=0, artifact_sha256=sha256)


def test_the_artifact_comes_through_the_servers_artifact_proxy(reader: ChampionReader) -> None:
    assert reader.artifact_url(version()) == (
        f"{TRACKING}/api/2.0/mlflow-artifacts/artifacts/1/44fe44ac/artifacts/model/model.npz")
    assert reader.artifact_url(version("mlflow-artifacts:/exp one/r#1/model")) == (
        f"{TRACKING}/api/2.0/mlflow-artifacts/artifacts/exp%20one/r%231/model/model.npz")


@pytest.mark.parametrize("source", [
    "s3://bucket/1/44fe44ac/artifacts/model",
    "runs:/44fe44ac/model",
    "file:///mlflow/artifacts/1/44fe44ac/artifacts/model",
    "mlflow-artifacts://other-host:5000/1/44fe44ac/artifacts/model",
    "",
])
def test_other_sources_are_refused_with_the_reason(reader: ChampionReader,
                                                   source: str) -> None:
    with pytest.raises(FailedPrecondition,
                       match=r"model recsys-mf version 7 is stored at .*: the recommender "
                             r"downloads only through MLflow's artifact proxy"):
        reader.artifact_url(version(source))


@pytest.fixture
def artifact() -> ModelArtifact:
    rng = np.random.default_rng(0)
    return ModelArtifact.from_factors(rng.normal(size=(3, 2)), rng.normal(size=(4, 2)),
                                      np.array([[0, 1], [1, 2], [2, 3]]))


def test_load_streams_the_file_into_the_directory_given(
        mlflow: FakeMlflow, reader: ChampionReader, artifact: ModelArtifact,
        tmp_path: Path) -> None:
    artifact.save(tmp_path / "published.npz")
    url = urlsplit(reader.artifact_url(version()))
    mlflow.answer(url.path, 200, (tmp_path / "published.npz").read_bytes())
    dst = tmp_path / "download"
    dst.mkdir()
    loaded = reader.load(version(sha256=sha256_of(tmp_path / "published.npz")), dst)
    assert np.array_equal(loaded.item_factors, artifact.item_factors)
    assert loaded.user_ids.tolist() == ["u0", "u1", "u2"]
    assert [p.name for p in dst.iterdir()] == ["model.npz"]
    ((request, timeout),) = mlflow.sent
    assert (request.method, timeout) == ("GET", 3)


def test_a_failed_download_is_unavailable(mlflow: FakeMlflow, reader: ChampionReader,
                                          tmp_path: Path) -> None:
    path = urlsplit(reader.artifact_url(version())).path
    mlflow.answer(path, 404, {"error_code": "RESOURCE_DOES_NOT_EXIST",
                              "message": "No such artifact: '1/44fe44ac/model/model.npz'"})
    with pytest.raises(Unavailable, match="failed to download version 7: HTTP 404 "
                                          "RESOURCE_DOES_NOT_EXIST: No such artifact"):
        reader.load(version(), tmp_path)
    mlflow.refuse = True
    with pytest.raises(Unavailable, match=r"failed to download version 7: .*refused"):
        reader.load(version(), tmp_path)


def test_a_file_that_is_no_model_is_refused(mlflow: FakeMlflow, reader: ChampionReader,
                                            tmp_path: Path) -> None:
    mlflow.answer(urlsplit(reader.artifact_url(version())).path, 200, b"<html>login</html>")
    with pytest.raises(ValueError):
        reader.load(version(), tmp_path)


def _published(mlflow: FakeMlflow, reader: ChampionReader, data: bytes) -> None:
    mlflow.answer(urlsplit(reader.artifact_url(version())).path, 200, data)


@pytest.mark.parametrize("registered", ["", "0" * 64])
def test_a_file_without_the_registered_hash_is_refused(
        mlflow: FakeMlflow, reader: ChampionReader, artifact: ModelArtifact, tmp_path: Path,
        registered: str) -> None:
    """A valid model, but not the one the trainer registered (or nothing to check it by)."""
    artifact.save(tmp_path / "replaced.npz")
    _published(mlflow, reader, (tmp_path / "replaced.npz").read_bytes())
    with pytest.raises(ArtifactRefused) as refused:
        reader.load(version(sha256=registered), tmp_path)
    assert refused.value.reason == "checksum"


def test_a_registered_file_that_is_not_a_valid_model_is_refused(
        mlflow: FakeMlflow, reader: ChampionReader, artifact: ModelArtifact,
        tmp_path: Path) -> None:
    """The hash matches (the trainer registered it so), the contents do not make a model."""
    broken = tmp_path / "broken.npz"
    artifact.save(broken)
    with np.load(broken) as npz:
        fields = dict(npz)
    fields["seen_indices"] = fields["seen_indices"] + 100  # past the last item
    np.savez(broken, **fields)
    _published(mlflow, reader, broken.read_bytes())
    with pytest.raises(ArtifactRefused, match="seen_indices: out of range") as refused:
        reader.load(version(sha256=sha256_of(broken)), tmp_path)
    assert refused.value.reason == "invalid"


@pytest.mark.parametrize("retries", [0, 2])
def test_the_session_retries_failed_gets_a_bounded_number_of_times(retries: int) -> None:
    session = mlflow_session(retries=retries)
    for url in ("http://mlflow:5000", "https://mlflow.example"):
        adapter = session.get_adapter(url)
        assert isinstance(adapter, HTTPAdapter)
        assert adapter.max_retries.total == retries
        assert adapter.max_retries.allowed_methods == frozenset({"GET"})
        assert {429, 500, 502, 503, 504} <= set(adapter.max_retries.status_forcelist or ())
