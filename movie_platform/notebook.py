"""Connections for notebooks: the same settings and stores as the assets, in one import.

    from movie_platform import notebook as nb
    nb.sql("select * from movies_complete limit 5")

Settings come from the environment (compose, or `eval "$(movie-platform env)"`), and
fall back to the running embedded stack, so a notebook never carries connection code.
Import it first: it quiets two library warnings that would otherwise print in every run.
"""

from __future__ import annotations

import os
import warnings

import pandas as pd

from movie_assets.domain.point_in_time import ignore_dask_downcasting
from movie_assets.settings import Settings
from movie_platform.local_stack import Stack


def quiet_library_warnings() -> None:
    """Filter two warnings that are the libraries' business, each by category, message and module.

    - dask computing divisions for Feast's point-in-time join (Dask offline store) bfills an object
      column: pandas' FutureWarning about downcasting, once per retrieval, nothing we can pass differently.
    - `import mlflow` imports `tqdm.auto` (mlflow.genai), which in a kernel without ipywidgets warns
      that it falls back to text progress bars; the text bars work.
    """
    from tqdm import TqdmWarning

    ignore_dask_downcasting()
    warnings.filterwarnings("ignore", message="IProgress not found", category=TqdmWarning, module=r"tqdm\.auto")


quiet_library_warnings()


def settings() -> Settings:
    return Settings.from_env({**Stack().env(), **os.environ})


def database():
    from movie_assets.resources.postgres import PostgresDatabase

    current = settings()
    if not current.db_url:
        raise RuntimeError("MOVIE_DB_URL is not set and no embedded stack runs: `movie-platform up` first")
    return PostgresDatabase(url=current.db_url, db_schema=current.db_schema)


def sql(query: str, params: tuple = ()) -> pd.DataFrame:
    """A query against the data database (schema MOVIE_DB_SCHEMA on the search path) as a DataFrame."""
    from psycopg import sql as pgsql

    db = database()
    with db.connect("running a notebook query") as conn:
        conn.execute(pgsql.SQL("set search_path to {}").format(pgsql.Identifier(db.db_schema)))
        cursor = conn.execute(query, params or None)
        columns = [column.name for column in cursor.description]
        return pd.DataFrame(cursor.fetchall(), columns=columns)


def object_root():
    """The object store root (S3 or folder) as a UPath: `pd.read_parquet(path.open("rb"))` reads any object."""
    from movie_assets.resources.object_store import object_root_for

    return object_root_for(settings())


def feature_store():
    from movie_assets.resources.feast import FeastStore

    return FeastStore.from_settings(settings()).store()


def mlflow_tracking():
    from movie_assets.resources.mlflow import MlflowTracking

    current = settings()
    if not current.mlflow_tracking_uri:
        raise RuntimeError("MLFLOW_TRACKING_URI is not set and no embedded stack runs: `movie-platform up` first")
    return MlflowTracking.from_settings(current)


def mlflow_runs() -> pd.DataFrame:
    """The runs of the platform's experiment, newest first, as MLflow's DataFrame (`metrics.*`, `params.*`)."""
    import mlflow

    tracking = mlflow_tracking()
    mlflow.set_tracking_uri(tracking.tracking_uri)
    return mlflow.search_runs(experiment_names=[tracking.experiment], order_by=["attributes.start_time DESC"])
