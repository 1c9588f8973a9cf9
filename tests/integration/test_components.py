"""Each real component through its real client, the Kafka durability case, and the components
under supervisord as the local stack runs them."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

from scripts.localstack import procfile, supervisor
from scripts.localstack.components import (
    HOST,
    Component,
    ComponentError,
    MlflowServer,
    Prometheus,
    RedisServer,
    SeaweedPorts,
    SeaweedS3,
    TansuBroker,
    free_ports,
    group_pids,
    http_ok,
    minimal_prometheus_config,
    tcp_open,
)
from services.core.kafka import producer_config
from tests.support.polling import eventually
from tests.support.topics import at_end, reader_options

pytestmark = pytest.mark.integration


def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    """Send with acks=all and idempotence; fail unless every send was acknowledged."""
    producer = KafkaProducer(**producer_config(bootstrap, client_id="test"))
    try:
        futures = [producer.send(topic, key=v, value=v) for v in values]
        producer.flush(timeout=30)
        for future in futures:
            future.get(timeout=10)
    finally:
        producer.close(timeout=5)


def consume(consumer: KafkaConsumer) -> list[bytes]:
    """Every record on the consumer's partitions: polled until each position reached the high
    watermark of its last fetch, so an extra record would have been read too."""
    values: list[bytes] = []

    def read_to_the_end() -> bool:
        for records in consumer.poll(timeout_ms=250).values():
            values.extend(r.value for r in records)
        return at_end(consumer)

    eventually(read_to_the_end, timeout=30, what="the topic read to its end", interval=0)
    return values


def test_kafka_produce_and_consume_in_a_group(kafka: TansuBroker) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    sent = [f"event-{i}".encode() for i in range(50)]
    produce(kafka.bootstrap, topic, sent)

    consumer = KafkaConsumer(topic, **reader_options(kafka.bootstrap, group_id=topic))
    try:
        got = consume(consumer)
    finally:
        consumer.close()
    assert sorted(got) == sorted(sent)


def test_durable_kafka_keeps_acknowledged_events_across_kill_9(
    durable_kafka: TansuBroker, seaweed: SeaweedS3,
) -> None:
    topic, n = "durable", 1000
    sent = [f"event-{i}".encode() for i in range(n)]
    produce(durable_kafka.bootstrap, topic, sent)
    assert seaweed.client().list_objects_v2(Bucket=durable_kafka.bucket)["KeyCount"] > 0

    durable_kafka.kill()
    assert not tcp_open(durable_kafka.port)
    durable_kafka.start().wait_ready(30)  # same port, same bucket

    # No group, from earliest: never end_offsets()/seek_to_end() on Tansu (DESIGN.md).
    consumer = KafkaConsumer(topic, bootstrap_servers=durable_kafka.bootstrap,
                             auto_offset_reset="earliest", enable_auto_commit=False)
    try:
        got = consume(consumer)
    finally:
        consumer.close()
    assert len(got) == n
    assert set(got) == set(sent)


def test_redis_set_get(redis_server: RedisServer) -> None:
    import redis

    client = redis.Redis.from_url(redis_server.url, socket_timeout=2)
    try:
        client.set("greeting", b"hello", ex=60)
        assert client.get("greeting") == b"hello"
    finally:
        client.close()


def test_redis_password(tmp_path: Path) -> None:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    no_retry = Retry(NoBackoff(), 0)  # redis-py 8 retries 3 times with backoff by default
    with RedisServer(tmp_path, password="local-only") as server:
        assert ":local-only@" in server.url
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host=HOST, port=server.port, socket_timeout=2, retry=no_retry).ping()
        client = redis.Redis.from_url(server.url, socket_timeout=2, retry=no_retry)
        assert client.ping()
        client.close()


def test_mlflow_experiment_metric_and_artifact(mlflow_server: MlflowServer,
                                               tmp_path: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.tracking_uri)
    experiment_id = client.create_experiment(f"components-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "ndcg_at_10", 0.25, step=1)
    client.log_text(run.info.run_id, "hello", "notes/hello.txt")
    client.set_terminated(run.info.run_id)

    fetched = client.get_run(run.info.run_id)
    assert fetched.data.metrics == {"ndcg_at_10": 0.25}
    # Artifacts go through the server (HTTP), not a path the client must share.
    assert fetched.info.artifact_uri.startswith("mlflow-artifacts:")
    local = client.download_artifacts(run.info.run_id, "notes/hello.txt", dst_path=str(tmp_path))
    assert Path(local).read_text() == "hello"
    assert list((mlflow_server.data_dir / "artifacts").rglob("hello.txt"))


def test_seaweed_put_get(seaweed: SeaweedS3) -> None:
    seaweed.create_bucket("objects")
    seaweed.create_bucket("objects")  # idempotent
    s3 = seaweed.client()
    s3.put_object(Bucket="objects", Key="models/a.npz", Body=b"\x00\x01payload")
    assert s3.get_object(Bucket="objects", Key="models/a.npz")["Body"].read() == b"\x00\x01payload"


def test_prometheus_scrapes_itself(tmp_path: Path) -> None:
    config = tmp_path / "prometheus.yml"
    prometheus = Prometheus(tmp_path / "data", config_file=config)
    config.write_text(minimal_prometheus_config({"self": [f"{HOST}:{prometheus.port}"]}))
    with prometheus:
        def target_health() -> str:
            conn = http.client.HTTPConnection(HOST, prometheus.port, timeout=5)
            try:
                conn.request("GET", "/api/v1/targets")
                targets = json.loads(conn.getresponse().read())["data"]["activeTargets"]
            finally:
                conn.close()
            return str(targets[0]["health"]) if targets else ""

        eventually(lambda: target_health() == "up", timeout=30,
                   what="Prometheus scraping itself")


def test_failed_start_raises_with_log_tail_and_leaves_nothing(tmp_path: Path) -> None:
    config = tmp_path / "bad.yml"
    config.write_text("scrape_configs: [this is not a scrape config")
    prometheus = Prometheus(tmp_path / "data", config_file=config).start()
    pid = prometheus.pid
    assert pid is not None
    with pytest.raises(ComponentError, match="exited with code") as error:
        prometheus.wait_ready(15)
    assert "bad.yml" in str(error.value)  # the log tail names the config it rejected
    prometheus.stop()
    assert group_pids(pid) == []


def test_stop_is_idempotent_and_restart_reuses_the_port(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.stop()  # never started: no-op
    server.start().wait_ready(10)
    pid, port = server.pid, server.port
    assert pid is not None
    server.restart(hard=True)
    assert server.pid != pid and server.port == port and server.running
    new_pid = server.pid
    assert new_pid is not None
    server.stop()
    server.stop()
    server.kill()
    assert not server.running
    assert group_pids(pid) == [] and group_pids(new_pid) == []
    assert not tcp_open(port)


def _sockets(pids: list[int]) -> list[tuple[str, str]]:
    """(local, peer) addresses of every TCP/UDP socket these processes hold."""
    out = subprocess.run(["ss", "-tuanpH"], capture_output=True, text=True, check=True).stdout
    sockets = []
    for line in out.splitlines():
        if any(f"pid={pid}," in line for pid in pids):
            columns = line.split()
            sockets.append((columns[4], columns[5]))
    return sockets


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
def test_every_socket_stays_on_loopback(
    kafka: TansuBroker, durable_kafka: TansuBroker, redis_server: RedisServer,
    mlflow_server: MlflowServer,
) -> None:
    pids = [p for c in (kafka, durable_kafka, redis_server, mlflow_server)
            for p in group_pids(c.pid or -1)]
    sockets = _sockets(pids)
    assert sockets, "expected listening sockets"
    for local, peer in sockets:
        assert local.rsplit(":", 1)[0] == HOST, (local, peer)
        assert peer.rsplit(":", 1)[0] in {HOST, "0.0.0.0", "*"}, (local, peer)


def _pids_mentioning(*needles: str) -> list[int]:
    """Processes whose command line contains one of `needles` (unique paths and ports)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if any(needle in cmdline for needle in needles):
                pids.append(int(entry.name))
    return pids


