"""TrainerService through real servers: synthetic events ingested, trained through the RPC, read
back from MLflow; the quality gate, rollback, one job at a time, cancel, errors and metrics.

Each test has a trainer of its own (its registered model, experiment and metrics): what it
asserts about versions, the champion and job counts is what it did itself.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
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
from services.core.kafka import producer_config
from services.model.artifact import ModelArtifact
from services.trainer.servicer import SERVICE_NAME
from tests.support.polling import eventually_async
from tests.support.trainer_server import (
    NO_SEARCH,
    SEARCH_TRIALS,
    Ingested,
    Trainer,
    consumed,
    copy_store,
    run_job,
    start_trainer,
    stop_trainer,
    store_offsets,
    store_rows,
    trainer_settings,
)

pytestmark = pytest.mark.integration

SUCCEEDED = trainer_pb2.JOB_STATE_SUCCEEDED
# A model that cannot be as good as the default one.
WORSE = trainer_pb2.Hyperparameters(factors=1, epochs=1)


async def champion_and_worse(trainer: Trainer) -> tuple[trainer_pb2.TrainingJob,
                                                        trainer_pb2.TrainingJob]:
    """A first job with the defaults (the champion), then a worse one (registered only)."""
    champion = (await run_job(trainer))[-1]
    assert champion.state == SUCCEEDED and champion.promoted, champion.promotion_reason
    worse = (await run_job(trainer, WORSE))[-1]
    assert worse.state == SUCCEEDED, worse.error
    return champion, worse


def mlflow(server: MlflowServer) -> MlflowClient:
    return MlflowClient(tracking_uri=server.tracking_uri, registry_uri=server.tracking_uri)


def scrape(trainer: Trainer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    url = f"http://127.0.0.1:{trainer.running.metrics_port}/metrics"
    body = urllib.request.urlopen(url, timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


async def champion_of(client: MlflowClient, name: str) -> str:
    version = await asyncio.to_thread(client.get_model_version_by_alias, name, "champion")
    return str(version.version)


async def test_train_through_the_rpc_and_read_the_run_back_from_mlflow(
    trainer: Trainer, mlflow_server: MlflowServer, synthetic_topic: Ingested, tmp_path: Path
) -> None:
    states = await run_job(trainer)
    job = states[-1]
    assert job.state == SUCCEEDED, job.error
    epochs = [s.epoch for s in states]
    assert epochs == sorted(epochs) and len(set(epochs)) > 2  # progress arrived live
    assert job.epoch == job.epochs > 0
    assert job.promoted, job.promotion_reason
    assert job.metrics.ndcg_at_10 >= trainer.settings.min_ndcg  # the quality gate's floor
    assert job.metrics.precision_at_10 > 0
    assert job.lineage.row_count == synthetic_topic.events
    assert dict(job.lineage.partition_offsets) == synthetic_topic.highwater

    client = mlflow(mlflow_server)
    run = await asyncio.to_thread(client.get_run, job.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["ndcg_at_10"] >= trainer.settings.min_ndcg
    assert run.data.metrics["precision_at_10"] > 0
    assert run.data.metrics["ndcg_at_10"] == pytest.approx(job.metrics.ndcg_at_10)
    assert run.data.params["factors"] == str(job.hyperparameters.factors)
    assert run.data.params["dataset.row_count"] == str(synthetic_topic.events)
    assert run.data.params["dataset.content_hash"] == job.lineage.content_hash
    losses = await asyncio.to_thread(client.get_metric_history, run.info.run_id, "loss")
    assert sorted(m.step for m in losses) == list(range(1, job.epochs + 1))

    local = Path(await asyncio.to_thread(client.download_artifacts, run.info.run_id, "",
                                         str(tmp_path)))
    lineage = json.loads((local / "lineage.json").read_text())
    assert lineage["row_count"] == synthetic_topic.events
    assert lineage["content_hash"] == job.lineage.content_hash
    assert {int(p): o for p, o in lineage["partition_offsets"].items()} == (
        synthetic_topic.highwater)
    artifact = ModelArtifact.load(local / "model" / "model.npz")
    assert (artifact.n_users, artifact.n_items) == (job.lineage.user_count,
                                                    job.lineage.item_count)

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


async def test_the_search_runs_live_and_each_trial_is_a_nested_mlflow_run(
    trainer: Trainer, mlflow_server: MlflowServer
) -> None:
    states = await run_job(trainer)
    job = states[-1]
    assert job.state == SUCCEEDED, job.error
    searching = [s.search.trials_done for s in states
                 if s.phase == trainer_pb2.JOB_PHASE_SEARCHING]
    assert searching == sorted(searching) and searching[-1] == SEARCH_TRIALS  # live too
    assert job.search.trials_done == job.search.trials_budget == SEARCH_TRIALS
    assert job.search.best_validation_ndcg >= job.search.first_validation_ndcg > 0
    assert job.metrics.ndcg_at_10 > job.metrics.popularity_ndcg_at_10 > 0

    client = mlflow(mlflow_server)
    run = await asyncio.to_thread(client.get_run, job.mlflow_run_id)
    assert run.data.metrics["search_trials"] == SEARCH_TRIALS
    assert run.data.metrics["search_best_validation_ndcg_at_10"] == pytest.approx(
        job.search.best_validation_ndcg)
    trials = await asyncio.to_thread(
        client.search_runs, [run.info.experiment_id],
        f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert sorted(int(t.data.tags["recsys.trial"]) for t in trials) == list(
        range(SEARCH_TRIALS))
    first = next(t for t in trials if t.data.tags["recsys.trial"] == "0")
    assert first.data.metrics["validation_ndcg_at_10"] == pytest.approx(
        job.search.first_validation_ndcg)
    assert {"factors", "alpha", "regularization", "reg_exponent", "epochs"} <= set(
        first.data.params)
    version = await asyncio.to_thread(client.get_model_version, trainer.settings.model_name,
                                      job.model_version)
    assert float(version.tags["hyperparameters.alpha"]) == pytest.approx(
        job.hyperparameters.alpha)


async def test_a_worse_model_is_registered_but_not_promoted(
    trainer: Trainer, mlflow_server: MlflowServer, synthetic_topic: Ingested
) -> None:
    client = mlflow(mlflow_server)
    name = trainer.settings.model_name
    first, job = await champion_and_worse(trainer)
    champion = await champion_of(client, name)
    assert champion == first.model_version
    assert job.model_version and not job.promoted
    assert "is below champion" in job.promotion_reason
    assert await champion_of(client, name) == champion
    versions = (await trainer.stub.ListModelVersions(
        trainer_pb2.ListModelVersionsRequest(), timeout=10)).versions
    assert versions[0].version == job.model_version and not versions[0].aliases
    assert [v.version for v in versions if "champion" in v.aliases] == [champion]
    assert versions[0].metrics.ndcg_at_10 == pytest.approx(job.metrics.ndcg_at_10)
    assert versions[0].lineage.row_count == synthetic_topic.events


async def test_promote_moves_the_champion_alias_back_and_forth(
    trainer: Trainer, mlflow_server: MlflowServer
) -> None:
    client = mlflow(mlflow_server)
    name = trainer.settings.model_name
    await champion_and_worse(trainer)
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


async def cancel_at_the_first_epoch(trainer: Trainer, job_id: str) -> trainer_pb2.TrainingJob:
    """Follow the job, cancel it once an epoch is done; the job as it ended."""
    stream = trainer.stub.WatchTrainingJob(
        trainer_pb2.WatchTrainingJobRequest(job_id=job_id), timeout=120)
    cancelled = False
    async for update in stream:
        last = update.job
        if last.epoch >= 1 and not cancelled:
            await trainer.stub.CancelTrainingJob(
                trainer_pb2.CancelTrainingJobRequest(job_id=job_id), timeout=10)
            cancelled = True
    return last


async def test_one_job_at_a_time_and_cancel(trainer: Trainer) -> None:
    long = trainer_pb2.Hyperparameters(epochs=200)
    job = (await trainer.stub.StartTrainingJob(
        trainer_pb2.StartTrainingJobRequest(hyperparameters=long, search=NO_SEARCH),
        timeout=10)).job
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await trainer.stub.StartTrainingJob(trainer_pb2.StartTrainingJobRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert job.job_id in caught.value.details()

    last = await cancel_at_the_first_epoch(trainer, job.job_id)
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


async def test_health_and_metrics(kafka: TansuBroker, mlflow_server: MlflowServer,
                                  synthetic_topic: Ingested, tmp_path: Path) -> None:
    """A trainer that consumes the topic itself (an empty store, a group of its own), then
    runs two jobs to the end and cancels a third."""
    fresh = await start_trainer(trainer_settings(kafka, mlflow_server, synthetic_topic.topic,
                                                 tmp_path))
    try:
        health = health_pb2_grpc.HealthStub(fresh.channel)
        answer = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME),
                                    timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        await eventually_async(lambda: consumed(tmp_path, synthetic_topic),
                               timeout=180, what="the synthetic topic consumed")
        for hyperparameters in (WORSE, WORSE):
            assert (await run_job(fresh, hyperparameters))[-1].state == SUCCEEDED
        long = (await fresh.stub.StartTrainingJob(trainer_pb2.StartTrainingJobRequest(
            hyperparameters=trainer_pb2.Hyperparameters(epochs=200), search=NO_SEARCH),
            timeout=10)).job
        cancelled = await cancel_at_the_first_epoch(fresh, long.job_id)
        assert cancelled.state == trainer_pb2.JOB_STATE_CANCELLED

        metrics = scrape(fresh)
        assert metrics[("recsys_trainer_dataset_rows", ())] == synthetic_topic.events
        assert metrics[("recsys_trainer_events_consumed_total", (("result", "stored"),))] == (
            synthetic_topic.events)
        assert metrics[("recsys_trainer_consumer_lag", ())] == 0
        assert metrics[("recsys_trainer_jobs_total", (("outcome", "succeeded"),))] == 2
        assert metrics[("recsys_trainer_jobs_total", (("outcome", "cancelled"),))] == 1
        assert metrics[("recsys_trainer_job_duration_seconds_count", ())] == 3
        assert metrics[("recsys_trainer_last_metric", (("metric", "ndcg_at_10"),))] > 0
    finally:
        await stop_trainer(fresh)


async def test_an_empty_dataset_is_a_failed_precondition(
    kafka: TansuBroker, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    empty = await start_trainer(trainer_settings(
        kafka, mlflow_server, f"trainer-empty-{uuid.uuid4().hex[:8]}", tmp_path))
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
        kafka, mlflow_server, f"trainer-no-new-events-{uuid.uuid4().hex[:8]}", tmp_path,
        mlflow_tracking_uri=dead))
    try:
        job = (await run_job(cut_off, WORSE))[-1]
        assert job.state == trainer_pb2.JOB_STATE_FAILED
        # Clients learn what failed, not where it runs (the log has the address).
        assert job.error.startswith("the model registry failed"), job.error
        assert dead.removeprefix("http://") not in job.error
        assert not job.model_version and not job.promoted
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            # Long deadline: the client retries UNAVAILABLE, and each try waits out the
            # trainer's own MLflow retries.
            await cut_off.stub.ListModelVersions(trainer_pb2.ListModelVersionsRequest(),
                                                 timeout=60)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert dead.removeprefix("http://") not in (caught.value.details() or "")
    finally:
        await stop_trainer(cut_off)
    with pytest.raises(MlflowException):
        await asyncio.to_thread(mlflow(mlflow_server).get_registered_model,
                                cut_off.settings.model_name)


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
            end = await asyncio.to_thread(produce, broker.bootstrap, "trainer-late-topic",
                                          [*range(30), 3, 7])  # two events sent twice
            # Every record read, the repeats included: nothing more can be stored after this.
            await eventually_async(
                lambda: store_offsets(tmp_path / "store", "trainer-late-topic") == end,
                                   timeout=90, what="consuming after Kafka came up")
            assert store_rows(tmp_path / "store") == 30
            duplicates = ("recsys_trainer_events_consumed_total", (("result", "duplicate"),))
            await eventually_async(lambda: scrape(late).get(duplicates) == 2, timeout=10,
                                   what="the two repeats counted as duplicates")
        finally:
            await asyncio.to_thread(broker.stop)
    finally:
        await stop_trainer(late)


def produce(bootstrap: str, topic: str, numbers: list[int]) -> dict[int, int]:
    """Send one view event per number (same number, same event_id), acknowledged; per
    partition, the offset after the last record."""
    producer = KafkaProducer(**producer_config(bootstrap, client_id="trainer-test"))
    try:
        sent = []
        for n in numbers:
            event = interaction_pb2.Interaction(
                event_id=f"late-{n}", user_id=f"u{n % 4}", item_id=f"i{n}",
                type=interaction_pb2.INTERACTION_TYPE_VIEW)
            event.occurred_at.FromSeconds(1_700_000_000 + n)
            sent.append(producer.send(topic, key=event.user_id.encode(),
                                      value=event.SerializeToString()))
        producer.flush(timeout=30)
        end: dict[int, int] = {}
        for future in sent:
            acked = future.get(timeout=10)
            end[acked.partition] = max(end.get(acked.partition, 0), acked.offset + 1)
        return end
    finally:
        producer.close()
