"""Data tests on what `movie-platform demo` stores (public schema), in the spirit of Made-With-ML's tests/data.

Schema, label range, uniqueness and NULLs are asserted on the stored tables, not on frames in
memory. The last test corrupts a copy of the tables and sees every expectation fail on it.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import sql

from movie_assets.assets.features import FEATURE_HISTORY_COLUMNS
from movie_assets.assets.training import PREDICTION_COLUMNS
from movie_assets.domain.cleaning import CLEAN_COLUMNS
from movie_assets.domain.feature_engineering import FEATURE_NAMES, FEATURE_TABLE_COLUMNS
from movie_assets.domain.movie_records import RAW_COLUMNS
from movie_assets_tests.data.expectations import (
    duplicate_keys,
    null_ratios_over,
    outside_range,
    row_count,
    schema_differences,
)

SCHEMA = "public"  # where the demo writes (default names), like a user's stack
DECLARED = {
    "movies_raw": RAW_COLUMNS,
    "movies_clean": CLEAN_COLUMNS,
    "features": FEATURE_TABLE_COLUMNS,
    "features_history": FEATURE_HISTORY_COLUMNS,
    "predictions": PREDICTION_COLUMNS,
}
# One row per movie; the feature history holds one row per superseded version of a movie.
UNIQUE_KEYS = {
    "movies_raw": ["movie_id"],
    "movies_clean": ["movie_id"],
    "features": ["movie_id"],
    "features_history": ["movie_id", "event_timestamp"],
    "predictions": ["movie_id"],
}
# Largest share of NULLs each column may have. Keys, partitions, times and the model's output are never
# NULL; TMDB leaves budget/revenue/runtime/imdb_id out for many small films, which cleaning keeps, and
# cleaning blanks the vote average of a movie without votes (a rating needs votes: 12% in the sample).
NULL_LIMITS = {
    "movies_raw": {"movie_id": 0, "title": 0, "release_date": 0, "release_month": 0, "vote_average": 0,
                   "vote_count": 0, "payload": 0, "fetched_at": 0, "genre_ids": 0},
    "movies_clean": {"movie_id": 0, "title": 0, "release_date": 0, "release_month": 0, "vote_average": 0.3,
                     "vote_count": 0, "genre_ids": 0, "release_year": 0, "runtime": 0.5, "budget": 0.9,
                     "revenue": 0.9, "imdb_id": 0.5},
    "features": {"movie_id": 0, "release_month": 0, "event_timestamp": 0, "created": 0,
                 **{name: 0 for name in FEATURE_NAMES if not name.startswith(("log_budget", "log_revenue", "runtime"))},
                 "log_budget": 0.9, "log_revenue": 0.9, "runtime": 0.5},
    "predictions": {c: 0 for c in PREDICTION_COLUMNS},
}  # fmt: skip
# Labels: TMDB's vote average is on a 0-10 scale and vote counts are counts.
LABEL_RANGES = [
    ("movies_raw", "vote_average", 0, 10),
    ("movies_raw", "vote_count", 0, None),
    ("movies_clean", "vote_average", 0, 10),
    ("movies_clean", "vote_count", 0, None),
]


@pytest.fixture(scope="module")
def stored(demo_run, stack_env):
    """A connection to the demo's data; the demo must have succeeded for its data to be judged."""
    assert demo_run.returncode == 0, demo_run.stdout[-3000:] + demo_run.stderr[-3000:]
    with psycopg.connect(stack_env["MOVIE_DB_URL"], autocommit=True) as conn:
        yield conn


@pytest.mark.parametrize("table", list(DECLARED))
def test_stored_columns_and_types_are_the_declared_ones(stored, table):
    # The history holds superseded rows only: none after a demo that materialized each month once.
    if table != "features_history":
        assert row_count(stored, SCHEMA, table) > 0, f"the demo stored no rows in {table}"
    assert schema_differences(stored, SCHEMA, table, DECLARED[table]) == {}


@pytest.mark.parametrize(("table", "column", "low", "high"), LABEL_RANGES)
def test_labels_are_inside_their_range(stored, table, column, low, high):
    assert outside_range(stored, SCHEMA, table, column, low, high) == []


@pytest.mark.parametrize("table", list(UNIQUE_KEYS))
def test_each_key_is_stored_once(stored, table):
    assert duplicate_keys(stored, SCHEMA, table, UNIQUE_KEYS[table]) == []


@pytest.mark.parametrize("table", list(NULL_LIMITS))
def test_nulls_stay_within_their_limits(stored, table):
    assert null_ratios_over(stored, SCHEMA, table, NULL_LIMITS[table]) == {}


def test_the_expectations_fail_on_a_corrupted_copy(stored):
    """A copy of movies_clean gets one duplicate, one vote_average of 11, one NULL title and a retyped
    column: each expectation must name exactly that."""
    copy = f"data_test_{uuid.uuid4().hex[:8]}"
    target = sql.SQL("{}.{}").format(sql.Identifier(copy), sql.Identifier("movies_clean"))
    stored.execute(sql.SQL("create schema {}").format(sql.Identifier(copy)))
    try:
        stored.execute(sql.SQL("create table {} as table public.movies_clean").format(target))
        first, second, third = (
            r[0] for r in stored.execute(sql.SQL("select movie_id from {} order by 1 limit 3").format(target))
        )
        stored.execute(sql.SQL("insert into {t} select * from {t} where movie_id = %s").format(t=target), (first,))
        stored.execute(sql.SQL("update {} set vote_average = 11 where movie_id = %s").format(target), (second,))
        stored.execute(sql.SQL("update {} set title = null where movie_id = %s").format(target), (third,))
        stored.execute(sql.SQL("alter table {} alter column vote_count type bigint").format(target))

        assert duplicate_keys(stored, copy, "movies_clean", ["movie_id"]) == [(first,)]
        assert outside_range(stored, copy, "movies_clean", "vote_average", 0, 10) == [second]
        assert list(null_ratios_over(stored, copy, "movies_clean", NULL_LIMITS["movies_clean"])) == ["title"]
        assert schema_differences(stored, copy, "movies_clean", CLEAN_COLUMNS) == {"vote_count": ("bigint", "integer")}
    finally:
        stored.execute(sql.SQL("drop schema {} cascade").format(sql.Identifier(copy)))
