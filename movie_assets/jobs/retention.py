"""`prune_history`: the stores that grow with every run are kept to a window of time.

A platform that runs for years then holds its window, not its whole past:
- `eda_stats_history`: rows computed longer ago than MOVIE_EDA_HISTORY_DAYS (400).
- Dagster runs and their event logs: finished runs older than MOVIE_RUN_HISTORY_DAYS (90), except
  a run that wrote the newest materialization of some asset partition. Automation compares with
  those (automation/staleness.py); deleting one would make its partition look never built.
- MLflow runs of the experiment older than MOVIE_MLFLOW_RUN_DAYS (400), except runs behind a
  registered model version. MLflow deletes them softly (its lifecycle); `mlflow gc` purges.

- Superseded feature rows (`features_history`, the months' `history/` Parquet) past
  MOVIE_FEATURE_HISTORY_DAYS (400): `movie_features` applies it to the months it writes, this job
  to the months no run touches.
Redis holds one hash per existing movie: the change sync deletes removed movies, nothing expires.
"""

import datetime as dt
from collections.abc import Callable

import dagster as dg
from psycopg import sql
from pydantic import Field

from movie_assets.checks import days_setting, history_window
from movie_assets.domain import clock
from movie_assets.partitions import release_month_partitions
from movie_assets.resources.mlflow import MlflowTracking
from movie_assets.resources.object_store import ObjectStore, drop_history_before
from movie_assets.resources.postgres import PostgresDatabase, existing_tables

PAGE = 500
FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


class RetentionConfig(dg.Config):
    eda_history_days: int = Field(
        default_factory=lambda: days_setting("MOVIE_EDA_HISTORY_DAYS", 400), ge=0, description="eda_stats_history"
    )
    run_history_days: int = Field(
        default_factory=lambda: days_setting("MOVIE_RUN_HISTORY_DAYS", 90), ge=0, description="Dagster runs"
    )
    mlflow_run_days: int = Field(
        default_factory=lambda: days_setting("MOVIE_MLFLOW_RUN_DAYS", 400), ge=0, description="MLflow runs"
    )


def prune_eda_history(database: PostgresDatabase, before: dt.datetime) -> int:
    with database.connect("pruning eda_stats_history") as conn:
        if not existing_tables(conn, database.db_schema, ["eda_stats_history"]):
            return 0
        deleted = conn.execute(
            sql.SQL("delete from {} where computed_at < %s").format(database.ident("eda_stats_history")), (before,)
        )
        return deleted.rowcount


def prune_feature_history(database: PostgresDatabase, object_store: ObjectStore, before: dt.datetime) -> int:
    """Superseded feature rows whose successor has held since before `before`, in every month; rows deleted.

    Under every month's `feature_store` lock, like the other writers of feature history.
    """
    deleted = 0
    months = release_month_partitions.get_partition_keys()
    with database.holding({"feature_store": [dt.date.fromisoformat(m) for m in months]}, "pruning features") as conn:
        if existing_tables(conn, database.db_schema, ["features_history"]):
            deleted = conn.execute(
                sql.SQL("delete from {} where coalesce(superseded_at, event_timestamp) < %s").format(
                    database.ident("features_history")
                ),
                (before,),
            ).rowcount
        for month in months:
            drop_history_before(object_store, month, before)
    return deleted


def runs_behind_current_materializations(instance: dg.DagsterInstance) -> set[str]:
    """The runs that wrote the newest materialization of any asset partition."""
    keep: set[str] = set()
    for key in instance.get_asset_keys():
        ids = list(instance.get_latest_storage_id_by_partition(key, dg.DagsterEventType.ASSET_MATERIALIZATION).values())
        records = instance.get_asset_records([key])
        newest = records[0].asset_entry.last_materialization_record if records else None
        if newest is not None:
            ids.append(newest.storage_id)
        for start in range(0, len(ids), 500):
            summaries = instance.get_asset_event_summary_records(
                dg.DagsterEventType.ASSET_MATERIALIZATION, asset_key=key, storage_ids=ids[start : start + 500]
            )
            keep.update(s.run_id for s in summaries if s.run_id)
    return keep


