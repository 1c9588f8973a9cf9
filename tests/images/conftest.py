"""The images, built once per session with scripts/images (unchanged layers come from podman's
cache: seconds when the code did not change), the PKI their containers use, and a champion
trained by the trainer's image that the recommender's image then serves."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator

import pytest

from recsys.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from scripts.images.build import LOCAL, build_all, default_base
from scripts.localstack.components import MlflowServer, TansuBroker
from scripts.localstack.pki import Pki, ensure_pki
from tests.support.containers import Trained, running
from tests.support.polling import eventually
from tests.support.trainer_server import TRAINER_EVENTS, Ingested, ingest_synthetic

# The first test that asks for `images` may build them from nothing: minutes of debootstrap
# and pip (torch twice), far past pytest's default timeout.
IMAGES_TIMEOUT_S = 3600


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("images"):
            item.add_marker(pytest.mark.timeout(IMAGES_TIMEOUT_S))


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    """Each service's image reference."""
    base = default_base()
    needed = ["podman", *(["debootstrap"] if base == LOCAL else [])]
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (scripts/setup.sh installs them)")
    return build_all(base_image=base)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return ensure_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def synthetic_topic(kafka: TansuBroker) -> Ingested:
    """TRAINER_EVENTS on a topic of their own, through a real IngestService."""
    return ingest_synthetic(kafka.bootstrap, TRAINER_EVENTS)


@pytest.fixture(scope="session")
def trained(images: dict[str, str], kafka: TansuBroker, mlflow_server: MlflowServer,
            synthetic_topic: Ingested, pki: Pki) -> Iterator[Trained]:
    """The trainer's image, fed the synthetic topic, runs a job with the default
    hyper-parameters: a registered model of its own, whose champion it sets."""
    model_name = f"recsys-image-{uuid.uuid4().hex[:8]}"
    env = {"RECSYS_KAFKA_BOOTSTRAP": kafka.bootstrap, "RECSYS_KAFKA_TOPIC": synthetic_topic.topic,
           "RECSYS_MLFLOW_TRACKING_URI": mlflow_server.tracking_uri,
           "RECSYS_MODEL_NAME": model_name, "RECSYS_TRAINER_MLFLOW_EXPERIMENT": model_name,
           "RECSYS_TRAINER_CONSUMER_GROUP": model_name, "RECSYS_TRAINER_THREADS": "1"}
    with running("trainer", images["trainer"], pki, env=env) as trainer:
        trainer.wait_serving()
        eventually(lambda: trainer.metric("recsys_trainer_dataset_rows") == synthetic_topic.events,
                   timeout=180, what="the synthetic topic in the trainer's store")
        with trainer.channel() as channel:
            stub = trainer_pb2_grpc.TrainerServiceStub(channel)
            started = stub.StartTrainingJob(trainer_pb2.StartTrainingJobRequest(), timeout=10)
            updates = stub.WatchTrainingJob(
                trainer_pb2.WatchTrainingJobRequest(job_id=started.job.job_id), timeout=600)
            job = [update.job for update in updates][-1]
        yield Trained(trainer, job, synthetic_topic, kafka.bootstrap,
                      mlflow_server.tracking_uri, model_name)
