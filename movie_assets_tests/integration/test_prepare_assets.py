"""movies_clean and eda_stats on real PostgreSQL.

One run for a range, idempotent, and the views answer the everyday questions.
"""

import datetime as dt

import dagster as dg
import pandas as pd
from dagster_shared.serdes import serialize_value
from psycopg import sql

from movie_assets.assets.ingest import movies_raw
from movie_assets.assets.prepare import eda_stats, movies_clean
from movie_assets.domain.sample_span import SAMPLE_MONTHS
from movie_assets.partitions import RANGE_END_TAG, RANGE_START_TAG
from movie_assets.resources.tmdb_sample import TmdbSampleSource, sample_months
from movie_assets_tests.conftest import platform_resources, with_storage_checks

RANGE_TAGS = {"dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-03-01"}


def run_pipeline(database, object_store, instance=None):
    return dg.materialize(
        with_storage_checks(movies_raw, movies_clean, eda_stats),
        resources=platform_resources(database, object_store, TmdbSampleSource()),
        tags=RANGE_TAGS,
        instance=instance or dg.DagsterInstance.ephemeral(),
    )


def query(database, text, *params):
    with database.connect() as conn:
        conn.execute(sql.SQL("set search_path to {}").format(sql.Identifier(database.db_schema)))
        return conn.execute(text, params).fetchall()


def test_clean_and_eda_for_a_range_in_one_run(database, object_store):
    result = run_pipeline(database, object_store)
    assert result.success
    for node in ("movies_clean", "eda_stats"):
        assert sorted(m.partition for m in result.asset_materializations_for_node(node)) == [
            "2024-01-01",
            "2024-02-01",
            "2024-03-01",
        ]
    (raw,), (clean,), (dropped,) = (
        query(database, f"select count(*) from {t}")[0] for t in ("movies_raw", "movies_clean", "movies_clean_dropped")
    )
    assert clean == raw - dropped and clean > 300
    checks = {
        c.check_name: c.passed for c in result.get_asset_check_evaluations() if c.asset_key.path == ["movies_clean"]
    }
    assert checks == {
        "unique_movie_ids": True,
        "release_dates_inside_partition": True,
        "missing_ratio_within_limits": True,
        "row_count_reconciles": True,
    }
    genres = query(database, "select count(*) from movie_genres g join movies_clean c using (movie_id)")[0][0]
    assert genres == query(database, "select sum(cardinality(genre_ids)) from movies_clean")[0][0]

    *earlier, last = sorted(result.asset_materializations_for_node("eda_stats"), key=lambda m: m.partition)
    assert last.metadata["plots"].value.count("data:image/png;base64,") == 4
    assert "vote_average" in last.metadata["summary"].value
    assert all("plots" not in m.metadata and "2024-03-01" in m.metadata["report"].value for m in earlier)
    report = object_store.root / "eda" / "report_until=2024-03"
    assert sorted(p.name for p in report.iterdir()) == [
        "budget_vs_revenue.png",
        "genre_counts.png",
        "movies_per_month.png",
        "vote_average_distribution.png",
    ]
    means = query(
        database,
        "select release_month, value from eda_stats where column_name = 'vote_average' and stat = 'mean' order by 1",
    )
    sql_means = query(database, "select release_month, avg(vote_average) from movies_clean group by 1 order by 1")
    assert [m for m, _ in means] == [m for m, _ in sql_means]
    assert all(abs(a - float(b)) < 1e-9 for (_, a), (_, b) in zip(means, sql_means, strict=True))


def test_rerun_is_idempotent_and_eda_comparison_sees_two_materializations(database, object_store):
    run_pipeline(database, object_store)
    counts = [
        query(database, f"select count(*) from {t}")[0][0]
        for t in ("movies_clean", "movie_genres", "movies_clean_dropped", "eda_stats")
    ]
    run_pipeline(database, object_store)
    assert [
        query(database, f"select count(*) from {t}")[0][0]
        for t in ("movies_clean", "movie_genres", "movies_clean_dropped", "eda_stats")
    ] == counts
    rows = query(
        database,
        "select previous_value, latest_value, change, previous_run_id <> latest_run_id from eda_month_comparison "
        "where column_name = 'runtime' and stat = 'mean' order by release_month",
    )
    assert len(rows) == 3
    assert all(
        prev is not None and prev == latest and change == 0 and different for prev, latest, change, different in rows
    )


def test_views_answer_the_everyday_questions(database, object_store):
    run_pipeline(database, object_store)
    after = query(database, "select release_date from movies_released_after('2024-02-15')")
    expected = query(database, "select count(*) from movies_clean where release_date > '2024-02-15'")[0][0]
    assert len(after) == expected > 0 and all(d > dt.date(2024, 2, 15) for (d,) in after)
    complete = pd.DataFrame(
        query(database, "select runtime, budget, revenue, vote_average, original_language from movies_complete")
    )
    assert len(complete) > 0 and not complete.isna().any().any()
    incomplete = query(
        database, "select count(*) from movies_clean where budget is null or runtime is null or vote_average is null"
    )[0][0]
    total = query(database, "select count(*) from movies_clean")[0][0]
    assert len(complete) <= total - incomplete


def test_a_24_month_eda_run_adds_at_most_1_mb_to_the_event_log(database, object_store):
    """The report's plots are in the event log once per run, not once per partition.

    Measured as the serialized events of the eda_stats run: the bytes the `event` column of
    Dagster's `event_logs` table stores. Before, every one of the 24 materializations carried
    the same four base64 PNGs and the summary: 3.4 MB.
    """
    months = [f"{m:%Y-%m-%d}" for m in sample_months()]
    assert len(months) == SAMPLE_MONTHS == 24
    resources = platform_resources(database, object_store, TmdbSampleSource())
    tags = {RANGE_START_TAG: months[0], RANGE_END_TAG: months[-1]}
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize([movies_raw, movies_clean], resources=resources, tags=tags, instance=instance).success
    result = dg.materialize(
        [movies_raw, movies_clean, eda_stats], selection=[eda_stats], resources=resources, tags=tags, instance=instance
    )
    assert result.success
    added = sum(len(serialize_value(entry)) for entry in instance.all_logs(result.run_id))
    assert added <= 1_000_000, f"a 24-month eda_stats run added {added / 1e6:.2f} MB to the event log"
    materializations = result.asset_materializations_for_node("eda_stats")
    assert sorted(m.partition for m in materializations) == months
    assert [m.partition for m in materializations if "plots" in m.metadata] == [months[-1]]


def test_the_latest_eda_report_describes_the_newest_months_stored_whatever_the_last_run_covered(database, object_store):
    """A backfill of older months once made "the latest" report cover only the months up to its own last one."""
    assert run_pipeline(database, object_store).success  # 2024-01..03
    older = dg.materialize(
        with_storage_checks(movies_raw, movies_clean, eda_stats),
        resources=platform_resources(database, object_store, TmdbSampleSource()),
        tags={RANGE_START_TAG: "2023-01-01", RANGE_END_TAG: "2023-02-01"},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert older.success
    latest = max(older.asset_materializations_for_node("eda_stats"), key=lambda m: m.partition)
    assert latest.partition == "2023-02-01"
    assert latest.metadata["report_window"].value.startswith("2022-04..2024-03"), latest.metadata["report_window"]
    stored = query(database, "select count(*) from movies_clean")[0][0]
    assert latest.metadata["report_movies"].value == stored  # all five months stored, not the run's two