def _ready(component: Component) -> bool:
    try:
        return component.probe()
    except Exception:  # not up yet
        return False


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[tuple[procfile.LocalStack, subprocess.Popen[bytes]]]:
    """The local stack's components under supervisord (as `scripts/localstack/up.py` runs
    them, without the services), every one ready; the test stops supervisord, and whatever
    is left is killed and fails the test."""
    kafka, redis, mlflow, s3, prometheus = free_ports(5)
    stack = procfile.local_stack(
        tmp_path / "state",
        procfile.LocalPorts(kafka=kafka, redis=redis, mlflow=mlflow, s3=s3,
                            prometheus=prometheus),
        seaweed_ports=SeaweedPorts.free(),
    )
    supervisor.write_config(stack, supervisor.component_programs(stack))
    with (tmp_path / "supervisord.out").open("wb") as out:
        process = subprocess.Popen(supervisor.supervisord_argv(stack.state_dir), stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def all_ready() -> bool:
            pending = [c.name for c in stack.components if not _ready(c)]
            assert not pending, f"not ready under supervisord: {pending}"
            return True

        eventually(all_ready, timeout=90, what="every component ready under supervisord")
        yield stack, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        needles = (str(stack.state_dir), f"tcp://{stack.kafka.bootstrap}")
        leftovers = _pids_mentioning(*needles)
        for pid in leftovers:  # only ours: the path and the port are unique to this test
            os.kill(pid, signal.SIGKILL)
    assert not leftovers, (stack.state_dir / "stack.log").read_text()[-3000:]
    assert not any(tcp_open(port) for port in (kafka, redis, mlflow, s3, prometheus))


def test_supervisord_runs_the_same_components_and_stops_them_cleanly(
    supervised: tuple[procfile.LocalStack, subprocess.Popen[bytes]],
) -> None:
    stack, process = supervised
    produce(stack.kafka.bootstrap, "supervised", [b"through-supervisord"])
    assert http_ok(stack.mlflow.port, "/health")
    process.send_signal(signal.SIGTERM)  # what up.py does on Ctrl-C
    assert process.wait(60) == 0
    stopped = (stack.state_dir / "stack.log").read_text()
    for component in stack.components:
        assert f"stopped: {component.name} (exit status 0)" in stopped, component.name


def test_a_killed_component_is_restarted_and_counted_while_the_others_run_on(
    supervised: tuple[procfile.LocalStack, subprocess.Popen[bytes]],
) -> None:
    stack, _ = supervised
    control = supervisor.Supervisor(stack.state_dir)
    others = {name: info["pid"] for name, info in control.processes().items()
              if name != "redis"}
    killed = control.kill("redis")  # kill -9 of its process group, as a crash
    eventually(lambda: control.restarts() == {"redis": 1}, timeout=30,
               what="the restart of redis counted")
    eventually(lambda: _ready(stack.redis), timeout=30, what="redis answering again")
    assert control.pid("redis") != killed
    assert {name: info["pid"] for name, info in control.processes().items()
            if name != "redis"} == others, "only redis restarted"
    log = (stack.state_dir / "logs" / "restarts.log").read_text()
    assert f"redis exited unexpectedly (pid {killed})" in log
    assert "redis restarted (1 so far)" in log
    produce(stack.kafka.bootstrap, "supervised", [b"the broker ran on"])


def test_a_component_that_cannot_start_is_retried_with_backoff_until_it_can(
    supervised: tuple[procfile.LocalStack, subprocess.Popen[bytes]],
) -> None:
    stack, _ = supervised
    control = supervisor.Supervisor(stack.state_dir)
    control.stop("redis")  # on purpose: not a restart
    with socket.socket() as squatter:  # its port taken: each start fails at once
        squatter.bind((HOST, stack.redis.port))
        squatter.listen()
        control.start("redis", wait=False)
        eventually(lambda: control.processes()["redis"]["statename"] == "BACKOFF"
                   and control.restarts().get("redis", 0) >= 2, timeout=60,
                   what="redis retried, backing off between tries")
    eventually(lambda: control.processes()["redis"]["statename"] == "RUNNING", timeout=60,
               what="redis started once it could")
    assert _ready(stack.redis)
