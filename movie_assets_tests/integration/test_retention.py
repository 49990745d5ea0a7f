"""`prune_history` keeps each growing store to its window, and never what the platform still reads.

Real PostgreSQL, a real Dagster instance and the stack's MLflow; the clock is moved past the
windows instead of waiting for them.
"""

import datetime as dt

import dagster as dg
import pandas as pd
import pytest
from psycopg import sql

from movie_assets.domain import clock
from movie_assets.jobs.retention import prune_history
from movie_assets.resources.mlflow import MlflowTracking
from movie_assets.resources.postgres import copy_frame
from movie_assets_tests.conftest import own_tracking

DAY = dt.timedelta(days=1)


@pytest.fixture
def tracking(stack_env):
    with own_tracking(stack_env, "retention") as tracking:
        yield tracking


@dg.asset(partitions_def=dg.StaticPartitionsDefinition(["a", "b"]))
def counted() -> dg.MaterializeResult:
    return dg.MaterializeResult()


def two_mlflow_runs(tracking: MlflowTracking) -> tuple[str, str]:
    """(a run behind a registered version, a run behind none)."""
    import mlflow

    tracking.activate()
    client = tracking.client()
    with mlflow.start_run() as registered:
        mlflow.log_metric("rmse", 1.0)
    client.create_registered_model(tracking.registered_model)
    client.create_model_version(
        tracking.registered_model, f"runs:/{registered.info.run_id}/model", registered.info.run_id
    )
    with mlflow.start_run() as plain:
        mlflow.log_metric("rmse", 2.0)
    return registered.info.run_id, plain.info.run_id


def seed_feature_history(database, object_store, later: dt.datetime) -> None:
    """A superseded row of 2024-01 from 500 days before `later` and one from 10 days before, in both stores."""
    from movie_assets.assets.features import FEATURE_HISTORY_COLUMNS
    from movie_assets.object_layout import FEATURES_HISTORY_PATH

    template = {name: None for name in FEATURE_HISTORY_COLUMNS}
    rows = pd.DataFrame(
        [
            {
                **template,
                "movie_id": 1,
                "release_month": dt.date(2024, 1, 1),
                "event_timestamp": later - 600 * DAY,
                "superseded_at": later - 500 * DAY,
                "run_id": "old",
            },
            {
                **template,
                "movie_id": 2,
                "release_month": dt.date(2024, 1, 1),
                "event_timestamp": later - 600 * DAY,
                "superseded_at": later - 10 * DAY,
                "run_id": "new",
            },
        ]
    )
    with database.connect("seeding feature history") as conn:
        database.ensure_table(conn, "features_history", FEATURE_HISTORY_COLUMNS, "release_month")
        copy_frame(conn, database.ident("features_history"), FEATURE_HISTORY_COLUMNS, rows)
    for age in (500, 10):
        name = f"{pd.Timestamp(later - age * DAY):%Y%m%dT%H%M%SZ}"
        object_store.write(FEATURES_HISTORY_PATH.replace("{materialized}", name), "2024-01-01", b"superseded rows")


def history_left(database, object_store) -> tuple[set, int]:
    from movie_assets.object_layout import FEATURES_HISTORY_PATH

    with database.connect("reading feature history") as conn:
        table = database.ident("features_history")
        rows = {r[0] for r in conn.execute(sql.SQL("select run_id from {}").format(table))}
    folder = object_store.path_for(FEATURES_HISTORY_PATH.replace("{materialized}", "x"), "2024-01-01").parent
    return rows, len(list(folder.glob("*.parquet")))


def test_pruning_keeps_each_window_and_what_is_still_read(database, object_store, tracking, monkeypatch):
    from movie_assets.assets.prepare import EDA_HISTORY_COLUMNS

    monkeypatch.setattr("movie_assets.jobs.retention.PAGE", 1)  # every listing goes through its pages

    now = clock.now()
    later = now + 540 * DAY  # a year and a half on: every run is past 90 days, the MLflow runs past 400
    with database.connect("seeding eda history") as conn:
        database.ensure_table(conn, "eda_stats_history", EDA_HISTORY_COLUMNS, "release_month")
        template = {name: None for name in EDA_HISTORY_COLUMNS}
        rows = pd.DataFrame(
            [
                {**template, "release_month": dt.date(2024, 1, 1), "run_id": "old", "computed_at": later - 500 * DAY},
                {**template, "release_month": dt.date(2024, 1, 1), "run_id": "new", "computed_at": later - 10 * DAY},
            ]
        )
        copy_frame(conn, database.ident("eda_stats_history"), EDA_HISTORY_COLUMNS, rows)
    registered, plain = two_mlflow_runs(tracking)
    seed_feature_history(database, object_store, later)

    with dg.instance_for_test() as instance:
        first_a = dg.materialize([counted], partition_key="a", instance=instance).run_id
        newest_a = dg.materialize([counted], partition_key="a", instance=instance).run_id
        only_b = dg.materialize([counted], partition_key="b", instance=instance).run_id
        resources = {"database": database, "object_store": object_store, "mlflow_tracking": tracking}
        with clock.clock_at(later):
            result = prune_history.execute_in_process(resources=resources, instance=instance)
        assert result.success
        left = {r.run_id for r in instance.get_runs()}
        assert first_a not in left, "an old run whose materialization was replaced is pruned"
        assert {newest_a, only_b} <= left, "runs behind the newest materialization of a partition stay"
        latest = instance.get_latest_storage_id_by_partition(
            dg.AssetKey("counted"), dg.DagsterEventType.ASSET_MATERIALIZATION
        )
        assert set(latest) == {"a", "b"}, "no partition looks never built to the automation"

    with database.connect("reading eda history") as conn:
        table = database.ident("eda_stats_history")
        eda_left = {r[0] for r in conn.execute(sql.SQL("select run_id from {}").format(table))}
    assert "old" not in eda_left and "new" in eda_left
    assert history_left(database, object_store) == ({"new"}, 1), "superseded feature rows past 400 days go"
    client = tracking.client()
    assert client.get_run(plain).info.lifecycle_stage == "deleted"
    assert client.get_run(registered).info.lifecycle_stage == "active"
