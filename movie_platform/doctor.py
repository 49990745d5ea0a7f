"""`movie-platform doctor`: one line per configured service, never a traceback.

Each check talks to the real service with a short timeout and turns a failure
into a sentence that names the service, the URL (secrets redacted) and what to do.
The last line is the Dagster instance's: runs stuck in STARTED whose worker is gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from movie_assets.settings import SettingError, Settings, redact_text, redact_url
from movie_platform.local_stack import DEFAULT_PORTS, Stack

TIMEOUT_S = 5


@dataclass(frozen=True)
class CheckResult:
    service: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'OK  ' if self.ok else 'FAIL'}  {self.service:<12} {self.detail}"


def not_set(var: str) -> str:
    return f'{var} is not set: run `movie-platform up` and `eval "$(movie-platform env)"`, or set {var}'


def configured(value: str | None, var: str) -> str:
    """The setting a check needs; `run_checks` skips unset services, a direct call gets this sentence."""
    if not value:
        raise ValueError(not_set(var))
    return value


def check_postgres(settings: Settings) -> str:
    import psycopg

    from movie_assets.resources.postgres.schema import schema_name_problem

    url = configured(settings.db_url, "MOVIE_DB_URL")
    if problem := schema_name_problem(settings.db_schema):  # what every run's database resource refuses at load
        raise SettingError(f"MOVIE_DB_SCHEMA={settings.db_schema!r} is refused by every run: {problem}")
    with psycopg.connect(url, connect_timeout=TIMEOUT_S) as conn:
        row = conn.execute("show server_version").fetchone()
    assert row is not None, "SHOW always returns one row"
    return f"PostgreSQL {row[0]} at {redact_url(url)} (schema {settings.db_schema})"


def check_redis(settings: Settings) -> str:
    import redis

    url = configured(settings.redis_url, "MOVIE_REDIS_URL")
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # No retries: redis-py would retry a refused password with backoff for ~6 s before saying so.
    client = redis.Redis.from_url(
        url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S, retry=Retry(NoBackoff(), 0)
    )
    # redis-py annotates sync and async replies alike (Awaitable | Any); the sync client returns a dict.
    version = client.info("server")["redis_version"]  # type: ignore[index]
    return f"Redis {version} at {redact_url(url)}"


def check_object_store(settings: Settings) -> str:
    from movie_assets.resources.object_store import object_root_for, write_atomically

    probe = object_root_for(settings) / ".doctor" / f"{uuid.uuid4().hex}.txt"
    write_atomically(probe, b"ok")
    assert probe.read_text() == "ok", "read back a different object than was written"
    probe.unlink()
    where = f" via {settings.s3_endpoint_url}" if settings.s3_endpoint_url else ""
    return f"read/write OK at {redact_url(settings.storage_url)}{where}"


def check_mlflow(settings: Settings) -> str:
    import requests

    url = configured(settings.mlflow_tracking_uri, "MLFLOW_TRACKING_URI")
    response = requests.get(url.rstrip("/") + "/health", timeout=TIMEOUT_S)
    response.raise_for_status()
    return f"tracking server healthy at {redact_url(url)}"


# service -> (env var that configures it, the check, what to do when it fails)
CHECKS: dict[str, tuple[str, Callable[[Settings], str], str]] = {
    "postgres": ("MOVIE_DB_URL", check_postgres, "start it with `movie-platform up` or fix MOVIE_DB_URL"),
    "redis": ("MOVIE_REDIS_URL", check_redis, "start it with `movie-platform up` or fix MOVIE_REDIS_URL"),
    "objectstore": (
        "MOVIE_STORAGE_URL",
        check_object_store,
        "check MOVIE_STORAGE_URL, MOVIE_S3_ENDPOINT_URL and the AWS_* credentials",
    ),
    "mlflow": ("MLFLOW_TRACKING_URI", check_mlflow, "start it with `movie-platform up` or fix MLFLOW_TRACKING_URI"),
}
# What PostgreSQL and Redis say to a missing or wrong password (libpq's and Redis' own wording).
AUTH_FAILURES = (
    "password authentication failed",
    "no password supplied",
    "Authentication required",
    "invalid username",
)
CREDENTIALS_REMEDY = (
    'run `eval "$(movie-platform env)"` again (the embedded stack\'s passwords are in .movie_platform/secrets.json; '
    "`movie-platform rotate-secrets` changes them), or fix the password in {var}"
)
SETTING_OF = {
    "postgres": "db_url",
    "redis": "redis_url",
    "objectstore": "storage_url",
    "mlflow": "mlflow_tracking_uri",
}


def run_checks(settings: Settings, stack: Stack | None = None) -> list[CheckResult]:
    """Every service's line, then the Dagster instance's runs; `stack` is the embedded stack (ports, DAGSTER_HOME).

    What the stack recorded fills what the shell does not set (as `settings` was built): doctor works
    in a fresh shell, without `eval "$(movie-platform env)"`.
    """
    stack = stack or Stack()
    results = []
    for service, (var, check, remedy) in CHECKS.items():
        if not getattr(settings, SETTING_OF[service]):
            results.append(CheckResult(service, False, port_taken(stack, service, var) or not_set(var)))
            continue
        try:
            results.append(CheckResult(service, True, check(settings)))
        except Exception as exc:  # noqa: BLE001 - every failure becomes one readable line
            reason = redact_text(_first_line(exc))
            where = redact_url(getattr(settings, SETTING_OF[service]))
            if isinstance(exc, SettingError):  # the service may be fine; the variable is not
                line = reason
            elif any(sign in reason for sign in AUTH_FAILURES):
                line = f"refuses the credentials in {var} at {where}: {reason} -> {CREDENTIALS_REMEDY.format(var=var)}"
            else:
                line = f"unreachable at {where}: {reason} -> {remedy}"
            results.append(CheckResult(service, False, line))
    results.append(check_tmdb(settings))
    recorded = stack.env()
    results.append(check_dagster_runs(os.environ.get("DAGSTER_HOME") or recorded.get("DAGSTER_HOME"), recorded))
    return results


# doctor's service -> the embedded stack's service of the same port
STACK_SERVICE = {"postgres": "postgres", "redis": "redis", "mlflow": "mlflow"}
STACK_SERVICE_NAME = {"postgres": "PostgreSQL", "redis": "Redis", "mlflow": "MLflow"}


def port_taken(stack: Stack, service: str, var: str) -> str | None:
    """Why `var` is unset when the embedded stack could not start: its port is someone else's.

    `movie-platform up` refuses to start a service on a port another process holds, and then sets
    no variable; "not set" alone would send the user to run `up` again.
    """
    if service not in STACK_SERVICE:
        return None
    if any(row["name"] == STACK_SERVICE[service] and row["running"] for row in stack.status()):
        return None  # the stack's own server holds it: the shell just lacks `eval "$(movie-platform env)"`
    port = stack.port(STACK_SERVICE[service])
    with socket.socket() as sock:
        sock.settimeout(0.5)
        if sock.connect_ex(("127.0.0.1", port)) != 0:
            return None
    port_var = DEFAULT_PORTS[STACK_SERVICE[service]][0]
    return (
        f"{var} is not set, and port {port} on 127.0.0.1 (the embedded {STACK_SERVICE_NAME[service]}'s) is taken "
        f"by a process this stack did not start -> stop that process or set {port_var} to a free port, then run "
        f"`movie-platform up`; or set {var} to the server you mean"
    )


def check_dagster_runs(dagster_home: str | None, recorded: Mapping[str, str] | None = None) -> CheckResult:
    """Runs stuck in STARTED whose worker is gone: they hold their pool slots (tmdb_api) until failed.

    Asked the way run monitoring asks (`RunWorkerCheckingLauncher`'s health check); nothing is signalled.
    The instance's dagster.yaml reads its password from the environment: what the stack recorded
    (`recorded`) stands in for a variable the shell does not set.
    """
    if not dagster_home:
        return CheckResult("dagster", False, not_set("DAGSTER_HOME"))
    try:
        with variables_defaulted(recorded or {}):
            stuck = stuck_runs(Path(dagster_home))
    except Exception as exc:  # noqa: BLE001 - one readable line, like every other check
        unset = sorted(set(re.findall(r"\b(MOVIE_[A-Z_]+)\b", str(exc))) - set(os.environ))
        if unset:
            why = f"its dagster.yaml reads {', '.join(unset)}, which is not set"
            fix = 'start the stack (`movie-platform up`), or configure this shell: eval "$(movie-platform env)"'
        else:
            why = redact_text(_first_line(exc))
            fix = "check DAGSTER_HOME and its dagster.yaml (start its PostgreSQL with `movie-platform up`)"
        return CheckResult("dagster", False, f"cannot read the instance at {dagster_home}: {why} -> {fix}")
    if not stuck:
        return CheckResult("dagster", True, f"instance at {dagster_home}: no run stuck in STARTED")
    listed = "; ".join(f"{run_id} ({label}): {reason}" for run_id, label, reason in stuck)
    first = stuck[0][0]
    return CheckResult(
        "dagster",
        False,
        f"{len(stuck)} run(s) STARTED whose worker is gone, holding their pool slots (later crawls wait on "
        f"tmdb_api): {listed} -> run the same command again (every run of this code location first fails the "
        "dead runs of this host and frees their slots, and a crawl resumes), or start the daemon (`make dev`, or "
        "`dagster-daemon run` with this DAGSTER_HOME): run monitoring marks them failed within a minute; or delete "
        f"each one with its history: `dagster run delete -f {first}`",
    )


@contextlib.contextmanager
def variables_defaulted(defaults: Mapping[str, str]) -> Iterator[None]:
    """`defaults` in os.environ for the block, where the shell sets nothing of its own; then as it was."""
    added = {name: value for name, value in defaults.items() if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def stuck_runs(home: Path) -> list[tuple[str, str, str]]:
    """(run id, job and partition, why) of each STARTED run whose worker the health check finds gone."""
    import dagster as dg

    from movie_assets.automation.run_launcher import run_worker_health
    from movie_assets.dagster_private import WorkerStatus

    with dg.DagsterInstance.from_config(str(home)) as instance:
        stuck = []
        for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
            health = run_worker_health(instance, run)
            if health.status == WorkerStatus.FAILED:
                partition = run.tags.get("dagster/partition")
                label = f"{run.job_name} {partition}" if partition else run.job_name
                stuck.append((run.run_id, label, str(health.msg)))
        return stuck


def check_tmdb(settings: Settings) -> CheckResult:
    """The sample needs nothing; the API gets one authenticated request (GET /configuration)."""
    if settings.tmdb_source != "api":
        return CheckResult(
            "tmdb",
            True,
            "sample source (deterministic, offline); set TMDB_API_KEY or TMDB_READ_ACCESS_TOKEN to crawl the real API",
        )
    import requests

    key, token = os.environ.get("TMDB_API_KEY"), os.environ.get("TMDB_READ_ACCESS_TOKEN")
    try:
        response = requests.get(
            settings.tmdb_base_url.rstrip("/") + "/configuration",
            timeout=TIMEOUT_S,
            params={"api_key": key} if key and not token else None,
            headers={"Authorization": f"Bearer {token}"} if token else None,
        )
    except requests.RequestException as exc:
        return CheckResult(
            "tmdb",
            False,
            f"unreachable at {settings.tmdb_base_url}: {type(exc).__name__} -> check TMDB_BASE_URL and the network",
        )
    if response.status_code == 401:
        return CheckResult(
            "tmdb",
            False,
            f"TMDB at {settings.tmdb_base_url} refused the credentials (401) -> set a valid TMDB_API_KEY or "
            "TMDB_READ_ACCESS_TOKEN",
        )
    if response.status_code != 200:
        return CheckResult(
            "tmdb", False, f"TMDB at {settings.tmdb_base_url} answered {response.status_code} -> check TMDB_BASE_URL"
        )
    return CheckResult("tmdb", True, f"TMDB API at {settings.tmdb_base_url}, credentials accepted")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()
