"""The main job, run on a live local stack the way a user would run it.

Ingest interactions through IngestService (synthetic by default, MovieLens when given a path)
and their items' catalogue through CatalogService, train through TrainerService with live
progress, wait for the recommender to serve the new champion, then show recommendations three
ways: a Python gRPC stub, grpcurl, and REST through Envoy with curl; and one category-filtered.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recsys.recommender.v1 import recommender_pb2, recommender_pb2_grpc
from scripts.localstack.components import VENV_BIN
from services.cli.token import mint_token
from services.core.client import channel
from services.core.names import SERVICE_NAMES

# The embedded default: big enough for a real model, small enough to train in seconds.
SYNTHETIC = ("--users", "2000", "--items", "1000", "--events", "100000", "--seed", "7")
SHOWN_USERS_SYNTHETIC = ("u1", "u2", "u3")
SHOWN_USERS_MOVIELENS = ("1", "2", "3")
# The category of the filtered recommendation: a taste cluster, a MovieLens genre.
SHOWN_CATEGORY_SYNTHETIC = "genre-0"
SHOWN_CATEGORY_MOVIELENS = "Comedy"


def _step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m", flush=True)


def _run(argv: list[str], *, shown: str | None = None) -> str:
    """Run a command in front of the user, echoing it (as `shown`, a line to paste into a
    shell, when the real command holds a secret); fail the job if it fails."""
    print(f"$ {shown or shlex.join(argv)}", flush=True)
    result = subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True)
    print(result.stdout, end="", flush=True)
    return result.stdout


def _recsys(*args: str) -> list[str]:
    return [sys.executable, "-m", "services.cli", *args]


def wait_for_model(target: str, version: str | None, timeout: float = 120.0) -> str:
    """Poll GetModelInfo until the recommender serves `version` (any version when None)."""
    deadline = time.monotonic() + timeout
    with channel(target) as ch:
        stub = recommender_pb2_grpc.RecommenderServiceStub(ch)
        while True:
            try:
                info = stub.GetModelInfo(recommender_pb2.GetModelInfoRequest(), timeout=2)
                if info.model_version and version in (None, info.model_version):
                    return info.model_version
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"recommender did not load model {version} in {timeout:.0f} s")
            time.sleep(0.5)


def _champion_version(trainer: str) -> str:
    listing = json.loads(_run(_recsys("models", "list", "--target", trainer, "--json")))
    return next(v["version"] for v in listing["versions"] if "champion" in v.get("aliases", []))


def show_with_python_stub(target: str, user_id: str) -> None:
    """What an application back end does: a generated stub, a deadline, retries on UNAVAILABLE."""
    print(f">>> RecommenderServiceStub(channel({target!r})).Recommend(user_id={user_id!r}, k=5)")
    with channel(target) as ch:
        stub = recommender_pb2_grpc.RecommenderServiceStub(ch)
        reply = stub.Recommend(recommender_pb2.RecommendRequest(user_id=user_id, k=5), timeout=5)
    items = ", ".join(f"{i.item_id} ({i.score:.3f})" for i in reply.items)
    strategy = recommender_pb2.Strategy.Name(reply.strategy)
    print(f"model {reply.model_version}, {strategy}: {items}")


def run_main_job(endpoints: Mapping[str, str], *, movielens: Path | None = None,
                 security: Mapping[str, Any]) -> None:
    ingest, trainer = endpoints["ingest_grpc"], endpoints["trainer_grpc"]
    recommender, rest = endpoints["recommender_grpc"], endpoints["rest_base_url"]
    if movielens is None:
        _step("1/4 ingest synthetic interactions through IngestService (gRPC stream)")
        _run(_recsys("ingest", "synthetic", "--target", ingest, *SYNTHETIC))
        print("the items' catalogue: each in its taste cluster's category, through CatalogService")
        _run(_recsys("catalog", "synthetic", "--target", ingest, *SYNTHETIC))
        users, category = SHOWN_USERS_SYNTHETIC, SHOWN_CATEGORY_SYNTHETIC
    else:
        _step(f"1/4 ingest MovieLens from {movielens} through IngestService (gRPC stream)")
        _run(_recsys("ingest", "movielens", str(movielens), "--target", ingest))
        print("the movies' catalogue: genres as categories, through CatalogService")
        _run(_recsys("catalog", "movielens", str(movielens), "--target", ingest))
        users, category = SHOWN_USERS_MOVIELENS, SHOWN_CATEGORY_MOVIELENS

    _step("2/4 train through TrainerService (progress streamed by WatchTrainingJob)")
    subprocess.run(_recsys("train", "--target", trainer), check=True)

    _step("3/4 wait for the recommender to serve the champion")
    version = wait_for_model(recommender, _champion_version(trainer))
    print(f"recommender serves model version {version}")

    _step("4/4 recommendations, three ways, and one filtered by category")
    for user in users:
        show_with_python_stub(recommender, user)
    request = json.dumps({"user_id": users[0], "k": 5})
    tls = (["-cacert", security["ca_file"], "-cert", security["client_cert_file"],
            "-key", security["client_key_file"]] if security["mtls"] else ["-plaintext"])
    _run([str(VENV_BIN / "grpcurl"), *tls, "-d", request, recommender,
          f"{SERVICE_NAMES['recommender']}/Recommend"])
    token = mint_token(["recommend:read"], key_file=security["token_signing_key"],
                       subject="main-job", ttl_s=300)
    print("$ TOKEN=$(recsys token --scope recommend:read)   # a JWT the edge accepts")
    curl = ["curl", "-sS", "--fail-with-body", "--cacert", security["ca_file"], "-H"]
    url = f"{rest}/v1/users/{users[0]}/recommendations?k=5"
    # Double quotes, so that pasting the line expands $TOKEN.
    _run([*curl, f"authorization: Bearer {token}", url],
         shown=f'{shlex.join(curl)} "authorization: Bearer $TOKEN" {shlex.quote(url)}')
    print()  # curl's JSON ends without a newline
    _run(_recsys("recommend", users[0], "-k", "5", "--category", category,
                 "--target", recommender))
    print()
