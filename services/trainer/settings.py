"""TrainerService settings: the dataset store, the consumer, MLflow, the quality gate, triggers.

Hyper-parameter defaults come from the model's own (`TrainConfig`), their bounds from
services/trainer/hyperparameters.py; a job's overrides replace them one field at a time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from services.core.config import KafkaSettings, MlflowSettings, ServerSettings, secret
from services.core.settings import SettingsError, at_least_one, env, non_negative, positive
from services.trainer.hyperparameters import BOUNDS
from services.trainer.model import TrainConfig
from services.trainer.object_store import ObjectStore
from services.trainer.parquet_snapshot import BUCKETS
from services.trainer.search import MAX_SECONDS, MAX_TRIALS, Defaults

# The InteractionType names (without the INTERACTION_TYPE_ prefix, lower case) the dataset
# stores and the weights are keyed by.
INTERACTION_TYPES = ("view", "click", "add_to_cart", "purchase", "rating", "like", "share")

DEFAULT_TYPE_WEIGHTS = {
    "view": 1.0, "click": 2.0, "add_to_cart": 3.0, "purchase": 5.0,
    "rating": 1.0, "like": 3.0, "share": 3.0,
}


def _type_weights(value: Mapping[str, float]) -> bool:
    return set(value) == set(INTERACTION_TYPES) and all(
        math.isfinite(w) and w >= 0 for w in value.values()
    )


def _unit_interval(value: float) -> bool:
    return 0 <= value <= 1


def _bounded(name: str) -> dict[str, Any]:
    """`env`'s check and rule for hyper-parameter `name`."""
    return {"check": BOUNDS[name].contains, "rule": BOUNDS[name].rule}


@dataclass(frozen=True, kw_only=True)
class SnapshotStoreSettings:
    """Where jobs export their snapshots and distributed workers read them: the trainer's
    settings, and all that a worker (services/trainer/worker.py) reads from its environment."""

    snapshot_uri: str = env(
        "RECSYS_TRAINER_SNAPSHOT_URI", "",
        "s3://bucket[/prefix] where every job exports its snapshot as Parquet (the run's "
        "dataset in MLflow; distributed workers read it there); empty: no export, and jobs "
        "fit in the trainer's process only.")
    s3_endpoint: str = env(
        "RECSYS_TRAINER_S3_ENDPOINT", "",
        "S3 endpoint of RECSYS_TRAINER_SNAPSHOT_URI, http(s)://host[:port]; always given, so "
        "no S3 client looks for one at the cloud's metadata address.")
    s3_region: str = env("RECSYS_TRAINER_S3_REGION", "us-east-1",
                         "Region of the snapshot bucket (any value for SeaweedFS).")
    s3_access_key: str = secret(env(
        "RECSYS_TRAINER_S3_ACCESS_KEY", "",
        "Access key of the snapshot bucket (from a Secret; never printed)."))
    s3_secret_key: str = secret(env(
        "RECSYS_TRAINER_S3_SECRET_KEY", "",
        "Secret key of the snapshot bucket (from a Secret; never printed)."))

    def object_store(self) -> ObjectStore | None:
        """The snapshot store; None without RECSYS_TRAINER_SNAPSHOT_URI. SettingsError when it
        is set without an endpoint and keys."""
        if not self.snapshot_uri:
            return None
        if not (self.s3_endpoint and self.s3_access_key and self.s3_secret_key):
            raise SettingsError("RECSYS_TRAINER_SNAPSHOT_URI needs RECSYS_TRAINER_S3_ENDPOINT, "
                                "RECSYS_TRAINER_S3_ACCESS_KEY and RECSYS_TRAINER_S3_SECRET_KEY")
        try:
            return ObjectStore(root=self.snapshot_uri, endpoint=self.s3_endpoint,
                               region=self.s3_region, access_key=self.s3_access_key,
                               secret_key=self.s3_secret_key)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None

    def object_store_env(self, *, keys: bool = True) -> dict[str, str]:
        """The variables that give a worker the same store; without the keys for workers
        that take them from a Secret (Kubernetes)."""
        found = {"RECSYS_TRAINER_SNAPSHOT_URI": self.snapshot_uri,
                 "RECSYS_TRAINER_S3_ENDPOINT": self.s3_endpoint,
                 "RECSYS_TRAINER_S3_REGION": self.s3_region}
        if keys:
            found |= {"RECSYS_TRAINER_S3_ACCESS_KEY": self.s3_access_key,
                      "RECSYS_TRAINER_S3_SECRET_KEY": self.s3_secret_key}
        return found


