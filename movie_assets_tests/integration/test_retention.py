"""`prune_history` keeps each growing store to its window, and never what the platform still reads.

Real PostgreSQL, a real Dagster instance and the stack's MLflow; the clock is moved past the
windows instead of waiting for them.
"""

import datetime as dt
import uuid

import dagster as dg
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from psycopg import sql

from movie_assets.domain import clock
from movie_assets.jobs.retention import prune_history
from movie_assets.resources.mlflow import MlflowTracking
from movie_assets.resources.postgres import copy_frame

DAY = dt.timedelta(days=1)


@pytest.fixture
def tracking(stack_env):
    name = f"retention_{uuid.uuid4().hex[:8]}"
    tracking = MlflowTracking(tracking_uri=stack_env["MLFLOW_TRACKING_URI"], experiment=name, registered_model=name)
    yield tracking
    client = MlflowClient(tracking.tracking_uri)
    if client.search_model_versions(f"name='{name}'"):
        client.delete_registered_model(name)


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


def test_pruning_keeps_each_window_and_what_is_still_read(database, tracking):
    from movie_assets.assets.prepare import EDA_HISTORY_COLUMNS

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

    with dg.instance_for_test() as instance:
        first_a = dg.materialize([counted], partition_key="a", instance=instance).run_id
        newest_a = dg.materialize([counted], partition_key="a", instance=instance).run_id
        only_b = dg.materialize([counted], partition_key="b", instance=instance).run_id
        resources = {"database": database, "mlflow_tracking": tracking}
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
    client = tracking.client()
    assert client.get_run(plain).info.lifecycle_stage == "deleted"
    assert client.get_run(registered).info.lifecycle_stage == "active"
