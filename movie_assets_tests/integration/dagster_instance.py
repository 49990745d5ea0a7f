"""A Dagster instance of a test's own, and the real `dagster-daemon run` on it (daemon and dead-run tests)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

from movie_platform.local_stack import REPO_ROOT, write_dagster_home


@contextmanager
def own_instance_home(db_url: str, home: Path, prefix: str, **options) -> Iterator[Path]:
    """DAGSTER_HOME `home` as `movie-platform up` writes it, on a fresh database that is dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    write_dagster_home(home, db_url, database=name, **options)
    try:
        yield home
    finally:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


def start_daemon(env: dict, log_file: Path) -> subprocess.Popen:
    """`dagster-daemon run` in its own process group: its code server and run workers stop with it."""
    with open(log_file, "ab") as out:
        return subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-m", "movie_assets"],
            env=env,
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def daemon_env(home: Path, database, object_store, tmdb_url: str, **extra: str) -> dict[str, str]:
    """The daemon's environment: the test's instance, schema, store and TMDB server; no Airflow bridge."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "DAGSTER_"))}
    env.update(
        DAGSTER_HOME=str(home),
        MOVIE_DB_URL=database.url,
        MOVIE_DB_SCHEMA=database.db_schema,
        MOVIE_STORAGE_URL=object_store.storage_url,
        TMDB_SOURCE="api",
        TMDB_BASE_URL=tmdb_url,
        TMDB_API_KEY="test-key",
        **extra,
    )
    return env