@dataclass(frozen=True, kw_only=True)
class TrainerSettings(ServerSettings, KafkaSettings, MlflowSettings, SnapshotStoreSettings):

    data_dir: str = env(
        "RECSYS_TRAINER_DATA_DIR", "var/trainer",
        "Directory of the durable dataset store (trainer.sqlite3: events, the catalogue, offsets,"
        " jobs).")
    consumer_group: str = env("RECSYS_TRAINER_CONSUMER_GROUP", "trainer",
                              "Kafka consumer group that feeds the dataset.")
    consumer_batch: int = env(
        "RECSYS_TRAINER_CONSUMER_BATCH", 50_000,
        "Most events appended (and fsynced) per transaction before offsets are committed.",
        check=at_least_one, rule=">= 1")
    type_weights: Mapping[str, float] = env(
        "RECSYS_TRAINER_TYPE_WEIGHTS", DEFAULT_TYPE_WEIGHTS,
        "Confidence weight of each interaction type, type=weight,...; 0 leaves a type out of "
        "training. An event's value (a quantity) multiplies its type's weight, except a "
        "rating's: every rating is an implicit positive, as in the offline protocol.",
        check=_type_weights, rule=f"a weight >= 0 for each of {', '.join(INTERACTION_TYPES)}")

    factors: int = env("RECSYS_TRAINER_FACTORS", TrainConfig.factors,
                       "Default latent dimensions.", **_bounded("factors"))
    epochs: int = env("RECSYS_TRAINER_EPOCHS", TrainConfig.epochs,
                      "Default alternating least-squares sweeps.", **_bounded("epochs"))
    regularization: float = env("RECSYS_TRAINER_REGULARIZATION", TrainConfig.regularization,
                                "Default L2 regularisation strength.",
                                **_bounded("regularization"))
    reg_exponent: float = env(
        "RECSYS_TRAINER_REG_EXPONENT", TrainConfig.reg_exponent,
        "Default frequency scaling of the regularisation: a row's penalty is regularization x "
        "(columns + alpha x its total weight) ^ this.", **_bounded("reg_exponent"))
    alpha: float = env("RECSYS_TRAINER_ALPHA", TrainConfig.alpha,
                       "Default confidence scaling (confidence = 1 + alpha * weight).",
                       **_bounded("alpha"))
    seed: int = env("RECSYS_TRAINER_SEED", TrainConfig.seed, "Default initialisation seed.",
                    **_bounded("seed"))
    threads: int = env("RECSYS_TRAINER_THREADS", 0,
                       "Torch threads for training; 0 keeps torch's default (all cores).",
                       check=non_negative, rule=">= 0")

    workers: int = env(
        "RECSYS_TRAINER_WORKERS", 1,
        "Processes that fit a job's models, unless the request asks for another number: 1 "
        "fits them in the trainer's process; more fit them with torch.distributed on the "
        "job's Parquet snapshot (needs RECSYS_TRAINER_SNAPSHOT_URI), started by "
        "RECSYS_TRAINER_LAUNCHER. The search always runs in the trainer's process.",
        check=at_least_one, rule=">= 1")
    max_workers: int = env(
        "RECSYS_TRAINER_MAX_WORKERS", 8,
        f"Most workers a request may ask for (at most {BUCKETS}: a snapshot's buckets).",
        check=lambda n: 1 <= n <= BUCKETS, rule=f"1 to {BUCKETS}")
    launcher: Literal["local", "kubernetes"] = env(
        "RECSYS_TRAINER_LAUNCHER", "local",
        "How the workers of a distributed fit start: local, as processes on the trainer's "
        "machine (a file rendezvous, gloo over loopback); kubernetes, as an indexed Job in the "
        "trainer's namespace (torchrun in each pod).")

    search_trials: int = env(
        "RECSYS_TRAINER_SEARCH_TRIALS", 40,
        "Hyper-parameter search: trials per job at most (a request may override it); 0 turns "
        "the search off, so jobs train with the defaults above.",
        check=lambda n: 0 <= n <= MAX_TRIALS, rule=f"0 to {MAX_TRIALS}")
    search_trial_multiple: float = env(
        "RECSYS_TRAINER_SEARCH_TRIAL_MULTIPLE", 30.0,
        "Hyper-parameter search: the default time budget, in durations of the search's first "
        "trial, so it follows the data's cost (a request may give seconds instead).",
        check=lambda s: 1 <= s <= MAX_TRIALS, rule=f"1 to {MAX_TRIALS}")
    search_max_seconds: float = env(
        "RECSYS_TRAINER_SEARCH_MAX_SECONDS", 900.0,
        "Hyper-parameter search: the default budget's ceiling in seconds, whatever the data.",
        check=lambda s: 0 < s <= MAX_SECONDS, rule=f"> 0 and <= {MAX_SECONDS:g}")
    search_max_rows: int = env(
        "RECSYS_TRAINER_SEARCH_MAX_ROWS", 1_000_000,
        "Hyper-parameter search: trials fit on at most this many interactions (a seeded sample "
        "of users beyond), so a trial's cost is bounded whatever the data size.",
        check=at_least_one, rule=">= 1")
    evaluation_max_rows: int = env(
        "RECSYS_TRAINER_EVALUATION_MAX_ROWS", 2_000_000,
        "Held-out evaluation: up to this many interactions the protocol is applied to every "
        "user (exact figures); beyond, to a seeded sample of users holding at most this many, "
        "so its second fit and its ranking stop growing with the data.",
        check=at_least_one, rule=">= 1")
    evaluation_max_users: int = env(
        "RECSYS_TRAINER_EVALUATION_MAX_USERS", 20_000,
        "Held-out evaluation: beyond this many users, a seeded sample of this many whole users "
        "(ranking costs users x items: about 80 s for 130,000 users x 27,000 items here); "
        "NDCG@10's standard error over 20,000 users is about 0.002.",
        check=at_least_one, rule=">= 1")
    top_lists_max_cells: int = env(
        "RECSYS_TRAINER_TOP_LISTS_MAX_CELLS", 10_000_000_000,
        "A version ships every user's best 128 items, ranked exactly once here, when users x "
        "items is at most this (about 7 s per 10^9 cells with 64 factors on one core; 1 KiB "
        "per user in the artifact and each recommender); the recommender then answers known "
        "users without scoring. 0: never.", check=non_negative, rule=">= 0")
    wait_for_events_s: float = env(
        "RECSYS_TRAINER_WAIT_FOR_EVENTS_S", 120.0,
        "Before its snapshot a job waits until the dataset holds every event acknowledged "
        "before the job started, at most this many seconds (then it fails, naming how many "
        "events were missing); a request may skip the wait.", check=positive, rule="> 0")

    min_ndcg: float = env(
        "RECSYS_TRAINER_MIN_NDCG", 0.05,
        "Quality gate floor: a model is promoted to champion only with held-out NDCG@10 at "
        "least this.", check=_unit_interval, rule="0 to 1")
    gate_tolerance: float = env(
        "RECSYS_TRAINER_GATE_TOLERANCE", 0.01,
        "Quality gate: a new model must reach the champion's NDCG@10 minus this.",
        check=_unit_interval, rule="0 to 1")

    trigger_new_events: int = env(
        "RECSYS_TRAINER_TRIGGER_NEW_EVENTS", 0,
        "Start a job once this many new events arrived since the last job; 0 turns it off.",
        check=non_negative, rule=">= 0")
    trigger_interval_min: float = env(
        "RECSYS_TRAINER_TRIGGER_INTERVAL_MIN", 0.0,
        "Start a job every this many minutes when new events arrived; 0 turns it off.",
        check=non_negative, rule=">= 0")

    mlflow_experiment: str = env("RECSYS_TRAINER_MLFLOW_EXPERIMENT", "recsys-trainer",
                                 "MLflow experiment that holds the training runs.")
    mlflow_timeout_s: int = env(
        "RECSYS_TRAINER_MLFLOW_TIMEOUT_S", 10,
        "Timeout of one MLflow HTTP request, in seconds.", check=at_least_one, rule=">= 1")
    mlflow_retries: int = env(
        "RECSYS_TRAINER_MLFLOW_RETRIES", 2,
        "Retries (exponential backoff from 1 s) of a failed MLflow request before a job fails.",
        check=non_negative, rule=">= 0")

    def validate(self) -> None:
        super().validate()
        store = self.object_store()
        if self.workers > self.max_workers:
            raise SettingsError(f"RECSYS_TRAINER_WORKERS={self.workers}: must be at most "
                                f"RECSYS_TRAINER_MAX_WORKERS ({self.max_workers})")
        if self.workers > 1 and store is None:
            raise SettingsError(f"RECSYS_TRAINER_WORKERS={self.workers}: distributed fits read "
                                "the job's snapshot: set RECSYS_TRAINER_SNAPSHOT_URI")

    @property
    def store_path(self) -> Path:
        return Path(self.data_dir) / "trainer.sqlite3"

    def search_defaults(self) -> Defaults:
        """The search budget jobs start from (a request may override trials and seconds)."""
        return Defaults(trials=self.search_trials, trial_multiple=self.search_trial_multiple,
                        max_seconds=self.search_max_seconds, max_rows=self.search_max_rows)

    def train_config(self) -> TrainConfig:
        """The default hyper-parameters jobs start from."""
        return TrainConfig(
            factors=self.factors, epochs=self.epochs, regularization=self.regularization,
            reg_exponent=self.reg_exponent, alpha=self.alpha, seed=self.seed,
            num_threads=self.threads or None,
        )
