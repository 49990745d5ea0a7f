"""One `sync_tmdb_changes` run as a process, so a test can SIGKILL it mid-sync.

`python -m movie_assets_tests.integration.sync_runner` with MOVIE_DB_URL, MOVIE_DB_SCHEMA,
MOVIE_REDIS_URL, MOVIE_STORAGE_URL, TMDB_BASE_URL and FEAST_PROJECT set.
"""

import os
import sys

import dagster as dg

from movie_assets.jobs.sync_tmdb_changes import sync_tmdb_changes
from movie_assets.resources.feast import FeastStore
from movie_assets.resources.object_store import ObjectStore
from movie_assets.resources.postgres import PostgresDatabase
from movie_assets.resources.tmdb import TmdbApiClient


def start_sync(database, object_store, redis_url: str, tmdb_url: str, feast_project: str, **popen):
    """A sync process on these stores and this TMDB server (the resources `resources_from_env` builds there)."""
    import subprocess

    from movie_platform.local_stack import REPO_ROOT

    env = {
        **os.environ,
        "MOVIE_DB_URL": database.url,
        "MOVIE_DB_SCHEMA": database.db_schema,
        "MOVIE_REDIS_URL": redis_url,
        "MOVIE_STORAGE_URL": object_store.storage_url,
        "TMDB_BASE_URL": tmdb_url,
        "FEAST_PROJECT": feast_project,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "movie_assets_tests.integration.sync_runner"],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        **popen,
    )


def resources_from_env() -> dict:
    env = os.environ
    return {
        "tmdb": TmdbApiClient(base_url=env["TMDB_BASE_URL"], api_key="test-key", requests_per_second=500),
        "database": PostgresDatabase(url=env["MOVIE_DB_URL"], db_schema=env["MOVIE_DB_SCHEMA"]),
        "object_store": ObjectStore(storage_url=env["MOVIE_STORAGE_URL"]),
        "feast": FeastStore(
            db_url=env["MOVIE_DB_URL"],
            redis_url=env["MOVIE_REDIS_URL"],
            storage_url=env["MOVIE_STORAGE_URL"],
            project=env["FEAST_PROJECT"],
        ),
    }


if __name__ == "__main__":
    result = sync_tmdb_changes.execute_in_process(
        resources=resources_from_env(), instance=dg.DagsterInstance.ephemeral()
    )
    sys.exit(0 if result.success else 1)
