"""TrainerService through real servers: ml-100k ingested, trained through the RPC, read back
from MLflow; the quality gate, rollback, one job at a time, cancel, errors and metrics."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import urllib.request
from contextlib import closing
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kafka import KafkaProducer
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from recsys.events.v1 import interaction_pb2
from recsys.trainer.v1 import trainer_pb2
from scripts.localstack.components import MlflowServer, TansuBroker, free_port
from services.cli import __main__ as cli
from services.core.kafka import producer_config
from services.model.artifact import ModelArtifact
from services.trainer.servicer import SERVICE_NAME
from tests.integration.trainer.support import (
    ML100K_EVENTS,
    Ingested,
    Trainer,
    start_trainer,
    stop_trainer,
    store_rows,
    trainer_settings,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

SUCCEEDED = trainer_pb2.JOB_STATE_SUCCEEDED
# A model that cannot be as good as the default one.
WORSE = trainer_pb2.Hyperparameters(factors=1, epochs=1)


async def run_job(trainer: Trainer, hyperparameters: trainer_pb2.Hyperparameters | None = None
                  ) -> list[trainer_pb2.TrainingJob]:
    """Start a job and follow WatchTrainingJob to its end; every state seen."""
    started = await trainer.stub.StartTrainingJob(
        trainer_pb2.StartTrainingJobRequest(hyperparameters=hyperparameters), timeout=10)
    stream = trainer.stub.WatchTrainingJob(
        trainer_pb2.WatchTrainingJobRequest(job_id=started.job.job_id), timeout=300)
    return [update.job async for update in stream]


def mlflow(server: MlflowServer) -> MlflowClient:
    return MlflowClient(tracking_uri=server.tracking_uri, registry_uri=server.tracking_uri)


def scrape(trainer: Trainer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    url = f"http://127.0.0.1:{trainer.running.metrics_port}/metrics"
    body = urllib.request.urlopen(url, timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def copy_store(source: Path, target: Path) -> None:
    """A consistent copy of a live store (SQLite's online backup)."""
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


async def champion_of(client: MlflowClient, name: str) -> str:
    version = await asyncio.to_thread(client.get_model_version_by_alias, name, "champion")
    return str(version.version)


async def test_train_through_the_rpc_and_read_the_run_back_from_mlflow(
    trainer: Trainer, mlflow_server: MlflowServer, ml100k_topic: Ingested, tmp_path: Path
) -> None:
    states = await run_job(trainer)
    job = states[-1]
    assert job.state == SUCCEEDED, job.error
    epochs = [s.epoch for s in states]
    assert epochs == sorted(epochs) and len(set(epochs)) > 2  # progress arrived live
    assert job.epoch == job.epochs > 0
    assert job.promoted, job.promotion_reason
    assert job.metrics.ndcg_at_10 >= 0.49 and job.metrics.precision_at_10 >= 0.43
    assert job.lineage.row_count == ML100K_EVENTS
    assert dict(job.lineage.partition_offsets) == ml100k_topic.highwater

    client = mlflow(mlflow_server)
    run = await asyncio.to_thread(client.get_run, job.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["ndcg_at_10"] >= 0.49
    assert run.data.metrics["precision_at_10"] >= 0.43
    assert run.data.metrics["ndcg_at_10"] == pytest.approx(job.metrics.ndcg_at_10)
    assert run.data.params["factors"] == str(job.hyperparameters.factors)
    assert run.data.params["dataset.row_count"] == str(ML100K_EVENTS)
    assert run.data.params["dataset.content_hash"] == job.lineage.content_hash
    losses = await asyncio.to_thread(client.get_metric_history, run.info.run_id, "loss")
    assert sorted(m.step for m in losses) == list(range(1, job.epochs + 1))

    local = Path(await asyncio.to_thread(client.download_artifacts, run.info.run_id, "",
                                         str(tmp_path)))
    lineage = json.loads((local / "lineage.json").read_text())
    assert lineage["row_count"] == ML100K_EVENTS
    assert lineage["content_hash"] == job.lineage.content_hash
    assert {int(p): o for p, o in lineage["partition_offsets"].items()} == ml100k_topic.highwater
    artifact = ModelArtifact.load(local / "model" / "model.npz")
    assert (artifact.n_users, artifact.n_items) == (943, 1682)

    name = trainer.settings.model_name
    assert await champion_of(client, name) == job.model_version
    version = await asyncio.to_thread(client.get_model_version, name, job.model_version)
    assert version.run_id == job.mlflow_run_id
    assert float(version.tags["metrics.ndcg_at_10"]) == pytest.approx(job.metrics.ndcg_at_10)
    assert version.tags["lineage.content_hash"] == job.lineage.content_hash
    assert version.source.endswith("/model")

    fetched = await trainer.stub.GetTrainingJob(
        trainer_pb2.GetTrainingJobRequest(job_id=job.job_id), timeout=10)
    assert fetched.job == job


async def test_a_worse_model_is_registered_but_not_promoted(
    trainer: Trainer, mlflow_server: MlflowServer
) -> None:
    client = mlflow(mlflow_server)
    name = trainer.settings.model_name
    champion = await champion_of(client, name)
    job = (await run_job(trainer, WORSE))[-1]
    assert job.state == SUCCEEDED, job.error
    assert job.model_version and not job.promoted
    assert "is below champion" in job.promotion_reason
    assert await champion_of(client, name) == champion
    versions = (await trainer.stub.ListModelVersions(
        trainer_pb2.ListModelVersionsRequest(), timeout=10)).versions
    assert versions[0].version == job.model_version and not versions[0].aliases
    assert [v.version for v in versions if "champion" in v.aliases] == [champion]
    assert versions[0].metrics.ndcg_at_10 == pytest.approx(job.metrics.ndcg_at_10)
    assert versions[0].lineage.row_count == ML100K_EVENTS


async def test_promote_moves_the_champion_alias_back_and_forth(
    trainer: Trainer, mlflow_server: MlflowServer
) -> None:
    client = mlflow(mlflow_server)
    name = trainer.settings.model_name
    versions = (await trainer.stub.ListModelVersions(
        trainer_pb2.ListModelVersionsRequest(page_size=2), timeout=10)).versions
    newest, champion = versions[0].version, await champion_of(client, name)
    assert newest != champion
    promoted = await trainer.stub.PromoteModelVersion(
        trainer_pb2.PromoteModelVersionRequest(version=newest), timeout=10)
    assert promoted.model_version.version == newest
    assert "champion" in promoted.model_version.aliases
    assert promoted.previous_version == champion
    assert await champion_of(client, name) == newest
    back = await trainer.stub.PromoteModelVersion(
        trainer_pb2.PromoteModelVersionRequest(version=champion), timeout=10)
    assert back.previous_version == newest
    assert await champion_of(client, name) == champion

    for version, code in (("999", grpc.StatusCode.NOT_FOUND),
                          ("v1", grpc.StatusCode.INVALID_ARGUMENT)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await trainer.stub.PromoteModelVersion(
                trainer_pb2.PromoteModelVersionRequest(version=version), timeout=10)
        assert caught.value.code() == code


async def test_one_job_at_a_time_and_cancel(trainer: Trainer) -> None:
    long = trainer_pb2.Hyperparameters(epochs=200)
    job = (await trainer.stub.StartTrainingJob(
        trainer_pb2.StartTrainingJobRequest(hyperparameters=long), timeout=10)).job
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await trainer.stub.StartTrainingJob(trainer_pb2.StartTrainingJobRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert job.job_id in caught.value.details()

    stream = trainer.stub.WatchTrainingJob(
        trainer_pb2.WatchTrainingJobRequest(job_id=job.job_id), timeout=120)
    cancelled = False
    async for update in stream:
        last = update.job
        if last.epoch >= 1 and not cancelled:
            await trainer.stub.CancelTrainingJob(
                trainer_pb2.CancelTrainingJobRequest(job_id=job.job_id), timeout=10)
            cancelled = True
    assert last.state == trainer_pb2.JOB_STATE_CANCELLED
    assert 1 <= last.epoch < 200
    assert not last.model_version

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await trainer.stub.CancelTrainingJob(
            trainer_pb2.CancelTrainingJobRequest(job_id=job.job_id), timeout=10)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    listed = (await trainer.stub.ListTrainingJobs(
        trainer_pb2.ListTrainingJobsRequest(page_size=1), timeout=10)).jobs
    assert [j.job_id for j in listed] == [job.job_id]


@pytest.mark.parametrize(("request_", "code", "message"), [
    (trainer_pb2.StartTrainingJobRequest(
        hyperparameters=trainer_pb2.Hyperparameters(factors=0)),
     grpc.StatusCode.INVALID_ARGUMENT, "hyperparameters.factors"),
    (trainer_pb2.StartTrainingJobRequest(
        hyperparameters=trainer_pb2.Hyperparameters(alpha=-1)),
     grpc.StatusCode.INVALID_ARGUMENT, "hyperparameters.alpha"),
    (trainer_pb2.GetTrainingJobRequest(job_id="nope"), grpc.StatusCode.NOT_FOUND, "nope"),
    (trainer_pb2.GetTrainingJobRequest(), grpc.StatusCode.INVALID_ARGUMENT, "job_id"),
    (trainer_pb2.ListTrainingJobsRequest(page_size=101), grpc.StatusCode.INVALID_ARGUMENT,
     "page_size"),
])
async def test_bad_requests_get_their_status(
    trainer: Trainer, request_: object, code: grpc.StatusCode, message: str
) -> None:
    method = {
        trainer_pb2.StartTrainingJobRequest: trainer.stub.StartTrainingJob,
        trainer_pb2.GetTrainingJobRequest: trainer.stub.GetTrainingJob,
        trainer_pb2.ListTrainingJobsRequest: trainer.stub.ListTrainingJobs,
    }[type(request_)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await method(request_, timeout=10)
    assert caught.value.code() == code
    assert message in caught.value.details()


async def test_health_and_metrics(trainer: Trainer, ml100k_topic: Ingested) -> None:
    health = health_pb2_grpc.HealthStub(trainer.channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    metrics = scrape(trainer)
    assert metrics[("recsys_trainer_dataset_rows", ())] == ML100K_EVENTS
    assert metrics[("recsys_trainer_events_consumed_total", (("result", "stored"),))] == (
        ML100K_EVENTS)
    assert metrics[("recsys_trainer_consumer_lag", ())] == 0
    assert metrics[("recsys_trainer_jobs_total", (("outcome", "succeeded"),))] >= 2
    assert metrics[("recsys_trainer_jobs_total", (("outcome", "cancelled"),))] >= 1
    assert metrics[("recsys_trainer_job_duration_seconds_count", ())] >= 3
    assert metrics[("recsys_trainer_last_metric", (("metric", "ndcg_at_10"),))] > 0


async def test_an_empty_dataset_is_a_failed_precondition(
    kafka: TansuBroker, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    empty = await start_trainer(trainer_settings(kafka, mlflow_server, "trainer-empty-topic",
                                                 tmp_path))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await empty.stub.StartTrainingJob(trainer_pb2.StartTrainingJobRequest(), timeout=10)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "empty" in caught.value.details()
    finally:
        await stop_trainer(empty)


async def test_mlflow_unreachable_fails_the_job_and_promotes_nothing(
    trainer: Trainer, kafka: TansuBroker, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    assert trainer.app.store is not None
    await asyncio.to_thread(copy_store, trainer.app.store.path, tmp_path / "trainer.sqlite3")
    dead = f"http://127.0.0.1:{free_port()}"
    cut_off = await start_trainer(trainer_settings(
        kafka, mlflow_server, "trainer-no-new-events", tmp_path, mlflow_tracking_uri=dead))
    try:
        job = (await run_job(cut_off, WORSE))[-1]
        assert job.state == trainer_pb2.JOB_STATE_FAILED
        assert job.error.startswith(f"MLflow at {dead} failed")
        assert not job.model_version and not job.promoted
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            # Long deadline: the client retries UNAVAILABLE, and each try waits out the
            # trainer's own MLflow retries.
            await cut_off.stub.ListModelVersions(trainer_pb2.ListModelVersionsRequest(),
                                                 timeout=60)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await stop_trainer(cut_off)
    with pytest.raises(MlflowException):
        await asyncio.to_thread(mlflow(mlflow_server).get_registered_model,
                                cut_off.settings.model_name)


async def test_the_cli_trains_with_a_progress_bar_lists_and_promotes(
    trainer: Trainer, capsys: pytest.CaptureFixture[str]
) -> None:
    target = ["--target", f"127.0.0.1:{trainer.running.port}"]
    code = await asyncio.to_thread(cli.main, ["train", *target, "--factors", "8",
                                              "--epochs", "3"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "3/3" in err and "epoch" in err  # the progress bar, fed by WatchTrainingJob
    assert ": succeeded" in out and "held-out: NDCG@10" in out

    assert await asyncio.to_thread(cli.main, ["models", "list", *target]) == 0
    out, _ = capsys.readouterr()
    assert "champion" in out and out.count("\n") >= 2  # the heading and a version at least

    assert await asyncio.to_thread(cli.main, ["models", "promote", "999", *target]) == 1
    _, err = capsys.readouterr()
    assert err.startswith("recsys models: error: NOT_FOUND")


async def test_the_consumer_waits_for_kafka_and_stores_duplicates_once(
    kafka: TansuBroker, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    port = free_port()
    late = await start_trainer(trainer_settings(
        kafka, mlflow_server, "trainer-late-topic", tmp_path / "store",
        kafka_bootstrap=f"127.0.0.1:{port}"))
    try:
        health = health_pb2_grpc.HealthStub(late.channel)
        answer = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME),
                                    timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING  # Kafka is not needed
        broker = TansuBroker(tmp_path / "tansu", port=port)
        await asyncio.to_thread(lambda: broker.start().wait_ready(30))
        try:
            await asyncio.to_thread(produce, broker.bootstrap, "trainer-late-topic",
                                    [*range(30), 3, 7])  # two events sent twice
            await asyncio.to_thread(wait_for, lambda: store_rows(tmp_path / "store") == 30,
                                    timeout=90, what="consuming after Kafka came up")
            await asyncio.sleep(1.0)
            metrics = scrape(late)
            assert metrics[("recsys_trainer_events_consumed_total",
                            (("result", "duplicate"),))] == 2
            assert store_rows(tmp_path / "store") == 30
        finally:
            await asyncio.to_thread(broker.stop)
    finally:
        await stop_trainer(late)


def produce(bootstrap: str, topic: str, numbers: list[int]) -> None:
    """Send one view event per number (same number, same event_id), acknowledged."""
    producer = KafkaProducer(**producer_config(bootstrap, client_id="trainer-test"))
    try:
        for n in numbers:
            event = interaction_pb2.Interaction(
                event_id=f"late-{n}", user_id=f"u{n % 4}", item_id=f"i{n}",
                type=interaction_pb2.INTERACTION_TYPE_VIEW)
            event.occurred_at.FromSeconds(1_700_000_000 + n)
            producer.send(topic, key=event.user_id.encode(), value=event.SerializeToString())
        producer.flush(timeout=30)
    finally:
        producer.close()
