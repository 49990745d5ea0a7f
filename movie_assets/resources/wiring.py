"""Resources built from the environment: the one place that maps env vars to resources.

Values come through `dg.EnvVar`, so secrets (DB passwords, TMDB keys, AWS keys) are
resolved at run time and never shown in the UI or the event log. Optional variables
are wired only when set at load time.
"""

from __future__ import annotations

import os

import dagster as dg
from dagster_aws.s3 import S3Resource

from movie_assets.resources.feast import PROJECT as FEAST_PROJECT
from movie_assets.resources.feast import FeastStore
from movie_assets.resources.mlflow import MlflowTracking
from movie_assets.resources.object_store import ObjectStore, ObjectStoreIOManager
from movie_assets.resources.postgres import PostgresDatabase, PostgresIOManager
from movie_assets.resources.tmdb import TmdbApiClient, TmdbSource
from movie_assets.resources.tmdb_sample import TmdbSampleSource
from movie_assets.settings import Settings


def _env_if_set(**names: str) -> dict:
    return {field: dg.EnvVar(var) for field, var in names.items() if os.environ.get(var)}


def tmdb_source(settings: Settings) -> TmdbSource:
    if settings.tmdb_source == "sample":
        return TmdbSampleSource()
    if settings.tmdb_source != "api":
        raise ValueError(f"TMDB_SOURCE must be `api` or `sample`, not {settings.tmdb_source!r}")
    return TmdbApiClient(
        base_url=settings.tmdb_base_url,
        **_env_if_set(api_key="TMDB_API_KEY", read_access_token="TMDB_READ_ACCESS_TOKEN"),
    )


def build_resources(settings: Settings | None = None) -> dict:
    settings = settings or Settings.from_env()
    database = PostgresDatabase(url=dg.EnvVar("MOVIE_DB_URL"), db_schema=settings.db_schema)
    s3 = S3Resource(
        **_env_if_set(
            endpoint_url="MOVIE_S3_ENDPOINT_URL",
            aws_access_key_id="AWS_ACCESS_KEY_ID",
            aws_secret_access_key="AWS_SECRET_ACCESS_KEY",
            aws_session_token="AWS_SESSION_TOKEN",
            region_name="AWS_DEFAULT_REGION",
        )
    )
    store = ObjectStore(storage_url=dg.EnvVar("MOVIE_STORAGE_URL"), s3=s3)
    return {
        "tmdb": tmdb_source(settings),
        "database": database,
        "postgres_io_manager": PostgresIOManager(database=database),
        "object_store": store,
        "object_store_io_manager": ObjectStoreIOManager(store=store),
        "mlflow_tracking": MlflowTracking(
            tracking_uri=dg.EnvVar("MLFLOW_TRACKING_URI"),
            experiment=settings.mlflow_experiment,
            registered_model=settings.model_name,
        ),
        "feast": FeastStore(
            db_url=dg.EnvVar("MOVIE_DB_URL"),
            redis_url=dg.EnvVar("MOVIE_REDIS_URL"),
            storage_url=dg.EnvVar("MOVIE_STORAGE_URL"),
            **_env_if_set(s3_endpoint_url="MOVIE_S3_ENDPOINT_URL"),
            project=settings.feast_project or FEAST_PROJECT,
        ),
    }
