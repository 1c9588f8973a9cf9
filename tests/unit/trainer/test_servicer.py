"""Jobs to protos (that every RPC is implemented: tests/unit/test_contracts.py)."""

from __future__ import annotations

from recsys.trainer.v1 import trainer_pb2
from services.model.lineage import Lineage
from services.trainer.jobs import Job, JobState, Trigger
from services.trainer.model import TrainConfig
from services.trainer.servicer import job_to_proto
from services.trainer.training import Phase

LINEAGE = Lineage(topic="t", row_count=7, content_hash="ff", partition_offsets={0: 3, 1: 4},
                  user_count=2, item_count=3)


def test_a_queued_job() -> None:
    job = Job(job_id="j", trigger=Trigger.NEW_EVENTS, config=TrainConfig(factors=8),
              created_at=1_700_000_000.25)
    proto = job_to_proto(job)
    assert proto.state == trainer_pb2.JOB_STATE_QUEUED
    assert proto.phase == trainer_pb2.JOB_PHASE_UNSPECIFIED
    assert proto.trigger == trainer_pb2.JOB_TRIGGER_NEW_EVENTS
    assert proto.hyperparameters.factors == 8
    assert proto.epochs == TrainConfig().epochs
    assert proto.created_at.ToNanoseconds() == 1_700_000_000_250_000_000
    assert not proto.HasField("metrics") and not proto.HasField("started_at")


def test_a_finished_job() -> None:
    job = Job(job_id="j", trigger=Trigger.REQUEST, config=TrainConfig(), created_at=1.0,
              state=JobState.SUCCEEDED, phase=Phase.DONE, lineage=LINEAGE,
              metrics={"ndcg_at_10": 0.5, "precision_at_10": 0.4, "users_evaluated": 9.0},
              started_at=2.0, finished_at=3.0, model_version="2", promoted=True)
    proto = job_to_proto(job)
    assert proto.phase == trainer_pb2.JOB_PHASE_DONE
    assert proto.metrics.ndcg_at_10 == 0.5 and proto.metrics.users_evaluated == 9
    assert dict(proto.lineage.partition_offsets) == {0: 3, 1: 4}
    assert proto.finished_at.seconds == 3
