"""MLflow's accounts for the mesh (its basic-auth app), made idempotently: the trainer may
write the registered model, the recommender may only read (the server's default permission).

Run by the local stack (`MlflowServer.create_users`) and by scripts/deploy.sh inside the
MLflow pod (`kubectl exec -i deploy/mlflow -- python - < scripts/mlflow_users.py`), so it uses
the standard library only and reads everything from the environment:

    MLFLOW_TRACKING_URI                  the server (default http://127.0.0.1:5000)
    MLFLOW_AUTH_ADMIN_USERNAME           its admin (default admin) ...
    MLFLOW_AUTH_ADMIN_PASSWORD           ... and password
    RECSYS_MLFLOW_TRAINER_PASSWORD       the trainer's password
    RECSYS_MLFLOW_RECOMMENDER_PASSWORD   the recommender's password
    RECSYS_MODEL_NAME                    the registered model (default recsys-mf)

A user that exists gets the given password (rotation: change it in the Secret, run this
again, restart the service). The registered model is created by the admin and the trainer
made its manager, so that no other account can create it first and own it. No password is
ever printed.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping

TRAINER = "trainer"
RECOMMENDER = "recommender"


class MlflowError(RuntimeError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.code = code


def _call(uri: str, admin: tuple[str, str], method: str, path: str,
          body: Mapping[str, str]) -> None:
    token = base64.b64encode(f"{admin[0]}:{admin[1]}".encode()).decode()
    request = urllib.request.Request(
        f"{uri.rstrip('/')}{path}", data=json.dumps(body).encode(), method=method,
        headers={"authorization": f"Basic {token}", "content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30):
            return
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        try:
            code, message = json.loads(text)["error_code"], "see the server's log"
        except (ValueError, KeyError, TypeError):
            code, message = "", text[:200]
        raise MlflowError(exc.code, code, message) from None


def ensure_users(uri: str, admin: tuple[str, str], passwords: Mapping[str, str],
                 model_name: str) -> None:
    """Each user in `passwords` exists with that password; `model_name` exists and TRAINER
    manages it."""
    for name, password in passwords.items():
        try:
            _call(uri, admin, "POST", "/api/2.0/mlflow/users/create",
                  {"username": name, "password": password})
        except MlflowError as exc:
            if exc.code != "RESOURCE_ALREADY_EXISTS":
                raise
            _call(uri, admin, "PATCH", "/api/2.0/mlflow/users/update-password",
                  {"username": name, "password": password})
    _create(uri, admin, "/api/2.0/mlflow/registered-models/create", {"name": model_name})
    _create(uri, admin, "/api/3.0/mlflow/users/permissions/grant",
            {"username": TRAINER, "resource_type": "registered_model",
             "resource_id": model_name, "permission": "MANAGE"})


def _create(uri: str, admin: tuple[str, str], path: str, body: Mapping[str, str]) -> None:
    """POST `body` to `path`; what exists already is left as it is."""
    try:
        _call(uri, admin, "POST", path, body)
    except MlflowError as exc:
        if exc.code != "RESOURCE_ALREADY_EXISTS":
            raise


def main() -> int:
    env = os.environ
    try:
        ensure_users(
            env.get("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000"),
            (env.get("MLFLOW_AUTH_ADMIN_USERNAME", "admin"), env["MLFLOW_AUTH_ADMIN_PASSWORD"]),
            {TRAINER: env["RECSYS_MLFLOW_TRAINER_PASSWORD"],
             RECOMMENDER: env["RECSYS_MLFLOW_RECOMMENDER_PASSWORD"]},
            env.get("RECSYS_MODEL_NAME", "recsys-mf"))
    except KeyError as missing:
        print(f"mlflow_users: {missing.args[0]} is not set", file=sys.stderr)
        return 2
    except (MlflowError, OSError) as exc:
        print(f"mlflow_users: {exc}", file=sys.stderr)
        return 1
    print(f"mlflow_users: users {TRAINER} (writes the model) and {RECOMMENDER} (reads) ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
