"""A local Apache Airflow 2.11 beside the embedded stack: webserver + scheduler from `.venv-airflow`.

Airflow shares no dependency with Dagster, so it runs from its own virtualenv
(installed from `airflow/requirements.txt` on first use). It keeps its metadata in
SQLite under the stack's state folder, serves the REST API with basic auth on
127.0.0.1, and runs tasks with the SequentialExecutor (SQLite allows no other).
The proxied tasks reach Dagster at DAGSTER_URL. Like the embedded stack, it records
each process with its start time as soon as it is spawned, holds a lock for the
whole `up`/`down`, and never signals a PID that another process now holds.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

from movie_platform.local_stack import (
    REPO_ROOT,
    StackError,
    _alive,
    _terminate,
    default_state_dir,
    is_ours,
    process_start,
    spawn,
    state_lock,
    tail,
)
from movie_platform.stack_secrets import write_private

AIRFLOW_VENV = REPO_ROOT / ".venv-airflow"
AIRFLOW_REQUIREMENTS = REPO_ROOT / "airflow" / "requirements.txt"
DAGS_FOLDER = REPO_ROOT / "airflow" / "dags"
DEFAULT_PORT = 18080
DEFAULT_USERNAME = "admin"
START_TIMEOUT_S = 180
PROCESSES = ("webserver", "scheduler")


@dataclass
class AirflowRuntime:
    """Where Airflow keeps its state, and the variables it is configured from."""

    state_dir: Path = field(default_factory=default_state_dir)
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    venv: Path = AIRFLOW_VENV

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).resolve()

    @property
    def home(self) -> Path:
        return self.state_dir / "airflow"

    @property
    def state_file(self) -> Path:
        return self.home / "runtime.json"

    @property
    def lock_file(self) -> Path:
        return self.home / "runtime.lock"

    @property
    def port(self) -> int:
        return int(self.environ.get("AIRFLOW_PORT") or DEFAULT_PORT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def airflow_bin(self) -> Path:
        return self.venv / "bin" / "airflow"

    # ---- lifecycle -----------------------------------------------------------------
    def install(self, log=print) -> None:
        """Create `.venv-airflow` from airflow/requirements.txt unless it already has Airflow."""
        if self.airflow_bin.exists():
            return
        log(f"installing Apache Airflow into {self.venv} (once; about a minute from a warm pip cache)")
        python = os.environ.get("PYTHON") or "python3"
        _run([python, "-m", "venv", str(self.venv)], "creating the Airflow virtualenv")
        _run(
            [str(self.venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r", str(AIRFLOW_REQUIREMENTS)],
            "pip install -r airflow/requirements.txt",
            timeout=1800,
        )

    def up(self, log=print) -> dict[str, str]:
        """Start webserver + scheduler (idempotent); returns AIRFLOW_URL & co. for the Dagster side.

        A start that fails stops the processes it spawned before raising.
        """
        self.install(log)
        with state_lock(self.lock_file, log):
            if self.running():
                return self.env()
            self._down(log=lambda _msg: None)
            try:
                self._start(log)
            except BaseException:
                self._down(log)
                raise
        return self.env()

    def _start(self, log) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        credentials = self._credentials()
        env = self.process_env(credentials)
        started = time.monotonic()
        _run([str(self.airflow_bin), "db", "migrate"], "airflow db migrate", env=env, timeout=600)
        self._ensure_user(env, credentials)
        state: dict[str, object] = {"url": self.url, "username": credentials["username"]}
        for name, cmd in (
            ("webserver", ["webserver", "--port", str(self.port), "--hostname", "127.0.0.1"]),
            ("scheduler", ["scheduler"]),
        ):
            log_file = self.home / f"{name}.log"
            pid = spawn([str(self.airflow_bin), *cmd], log_file, env, cwd=self.home)
            state[name] = {"pid": pid, "log": str(log_file), "started": process_start(pid)}
            self.save(state)  # recorded at once: a failure below still knows what to stop
        self._wait_healthy(state, credentials)
        log(
            f"airflow    running   {self.url} (user {credentials['username']}, dags from {DAGS_FOLDER}) "
            f"in {time.monotonic() - started:.0f}s"
        )

    def down(self, log=print) -> None:
        """Stop the webserver and scheduler this runtime started; a PID now held by another process is left alone."""
        if not self.state_file.exists():
            return
        with state_lock(self.lock_file, log):
            self._down(log)

    def _down(self, log) -> None:
        state = self.load()
        for name in reversed(PROCESSES):
            entry = state.get(name) or {}
            pid = entry.get("pid")
            if pid and _owns(name, entry):
                _terminate(pid, timeout=20)
                log(f"airflow {name} stopped (pid {pid})")
            elif _alive(pid):
                log(f"airflow {name}: pid {pid} now belongs to a process this runtime did not start; left alone")
        if state:
            self.save({k: v for k, v in state.items() if k not in PROCESSES})

    def running(self) -> bool:
        state = self.load()
        return bool(state) and all(_owns(name, state.get(name) or {}) for name in PROCESSES)

    def env(self) -> dict[str, str]:
        """What the Dagster side needs to reach this Airflow (empty when it is not running)."""
        if not self.running():
            return {}
        credentials = self._credentials()
        return {
            "AIRFLOW_URL": self.url,
            "AIRFLOW_USERNAME": credentials["username"],
            "AIRFLOW_PASSWORD": credentials["password"],
        }

    def status(self) -> list[dict]:
        state = self.load()
        return [
            {
                "name": f"airflow-{name}",
                "url": state.get("url", self.url),
                "pid": state[name]["pid"],
                "running": _owns(name, state[name]),
            }
            for name in PROCESSES
            if name in state
        ]

    # ---- configuration ---------------------------------------------------------------
    def process_env(self, credentials: dict[str, str]) -> dict[str, str]:
        """Airflow's own configuration, as AIRFLOW__SECTION__KEY variables (the environment wins)."""
        config = {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "SequentialExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
            "AIRFLOW__API__AUTH_BACKENDS": "airflow.api.auth.backend.basic_auth,airflow.api.auth.backend.session",
            "AIRFLOW__WEBSERVER__WEB_SERVER_HOST": "127.0.0.1",
            "AIRFLOW__WEBSERVER__WEB_SERVER_PORT": str(self.port),
            "AIRFLOW__WEBSERVER__WORKERS": "2",
            "AIRFLOW__WEBSERVER__SECRET_KEY": credentials["secret_key"],
            "AIRFLOW__WEBSERVER__EXPOSE_CONFIG": "False",
            # New and changed DAG files show up within seconds, not the default 5 minutes.
            "AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL": "10",
            "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "DAGSTER_URL": "http://127.0.0.1:3000",
        }
        passthrough = {
            k: v
            for k, v in self.environ.items()
            if k.startswith("AIRFLOW__") or k in ("DAGSTER_URL", "PARTNER_DROP_DIR")
        }
        env = {**os.environ, **config, **passthrough}
        # The scheduler runs every task as `airflow tasks run ...` found on PATH: it must be this venv's.
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env.pop("PYTHONPATH", None)
        return env

    def _credentials(self) -> dict[str, str]:
        """AIRFLOW_USERNAME/AIRFLOW_PASSWORD when set.

        Else a password generated once and kept (0600) in the state folder.
        """
        path = self.home / "credentials.json"
        stored = json.loads(path.read_text()) if path.exists() else {}
        credentials = {
            "username": self.environ.get("AIRFLOW_USERNAME") or stored.get("username") or DEFAULT_USERNAME,
            "password": self.environ.get("AIRFLOW_PASSWORD") or stored.get("password") or secrets.token_hex(16),
            "secret_key": stored.get("secret_key") or secrets.token_urlsafe(24),
        }
        if credentials != stored:
            write_private(path, json.dumps(credentials))  # owner-only from its first byte
        return credentials

    def _ensure_user(self, env: dict[str, str], credentials: dict[str, str]) -> None:
        """An Admin user for the UI and the REST API; its password follows the current credentials."""
        existing = subprocess.run(
            [str(self.airflow_bin), "users", "list", "--output", "json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        names = {u.get("username") for u in json.loads(existing.stdout or "[]")} if existing.returncode == 0 else set()
        if credentials["username"] in names:  # `users reset-password` crashes in Airflow 2.11 (FAB); re-create instead
            _run(
                [str(self.airflow_bin), "users", "delete", f"--username={credentials['username']}"],
                "airflow users delete",
                env=env,
                timeout=300,
            )
        # `--option=value`: a password that starts with "-" would otherwise read as an option.
        cmd = [
            "users",
            "create",
            f"--username={credentials['username']}",
            f"--password={credentials['password']}",
            "--role",
            "Admin",
            "--firstname",
            "Movie",
            "--lastname",
            "Platform",
            "--email",
            "admin@localhost",
        ]
        _run(
            [str(self.airflow_bin), *cmd],
            f"airflow users ({credentials['username']})",
            env=env,
            timeout=300,
            secret=credentials["password"],
        )

    # ---- processes ---------------------------------------------------------------------
    def _wait_healthy(self, state: dict, credentials: dict[str, str]) -> None:
        """Until the REST API answers with basic auth and the scheduler has a fresh heartbeat."""
        deadline = time.monotonic() + START_TIMEOUT_S
        auth = (credentials["username"], credentials["password"])
        last = "no answer yet"
        while time.monotonic() < deadline:
            for name in PROCESSES:
                if not _alive(state[name]["pid"]):
                    raise StackError(
                        f"airflow {name} exited during start; see {state[name]['log']}:\n{tail(state[name]['log'])}"
                    )
            try:
                health = requests.get(f"{self.url}/api/v1/health", timeout=2).json()
                dags = requests.get(f"{self.url}/api/v1/dags?limit=1", auth=auth, timeout=5)
                last = f"health {health}, dags {dags.status_code}"
                if health.get("scheduler", {}).get("status") == "healthy" and dags.status_code == 200:
                    return
            except (requests.RequestException, ValueError) as exc:
                last = type(exc).__name__
            time.sleep(1)
        raise StackError(
            f"airflow did not become healthy on {self.url} in {START_TIMEOUT_S}s ({last}); "
            f"see {state['webserver']['log']} and {state['scheduler']['log']}"
        )

    def load(self) -> dict:
        return json.loads(self.state_file.read_text()) if self.state_file.exists() else {}

    def save(self, state: dict) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(state, indent=2))


def _owns(name: str, entry: dict) -> bool:
    """The recorded webserver/scheduler still runs as the process we started.

    Entries from before start times were recorded count while the PID runs `airflow <name>`.
    """

    def legacy(proc: psutil.Process) -> bool:
        cmdline = " ".join(proc.cmdline())
        return "airflow" in cmdline and name in cmdline

    return is_ours(entry, legacy=legacy)


def _run(
    cmd: list[str], what: str, env: dict[str, str] | None = None, timeout: float = 300, secret: str | None = None
) -> None:
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout)
    if result.returncode != 0:
        output = (result.stderr.strip() or result.stdout.strip())[-2000:]
        if secret:
            output = output.replace(secret, "***")
        raise StackError(f"{what} failed ({result.returncode}): {output}")
