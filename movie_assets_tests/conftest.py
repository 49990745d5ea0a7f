"""Session fixtures: one embedded stack for the whole run (or the external services the env names).

The test stack lives in its own state folder and on its own ports, so `make test`
never touches a developer's `make dev` stack. It is stopped at the end of the
session if the session started it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from movie_platform.local_stack import REPO_ROOT, Stack

TEST_STATE_DIR = REPO_ROOT / ".movie_platform" / "test-stack"
# Below the ephemeral port range, like the defaults, and apart from them.
TEST_PORTS = {
    "MOVIE_PG_PORT": "25432",
    "MOVIE_REDIS_PORT": "26379",
    "MOVIE_MLFLOW_PORT": "25000",
    "MOVIE_S3_PORT": "29000",
}


def _session_environ() -> dict[str, str]:
    """The environment as the session found it: what it names is external, the rest is embedded.

    Variables that merely point at the developer's own embedded stack (after
    `eval "$(movie-platform env)"`) are dropped, so tests never write into it.
    """
    dev_stack = Stack().env()
    return {**TEST_PORTS, **{k: v for k, v in os.environ.items() if dev_stack.get(k) != v}}


SESSION_ENVIRON = _session_environ()


def pytest_configure(config) -> None:
    """Stop signals reach the processes the tests start, however pytest was started.

    Started with `&` from a non-interactive shell (`make test &`, a CI step in the background),
    pytest inherits SIGINT ignored, and so would every process it starts: `dagster dev`, the
    daemon and code servers (which map SIGTERM to their SIGINT handler) then ignore the
    fixtures' stop signals and sit out each timeout before the SIGKILL (65 s per Airflow test
    teardown). A handler installed here is reset to the default in each child at exec.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)


def free_port() -> int:
    """A loopback port nothing listens on right now: bound, read, released."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_to_pytest(prefix: str):
    return lambda msg: print(f"[{prefix}] {msg}")


def wait_for(condition, timeout: float, what: str, log_file: Path | None = None, interval: float = 0.2) -> None:
    """Poll `condition` until it holds; else fail naming `what`, with the tail of the service's log.

    An HTTP error while polling counts as "not yet" (a server that is still starting).
    """
    import time

    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except requests.RequestException:
            pass
        time.sleep(interval)
    from movie_platform.local_stack import tail

    pytest.fail(f"timed out after {timeout}s waiting for {what}\n{tail(log_file, 30) if log_file else ''}")


def stop_process_group(proc: subprocess.Popen, sig: int, timeout: float = 30) -> None:
    """Stop a process group the test started itself (start_new_session=True): `sig`, then SIGKILL."""
    from movie_platform.browser import stop_process_group as stop

    stop(proc, sig, timeout)


def forget_earlier_sessions(db_url: str, log) -> None:
    """Start from what a fresh clone's test stack holds, wherever the embedded one kept data from earlier sessions.

    - Feast's registry: every test applies a project of its own, and Feast's SQL registry reads
      every project's objects each time a FeatureStore is built, so the projects of a few hundred
      earlier sessions made each build take seconds (the simulated year's days took 2.5x longer).
    - The change sync's ledger and cursor: ids fetched today are not fetched again, so a second
      session's demo sync changed nothing and the tests of what it touched had nothing to see.
    """
    import psycopg
    from psycopg import sql

    from movie_assets.settings import database_url

    with psycopg.connect(database_url(db_url, "feast"), autocommit=True) as conn:
        tables = [row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        projects = conn.execute("SELECT count(*) FROM projects").fetchone()[0] if "projects" in tables else 0
        if tables:
            conn.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(map(sql.Identifier, tables))))
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS public.tmdb_sync_fetched, public.tmdb_sync_cursor, public.store_outbox")
    log(f"test stack reset: {projects} Feast projects of earlier sessions dropped, change-sync ledger cleared")


@pytest.fixture(scope="session")
def test_stack() -> Stack:
    return Stack(TEST_STATE_DIR, environ=SESSION_ENVIRON)


@pytest.fixture(scope="session")
def stack_env(test_stack: Stack):
    """Env of the running test stack, exported into os.environ for the code under test."""
    env = test_stack.up(log=log_to_pytest("stack"))
    if "MOVIE_DB_URL" not in SESSION_ENVIRON:  # the session's own PostgreSQL, never an external one
        forget_earlier_sessions(env["MOVIE_DB_URL"], log_to_pytest("stack"))
    os.environ.update(env)
    yield env
    if not os.environ.get("MOVIE_KEEP_TEST_STACK"):
        test_stack.down(log=log_to_pytest("stack"))


@pytest.fixture(scope="session")
def s3_stack(stack_env) -> Stack:
    """A second stack in S3 mode: the S3 API server plus an MLflow server whose artifacts go to S3.

    It takes the session's PostgreSQL and Redis as external services, so it also
    exercises `up --with-s3` and the external-service path of `up`.
    """
    environ = {
        **{k: v for k, v in SESSION_ENVIRON.items() if k != "MOVIE_STORAGE_URL"},
        "MOVIE_DB_URL": stack_env["MOVIE_DB_URL"],
        "MOVIE_REDIS_URL": stack_env["MOVIE_REDIS_URL"],
        "MOVIE_MLFLOW_PORT": str(int(TEST_PORTS["MOVIE_MLFLOW_PORT"]) + 1),
    }
    return Stack(TEST_STATE_DIR / "s3", environ=environ)


@pytest.fixture(scope="session")
def s3_stack_env(s3_stack: Stack):
    env = s3_stack.up(with_s3=True, log=log_to_pytest("s3 stack"))
    yield env
    s3_stack.down(log=log_to_pytest("s3 stack"))


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def database(stack_env, request):
    """A PostgresDatabase on a schema of its own, dropped afterwards: tests never see each other's rows."""
    import uuid

    import psycopg
    from psycopg import sql

    from movie_assets.resources.postgres import PostgresDatabase

    name = re.sub(r"[^a-z0-9_]", "_", request.node.name[:30].lower())
    schema = f"test_{name}_{uuid.uuid4().hex[:6]}"
    yield PostgresDatabase(url=stack_env["MOVIE_DB_URL"], db_schema=schema)
    with psycopg.connect(stack_env["MOVIE_DB_URL"], autocommit=True) as conn:
        conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))