def delete_all_but(run_ids: list[str], keep: set[str], delete: Callable[[str], object]) -> tuple[int, int]:
    """(deleted, kept): `delete` every run id not in `keep`."""
    doomed = [run_id for run_id in run_ids if run_id not in keep]
    for run_id in doomed:
        delete(run_id)
    return len(doomed), len(run_ids) - len(doomed)


def prune_dagster_runs(instance: dg.DagsterInstance, before: dt.datetime, current_run: str) -> tuple[int, int]:
    """(deleted, kept because they hold a current materialization) among the finished runs ended before `before`.

    The ids are listed a page at a time first (the first pruning of a long-lived instance meets tens of
    thousands of runs), then deleted: a deleted run cannot serve as the next page's cursor.
    """
    old: list[str] = []
    cursor = None
    while True:
        page = instance.get_run_records(
            filters=dg.RunsFilter(statuses=FINISHED, updated_before=before), limit=PAGE, cursor=cursor
        )
        old += [record.dagster_run.run_id for record in page]
        if len(page) < PAGE:
            break
        cursor = page[-1].dagster_run.run_id
    if not old:
        return 0, 0
    keep = runs_behind_current_materializations(instance) | {current_run}
    return delete_all_but(old, keep, instance.delete_run)


def prune_mlflow_runs(tracking: MlflowTracking, before: dt.datetime) -> tuple[int, int]:
    """(deleted, kept because a registered model version points at them) among the experiment's older runs."""
    client = tracking.client()
    experiment = client.get_experiment_by_name(tracking.experiment)
    if experiment is None:
        return 0, 0
    registered = {v.run_id for v in client.search_model_versions(f"name='{tracking.registered_model}'")}
    old_runs = f"attributes.start_time < {int(before.timestamp() * 1000)}"
    deleted = kept = 0
    token = None
    while True:
        page = client.search_runs(
            [experiment.experiment_id], filter_string=old_runs, max_results=PAGE, page_token=token
        )
        gone, stayed = delete_all_but([run.info.run_id for run in page], registered, client.delete_run)
        deleted, kept = deleted + gone, kept + stayed
        token = page.token
        if not token:
            return deleted, kept


@dg.op(description="Deletes what is older than each store's retention window (eda history, Dagster runs, MLflow runs).")
def prune_old_history(
    context: dg.OpExecutionContext,
    config: RetentionConfig,
    database: PostgresDatabase,
    object_store: ObjectStore,
    mlflow_tracking: MlflowTracking,
) -> dg.Output:
    now = clock.now()
    eda = prune_eda_history(database, now - dt.timedelta(days=config.eda_history_days))
    features = prune_feature_history(database, object_store, now - history_window())
    runs, runs_kept = prune_dagster_runs(
        context.instance, now - dt.timedelta(days=config.run_history_days), context.run_id
    )
    mlflow_runs, mlflow_kept = prune_mlflow_runs(mlflow_tracking, now - dt.timedelta(days=config.mlflow_run_days))
    context.log.info(
        f"pruned {eda} eda_stats_history rows, {features} features_history rows, {runs} Dagster runs "
        f"({runs_kept} older kept: they hold a current "
        f"materialization), {mlflow_runs} MLflow runs ({mlflow_kept} older kept: registered versions)"
    )
    return dg.Output(
        None,
        metadata={
            "eda_history_rows_deleted": eda,
            "feature_history_rows_deleted": features,
            "dagster_runs_deleted": runs,
            "dagster_runs_kept_for_current_materializations": runs_kept,
            "mlflow_runs_deleted": mlflow_runs,
            "mlflow_runs_kept_for_registered_versions": mlflow_kept,
            **config.model_dump(),
        },
    )


@dg.job(description="Keeps eda_stats_history, Dagster's run history and MLflow runs to their retention windows.")
def prune_history():
    prune_old_history()
