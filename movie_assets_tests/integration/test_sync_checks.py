"""The change sync's months pass the crawl's storage checks, and a month that fails a blocking one is held.

Three months crawled from the local TMDB server (with their check steps), one of them corrupted in
PostgreSQL afterwards (a blank title, as a manual edit or another writer would leave it); TMDB then
lists a change in that month and one in another. Before, the sync logged both months as
materialized with no check, and automation carried the corrupted month down to movies_clean.
"""

import datetime as dt

import dagster as dg
import pytest
from psycopg import sql

from movie_assets.assets.ingest import movies_raw
from movie_assets.assets.prepare import movies_clean
from movie_assets.checks import MONTHLY_CHECKS
from movie_assets.dagster_private import latest_check_per_partition
from movie_assets.definitions import defs
from movie_assets.jobs.sync_tmdb_changes import sync_tmdb_changes
from movie_assets.resources.tmdb import TmdbApiClient
from movie_assets.resources.tmdb_sample import movies_for_month
from movie_assets_tests.conftest import own_feast_project, platform_resources, with_storage_checks
from movie_assets_tests.tmdb_server import FakeTmdb, TmdbTestServer

MONTHS = [dt.date(2024, m, 1) for m in (1, 2, 3)]
MONTHS_KEYS = [m.isoformat() for m in MONTHS]
RANGE_TAGS = {"dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-03-01"}
CORRUPTED, OTHER = "2024-02-01", "2024-03-01"
TODAY = dt.datetime.now(dt.timezone.utc).date()
RAW_CHECKS = [dg.AssetCheckKey(dg.AssetKey("movies_raw"), c.name) for c in MONTHLY_CHECKS if c.asset == "movies_raw"]


@pytest.fixture
def server():
    with TmdbTestServer(FakeTmdb([m for month in MONTHS for m in movies_for_month(month)])) as running:
        yield running


def ids_of(database, month: str) -> list[int]:
    with database.connect() as conn:
        query = sql.SQL("select movie_id from {} where release_month = %s order by movie_id")
        return [r[0] for r in conn.execute(query.format(database.ident("movies_raw")), (month,))]


def newest_materialization(instance: dg.DagsterInstance, month: str) -> int:
    (record,) = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("movies_raw"), asset_partitions=[month]), limit=1
    ).records
    return record.storage_id


def test_a_sync_checks_every_month_it_touches_and_automation_holds_the_one_that_fails(
    database, object_store, stack_env, server
):
    client = TmdbApiClient(base_url=server.base_url, api_key="test-key", requests_per_second=500)
    resources = {
        **platform_resources(database, object_store, client),
        "feast": own_feast_project(stack_env, object_store.storage_url),
    }
    instance = dg.DagsterInstance.ephemeral()
    crawl = dg.materialize(
        with_storage_checks(movies_raw, movies_clean), resources=resources, tags=RANGE_TAGS, instance=instance
    )
    assert crawl.success
    blank, changed = ids_of(database, CORRUPTED)[:2]
    with database.connect() as conn:
        conn.execute(
            sql.SQL("update {} set title = ' ' where movie_id = %s").format(database.ident("movies_raw")), (blank,)
        )
    for movie_id in (changed, ids_of(database, OTHER)[0]):
        truth = server.fake.truth(movie_id)
        server.fake.change(TODAY, movie_id, {**truth, "vote_count": int(truth["vote_count"]) + 7})

    result = sync_tmdb_changes.execute_in_process(resources=resources, instance=instance, raise_on_error=False)

    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message
    assert "2024-02: ids_and_titles_present failed" in message and str(blank) in message, message
    assert "2024-03" not in message and "--partition 2024-02-01" in message and "Checks tab" in message, message
    assert failure.event_specific_data.user_failure_data.metadata["held_months"].value == CORRUPTED
    assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)
    # Every touched month has each movies_raw check evaluated against the sync's own materialization.
    found = {
        (row.check_key.name, row.partition): row
        for row in latest_check_per_partition(instance, RAW_CHECKS, MONTHS_KEYS)
    }
    for month in (CORRUPTED, OTHER):
        for key in RAW_CHECKS:
            row = found[(key.name, month)]
            assert row.run_id == result.run_id and row.target_storage_id == newest_materialization(instance, month)
            bad = (key.name, month) == ("ids_and_titles_present", CORRUPTED)
            assert row.status == ("FAILED" if bad else "SUCCEEDED"), (key.name, month, row.status)
    assert {row.run_id for (_, month), row in found.items() if month == "2024-01-01"} == {crawl.run_id}

    evaluated = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, evaluation_time=dt.datetime.now(dt.timezone.utc)
    )
    # movies_clean's February is the crawl's (checked, passing): what reads it may still be built from it.
    assert evaluated.get_requested_partitions(dg.AssetKey("movies_clean")) == {OTHER}
    assert evaluated.get_requested_partitions(dg.AssetKey("movies_raw_backup")) == {"2024-01-01", OTHER}