@pytest.fixture
def object_store(tmp_path):
    from movie_assets.resources.object_store import ObjectStore

    return ObjectStore(storage_url=(tmp_path / "objects").as_uri())


@pytest.fixture
def s3_object_store(s3_stack_env, request):
    """An ObjectStore on the S3 API server, under a prefix of its own."""
    import uuid

    from dagster_aws.s3 import S3Resource

    from movie_assets.resources.object_store import ObjectStore

    s3 = S3Resource(
        endpoint_url=s3_stack_env["MOVIE_S3_ENDPOINT_URL"],
        aws_access_key_id=s3_stack_env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=s3_stack_env["AWS_SECRET_ACCESS_KEY"],
        region_name=s3_stack_env["AWS_DEFAULT_REGION"],
    )
    return ObjectStore(storage_url=f"{s3_stack_env['MOVIE_STORAGE_URL']}/tests/{uuid.uuid4().hex[:8]}", s3=s3)


def movie_platform_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`movie-platform ARGS` in a fresh process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "movie_platform.cli", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def own_feast_project(stack_env: dict, storage_url: str, redis_url: str | None = None, prefix: str = "t"):
    """A Feast project of the test's own: the default one belongs to the demo's data (notebooks, CLI tests)."""
    from movie_assets.resources.feast import FeastStore

    return FeastStore(
        db_url=stack_env["MOVIE_DB_URL"],
        redis_url=redis_url or stack_env["MOVIE_REDIS_URL"],
        storage_url=storage_url,
        project=f"{prefix}{uuid.uuid4().hex[:10]}",
    )


@contextlib.contextmanager
def own_tracking(stack_env: dict, prefix: str):
    """An MLflow experiment and registered model of the test's own; the model is deleted afterwards."""
    from mlflow.tracking import MlflowClient

    from movie_assets.resources.mlflow import MlflowTracking

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    yield MlflowTracking(tracking_uri=stack_env["MLFLOW_TRACKING_URI"], experiment=name, registered_model=name)
    client = MlflowClient(stack_env["MLFLOW_TRACKING_URI"])
    if client.search_registered_models(f"name = '{name}'"):
        client.delete_registered_model(name)


def s3_client(env: dict):
    """boto3 against the S3 API server the env names, with its credentials."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=env["MOVIE_S3_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )


def with_storage_checks(*assets) -> list:
    """The assets plus the storage checks (movie_assets/checks.py) on them, for `dg.materialize`."""
    from movie_assets.checks import STORAGE_CHECKS

    keys = {key for asset in assets for key in asset.keys}
    return [*assets, *(check for check in STORAGE_CHECKS if check.check_key.asset_key in keys)]


def platform_resources(database, object_store, tmdb) -> dict:
    """The resources of definitions.py, pointed at the test's schema, store and TMDB source."""
    from movie_assets.resources.object_store import ObjectStoreIOManager
    from movie_assets.resources.postgres import PostgresIOManager

    return {
        "tmdb": tmdb,
        "database": database,
        "postgres_io_manager": PostgresIOManager(database=database),
        "object_store": object_store,
        "object_store_io_manager": ObjectStoreIOManager(store=object_store),
    }


def run_demo(test_stack: Stack, stack_env: dict) -> subprocess.CompletedProcess:
    """`movie-platform demo` on the test stack (public schema, default names), as a user runs it."""
    env = {**os.environ, **stack_env, "MOVIE_PLATFORM_STATE_DIR": str(test_stack.state_dir)}
    return subprocess.run(
        [sys.executable, "-m", "movie_platform.cli", "demo"], capture_output=True, text=True, env=env, timeout=1800
    )


@pytest.fixture(scope="session")
def demo_run(test_stack, stack_env):
    """`movie-platform demo` once per session on the test stack: the data a user has."""
    return run_demo(test_stack, stack_env)
