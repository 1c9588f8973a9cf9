"""The recommender image, run as its workload against the real MLflow, Redis and broker: it
loads the champion the trainer's image registered and answers Recommend; confinement;
SIGTERM."""

from __future__ import annotations

import pytest

from recsys.recommender.v1 import recommender_pb2, recommender_pb2_grpc
from scripts.localstack.components import RedisServer
from scripts.localstack.pki import Pki
from services.data.synthetic import SyntheticData
from tests.support.containers import CONFINED, Trained, running
from tests.support.trainer_server import TRAINER_EVENTS

pytestmark = pytest.mark.images


def test_the_recommender_image_serves_the_champion_and_stops_on_sigterm(
        images: dict[str, str], trained: Trained, redis_server: RedisServer, pki: Pki) -> None:
    env = {"RECSYS_MLFLOW_TRACKING_URI": trained.mlflow_tracking_uri,
           "RECSYS_MODEL_NAME": trained.model_name, "RECSYS_REDIS_URL": redis_server.url,
           "RECSYS_KAFKA_BOOTSTRAP": trained.kafka_bootstrap,
           "RECSYS_KAFKA_TOPIC": trained.topic.topic}
    user = next(iter(SyntheticData(TRAINER_EVENTS).events())).user_id
    with running("recommender", images["recommender"], pki, env=env) as recommender:
        recommender.wait_serving()  # SERVING only once a model is loaded
        with recommender.channel() as channel:
            answer = recommender_pb2_grpc.RecommenderServiceStub(channel).Recommend(
                recommender_pb2.RecommendRequest(user_id=user, k=5), timeout=10)
        assert answer.model_version == trained.job.model_version
        assert len(answer.items) == 5
        assert recommender.confinement() == CONFINED
        assert recommender.terminate() == 0, recommender.logs()
        assert "stopped" in recommender.logged()
