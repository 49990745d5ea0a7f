"""The storage checks fail on corrupted tables, name the bad rows, and a blocking one stops its run.

Two sample months go through movies_raw, movies_clean and movie_features with every check
passing. Then each test corrupts what is stored (a duplicate row, a row in the wrong
month, a title gone, a clean movie without features or dropped reason) and runs the
checks as the Checks tab does: the check fails and its metadata names the movie.
"""

import dagster as dg
import pytest
from psycopg import sql

from movie_assets.assets.features import movie_features
from movie_assets.assets.ingest import movies_raw
from movie_assets.assets.prepare import eda_stats, movies_clean
from movie_assets.checks import STORAGE_CHECKS
from movie_assets.resources.tmdb_sample import TmdbSampleSource
from movie_assets_tests.conftest import platform_resources, with_storage_checks

MONTH, NEXT = "2024-01-01", "2024-02-01"
RANGE_TAGS = {"dagster/asset_partition_range_start": MONTH, "dagster/asset_partition_range_end": NEXT}
GRAPH = [movies_raw, movies_clean, eda_stats, movie_features]


@pytest.fixture
def platform(database, object_store):
    resources = platform_resources(database, object_store, TmdbSampleSource())
    result = dg.materialize(with_storage_checks(*GRAPH), resources=resources, tags=RANGE_TAGS)
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    # One evaluation per check and month of the range run, each passed.
    assert sorted((e.asset_check_key, e.partition) for e in evaluations) == sorted(
        (check.check_key, month) for check in STORAGE_CHECKS for month in (MONTH, NEXT)
    )
    assert all(e.passed for e in evaluations), [
        (e.asset_key.to_user_string(), e.check_name, e.partition) for e in evaluations if not e.passed
    ]
    return database, resources


def execute(database, text: str) -> int:
    """A corruption: `text` with {t} as tables of the test's schema; returns a movie id it touched."""
    with database.connect() as conn:
        conn.execute(sql.SQL("set search_path to {}").format(sql.Identifier(database.db_schema)))
        return conn.execute(text).fetchone()[0]


def run_checks(resources: dict, *names: str, partition: str = NEXT, assets=()):
    """The named checks (asset:check) for one month, as the Checks tab runs them; plus `assets` downstream."""
    keys = [dg.AssetCheckKey(dg.AssetKey(a), c) for a, c in (name.split(":") for name in names)]
    selection = dg.AssetSelection.checks(*keys)
    if assets:
        selection = selection | dg.AssetSelection.assets(*assets)
    result = dg.materialize(
        with_storage_checks(*GRAPH),
        selection=selection,
        resources=resources,
        tags={"dagster/partition": partition},  # partition_key needs a selected asset; the Checks tab has none
        raise_on_error=False,
    )
    return result, {f"{e.asset_key.to_user_string()}:{e.check_name}": e for e in result.get_asset_check_evaluations()}


def test_a_movie_stored_twice_fails_unique_ids_and_names_it(platform):
    database, resources = platform
    movie_id = execute(
        database,
        "insert into movies_raw select * from movies_raw where release_month = '2024-02-01' "
        "order by movie_id limit 1 returning movie_id",
    )
    _, checks = run_checks(resources, "movies_raw:unique_movie_ids")
    failed = checks["movies_raw:unique_movie_ids"]
    assert not failed.passed and str(movie_id) in failed.metadata["bad_movie_ids"].value
    assert failed.metadata["duplicate_ids"].value == 1


def test_a_movie_in_another_month_than_its_date_fails_and_is_named(platform):
    database, resources = platform
    movie_id = execute(
        database,
        "update movies_clean set release_date = '2024-05-17' where movie_id = "
        "(select min(movie_id) from movies_clean where release_month = '2024-02-01') returning movie_id",
    )
    _, checks = run_checks(resources, "movies_clean:release_dates_inside_partition")
    failed = checks["movies_clean:release_dates_inside_partition"]
    assert not failed.passed and str(movie_id) in failed.metadata["bad_movie_ids"].value


def test_a_missing_title_fails_ids_and_titles_present(platform):
    database, resources = platform
    movie_id = execute(
        database,
        "update movies_raw set title = ' ' where movie_id = "
        "(select max(movie_id) from movies_raw where release_month = '2024-02-01') returning movie_id",
    )
    _, checks = run_checks(resources, "movies_raw:ids_and_titles_present")
    assert str(movie_id) in checks["movies_raw:ids_and_titles_present"].metadata["bad_movie_ids"].value
    assert not checks["movies_raw:ids_and_titles_present"].passed


def test_a_raw_movie_neither_clean_nor_dropped_fails_the_reconciliation(platform):
    database, resources = platform
    movie_id = execute(
        database,
        "delete from movies_clean where movie_id = "
        "(select min(movie_id) from movies_clean where release_month = '2024-02-01') returning movie_id",
    )
    _, checks = run_checks(resources, "movies_clean:row_count_reconciles", "movie_features:features_match_clean")
    reconcile = checks["movies_clean:row_count_reconciles"]
    assert not reconcile.passed and str(movie_id) in reconcile.metadata["bad_movie_ids"].value
    assert reconcile.metadata["reasons"].value == "neither clean nor dropped"
    features = checks["movie_features:features_match_clean"]
    assert not features.passed and str(movie_id) in features.metadata["bad_movie_ids"].value


def test_a_month_with_a_null_share_over_its_limit_warns(platform):
    database, resources = platform
    execute(database, "update movies_clean set runtime = null where release_month = '2024-02-01' returning 1")
    _, checks = run_checks(resources, "movies_clean:missing_ratio_within_limits")
    warned = checks["movies_clean:missing_ratio_within_limits"]
    assert not warned.passed and warned.severity == dg.AssetCheckSeverity.WARN
    assert "runtime" in warned.metadata["over_limit"].value


def test_a_failed_blocking_check_stops_the_assets_below_it_in_the_run(platform):
    """movies_raw's duplicate keeps movies_clean from running: the bad month does not flow on."""
    database, resources = platform
    before = execute(database, "select count(*) from movies_clean where release_month = '2024-02-01'")
    execute(database, "delete from movies_clean where release_month = '2024-02-01' returning 1")
    execute(
        database,
        "insert into movies_raw select * from movies_raw where release_month = '2024-02-01' limit 1 returning 1",
    )
    result, checks = run_checks(resources, "movies_raw:unique_movie_ids", assets=["movies_clean"])
    assert not result.success and not checks["movies_raw:unique_movie_ids"].passed
    assert result.asset_materializations_for_node("movies_clean") == []
    assert execute(database, "select count(*) from movies_clean where release_month = '2024-02-01'") == 0 < before


def test_a_check_whose_table_is_gone_fails_naming_it(platform):
    """A check never passes by absence: a dropped table fails it with the table's name."""
    database, resources = platform
    with database.connect() as conn:
        conn.execute(sql.SQL("drop table {}").format(database.ident("movies_clean_dropped")))
    _, checks = run_checks(resources, "movies_clean:row_count_reconciles")
    failed = checks["movies_clean:row_count_reconciles"]
    assert not failed.passed
    assert failed.metadata["missing_tables"].value == "movies_clean_dropped"
    assert f"{database.db_schema}.movies_clean_dropped does not exist" in failed.description
