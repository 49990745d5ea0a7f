"""Each month gets its own check status, and the checks of a chosen month run without materializing.

Two sample months go through movies_raw, movies_clean and movie_features in one range run, as a
UI backfill or `make demo` runs them. Before, that run logged each check once without a month
while Dagster had planned it for both months: the *Checks* tab listed every check as "Skipped"
beside a detail pane saying "Passed", and the automation's hold never saw a month's result.

Then one row of the second month is corrupted, and the checks run as the UI offers them: the job
`monthly_checks` for a chosen month (its Launchpad), and a run of the checks without a month (the
*Checks* tab's *Execute all*, which failed with Dagster's "Has a PartitionsDefinition, so should
either have a partition key or a partition key range").
"""

import dagster as dg
import pytest
from psycopg import sql

from movie_assets.assets.features import movie_features
from movie_assets.assets.ingest import movies_raw
from movie_assets.assets.prepare import movies_clean
from movie_assets.checks import STORAGE_CHECKS
from movie_assets.dagster_private import latest_check_per_partition
from movie_assets.jobs.monthly_checks import monthly_checks
from movie_assets.partitions import RANGE_END_TAG, RANGE_START_TAG
from movie_assets.resources.tmdb_sample import TmdbSampleSource
from movie_assets_tests.conftest import platform_resources, with_storage_checks

MONTH, NEXT = "2024-01-01", "2024-02-01"
GRAPH = [movies_raw, movies_clean, movie_features]
CHECK_KEYS = [check.check_key for check in STORAGE_CHECKS]
# What a blank title in NEXT fails (the blocking check that names it); every other check passes.
FAILS_ON_BLANK_TITLE = "movies_raw:ids_and_titles_present"


def name(key: dg.AssetCheckKey) -> str:
    return f"{key.asset_key.to_user_string()}:{key.name}"


def statuses(instance: dg.DagsterInstance, month: str) -> dict[str, tuple[str, str, int | None]]:
    """check -> (status, run id, target storage id) of its newest row for `month`."""
    return {
        name(row.check_key): (row.status, row.run_id, row.target_storage_id)
        for row in latest_check_per_partition(instance, CHECK_KEYS, [month])
    }


def newest(instance: dg.DagsterInstance, asset: str, month: str) -> int:
    (record,) = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[month]), limit=1
    ).records
    return record.storage_id


@pytest.fixture
def crawled(database, object_store):
    """Both months crawled, cleaned and featurized in one range run, with their checks; and its instance."""
    instance = dg.DagsterInstance.ephemeral()
    resources = platform_resources(database, object_store, TmdbSampleSource())
    result = dg.materialize(
        with_storage_checks(*GRAPH),
        resources=resources,
        tags={RANGE_START_TAG: MONTH, RANGE_END_TAG: NEXT},
        instance=instance,
    )
    assert result.success
    return instance, resources, result.run_id


def blank_a_title(database, month: str) -> int:
    with database.connect() as conn:
        table = database.ident("movies_raw")
        query = sql.SQL(
            "update {t} set title = ' ' where movie_id = (select min(movie_id) from {t} where release_month = %s) "
            "returning movie_id"
        ).format(t=table)
        return conn.execute(query, (month,)).fetchone()[0]


def test_a_range_run_gives_every_check_a_status_of_its_own_per_month(crawled):
    instance, _, run_id = crawled
    for month in (MONTH, NEXT):
        expected = {
            name(key): ("SUCCEEDED", run_id, newest(instance, key.asset_key.to_user_string(), month))
            for key in CHECK_KEYS
        }
        assert statuses(instance, month) == expected, month


def test_the_monthly_checks_job_checks_the_chosen_month_and_fails_on_its_bad_row(crawled, database):
    instance, resources, crawl_id = crawled
    bad = blank_a_title(database, NEXT)

    clean = monthly_checks.execute_in_process(
        partition_key=MONTH, resources={"database": resources["database"]}, instance=instance
    )
    assert clean.success
    evaluated = {(name(e.asset_check_key), e.partition, e.passed) for e in clean.get_asset_check_evaluations()}
    assert evaluated == {(name(key), MONTH, True) for key in CHECK_KEYS}
    # MONTH's rows are the job's now, on the month's current materializations; NEXT's are still the crawl's.
    assert {row[:2] for row in statuses(instance, MONTH).values()} == {("SUCCEEDED", clean.run_id)}
    assert {row[:2] for row in statuses(instance, NEXT).values()} == {("SUCCEEDED", crawl_id)}

    failed = monthly_checks.execute_in_process(
        partition_key=NEXT, resources={"database": resources["database"]}, instance=instance, raise_on_error=False
    )
    assert not failed.success
    now = statuses(instance, NEXT)
    assert {check for check, row in now.items() if row[0] == "FAILED"} == {FAILS_ON_BLANK_TITLE}
    assert all(row[1] == failed.run_id for row in now.values()), now
    assert now[FAILS_ON_BLANK_TITLE][2] == newest(instance, "movies_raw", NEXT)
    assert {row[0] for row in statuses(instance, MONTH).values()} == {"SUCCEEDED"}
    (failure,) = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.event_specific_data.error.message
    assert failure.step_key == "movies_raw__ids_and_titles_present", failure.step_key
    assert f"2024-02: ids_and_titles_present failed (bad ids [{bad}])" in message, message
    assert f"job monthly_checks, partition {NEXT}" in message, message


def test_checks_run_without_a_month_check_every_materialized_month(crawled, database):
    """The Checks tab's *Execute all* launches the asset's checks with no partition."""
    instance, resources, _ = crawled
    bad = blank_a_title(database, NEXT)
    result = dg.materialize(
        with_storage_checks(*GRAPH),
        selection=dg.AssetSelection.checks_for_assets(movies_raw),
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success  # the blank title fails a blocking check
    evaluations = result.get_asset_check_evaluations()
    raw_checks = [key for key in CHECK_KEYS if key.asset_key == movies_raw.key]
    assert sorted((e.check_name, e.partition) for e in evaluations) == sorted(
        (key.name, month) for key in raw_checks for month in (MONTH, NEXT)
    )
    failed = [e for e in evaluations if not e.passed]
    assert [(e.check_name, e.partition) for e in failed] == [("ids_and_titles_present", NEXT)]
    assert str(bad) in failed[0].metadata["bad_movie_ids"].value
    assert {statuses(instance, NEXT)[name(key)][0] for key in raw_checks} == {"SUCCEEDED", "FAILED"}
