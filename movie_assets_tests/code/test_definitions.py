"""A snapshot of the code location: an accidental rename, regrouping or lost dependency shows up here."""

import datetime as dt

import dagster as dg
import pytest

from movie_assets.automation.schedules import daily_recent_months, recent_months
from movie_assets.definitions import defs
from movie_assets.partitions import release_months
from movie_assets.settings import Settings

EXPECTED_ASSETS = {
    # key: (group, partitioned, upstream keys)
    "movies_raw": ("ingestion", True, set()),
    "movies_raw_backup": ("ingestion", True, {"movies_raw"}),
    "movies_clean": ("preparation", True, {"movies_raw"}),
    "eda_stats": ("preparation", True, {"movies_clean"}),
    "movie_features": ("features", True, {"movies_clean"}),
    "feast_definitions": ("features", False, {"movie_features"}),
    "online_features": ("features", False, {"feast_definitions", "movie_features"}),
    "movie_rating_model": ("training", False, {"movie_features", "feast_definitions", "movies_clean"}),
    "movie_rating_predictions": ("training", True, {"movie_rating_model", "movie_features", "movies_clean"}),
}
# `partner_ratings` (group `airflow`, external: the legacy Airflow DAG delivers it) joins only with the
# Airflow bridge (AIRFLOW_URL): code/test_airflow_bridge.py.


def test_asset_graph_snapshot():
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys == set(EXPECTED_ASSETS)
    for name, (group, partitioned, parents) in EXPECTED_ASSETS.items():
        node = graph.get(dg.AssetKey(name))
        assert node.group_name == group, name
        assert (node.partitions_def is not None) == partitioned, name
        assert {p.to_user_string() for p in node.parent_keys} == parents, name
        if partitioned:
            assert node.backfill_policy == dg.BackfillPolicy.single_run(), name
            assert node.partitions_def == release_months(Settings.from_env()), name


def test_crawl_shares_the_tmdb_api_pool_and_has_checks():
    spec = defs.get_assets_def("movies_raw")
    assert spec.op.pool == "tmdb_api"
    checks = {key.name for key in defs.resolve_asset_graph().asset_check_keys if key.asset_key == spec.key}
    assert checks == {
        "unique_movie_ids",
        "source_verified_recently",
        "release_dates_inside_partition",
        "ids_and_titles_present",
        "rows_for_past_months",
        "current_months_fresh",
    }


def test_jobs_and_schedule_exist():
    assert defs.resolve_job_def("restore_movies_raw_from_backup") is not None
    assert defs.resolve_job_def("refresh_recent_months") is not None
    assert daily_recent_months.default_status == dg.DefaultScheduleStatus.STOPPED
    assert defs.resolve_job_def("sync_tmdb_changes") is not None
    assert {s.name for s in defs.sensors or []} >= {"default_automation_condition_sensor", "tmdb_changes_sensor"}


def test_the_sync_sensor_starts_one_sync_at_a_time():
    from movie_assets.automation.sensors import sync_sensor_status, tmdb_changes_sensor

    instance = dg.DagsterInstance.ephemeral()
    request = tmdb_changes_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(request, dg.RunRequest)
    run = instance.add_run(
        dg.DagsterRun(job_name="sync_tmdb_changes", run_id="0123456789abcdef", status=dg.DagsterRunStatus.STARTED)
    )
    skipped = tmdb_changes_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(skipped, dg.SkipReason) and run.run_id[:8] in (skipped.skip_message or "")
    assert sync_sensor_status({"TMDB_API_KEY": "k"}) == dg.DefaultSensorStatus.RUNNING
    assert sync_sensor_status({}) == dg.DefaultSensorStatus.STOPPED


@pytest.mark.parametrize(
    ("value", "interval", "status"),
    [("", 3600, "RUNNING"), ("600", 600, "RUNNING"), ("off", None, "STOPPED"), ("OFF", None, "STOPPED")],
)
def test_the_sync_interval_variable_sets_the_interval_or_ships_the_sensor_stopped(value, interval, status):
    from movie_assets.automation.sensors import sync_interval_s, sync_sensor_status

    environ = {"TMDB_API_KEY": "k", "MOVIE_SYNC_INTERVAL_SECONDS": value}
    assert sync_interval_s(environ) == interval
    assert sync_sensor_status(environ) == getattr(dg.DefaultSensorStatus, status)


@pytest.mark.parametrize("value", ["0", "-5", "1h", "3600.5"])
def test_a_bad_sync_interval_names_the_variable(value):
    from movie_assets.automation.sensors import sync_interval_s

    with pytest.raises(ValueError, match="MOVIE_SYNC_INTERVAL_SECONDS"):
        sync_interval_s({"MOVIE_SYNC_INTERVAL_SECONDS": value})


def test_daily_schedule_refreshes_this_and_last_month():
    assert recent_months(dt.date(2024, 3, 15)) == ["2024-02-01", "2024-03-01"]
    assert recent_months(dt.date(2024, 1, 1)) == ["2023-12-01", "2024-01-01"]
    context = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2024, 3, 15, 3, 0))
    requests = list(daily_recent_months(context))
    assert [r.partition_key for r in requests] == ["2024-02-01", "2024-03-01"]


def test_freshness_policies_on_the_assets_users_rely_on():
    graph = defs.resolve_asset_graph()
    fresh = {key.to_user_string() for key in graph.get_all_asset_keys() if graph.get(key).freshness_policy}
    assert fresh == {"movies_raw", "online_features", "movie_rating_model"}
    checks = {key.name for key in defs.resolve_asset_graph().asset_check_keys}
    assert "online_store_fresh" in checks


@pytest.mark.parametrize("schema", ['a"b', "Movies", "two words", "x$$y", "s" * 64, "1st"])
def test_a_schema_name_that_is_not_plain_is_refused_at_load_naming_the_variable(schema):
    from movie_assets.resources.wiring import build_resources
    from movie_assets.settings import Settings

    with pytest.raises(ValueError, match="MOVIE_DB_SCHEMA must be a plain lower-case PostgreSQL name"):
        build_resources(Settings.from_env({"MOVIE_DB_SCHEMA": schema}))
