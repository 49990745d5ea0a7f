"""A stale TMDB source is named, not dropped: `source_verified_recently` on movies_raw (warn).

A movie is verified by its own fetch or by a change sync whose cursor reached past it; the
check names the movies whose last verification is older than MOVIE_SOURCE_MAX_AGE_DAYS.
"""

import datetime as dt

import dagster as dg
import pandas as pd

from movie_assets.checks import STORAGE_CHECKS, source_verified_recently
from movie_assets.domain import clock
from movie_assets.domain.movie_records import RAW_COLUMNS
from movie_assets.jobs.sync_tmdb_changes import CURSOR_COLUMNS, CURSOR_NAME, CURSOR_TABLE
from movie_assets.resources.postgres import copy_frame

T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.timezone.utc)
WINDOW = (dt.date(2024, 1, 1), dt.date(2024, 3, 1))
WEEK = dt.timedelta(days=7)


def store_raw(database, fetched: dict[int, tuple[str, dt.datetime]]) -> None:
    """movies_raw rows: {movie_id: (release month, fetched_at)}."""
    frame = pd.DataFrame(
        [
            {"movie_id": i, "title": f"m{i}", "release_month": dt.date.fromisoformat(m), "fetched_at": at}
            for i, (m, at) in fetched.items()
        ]
    ).assign(release_date=lambda f: f["release_month"])
    for column in RAW_COLUMNS:
        if column not in frame:
            frame[column] = None
    with database.connect() as conn:
        database.ensure_table(conn, "movies_raw", RAW_COLUMNS, "release_month")
        with conn.transaction():
            copy_frame(conn, database.ident("movies_raw"), RAW_COLUMNS, frame[list(RAW_COLUMNS)])


def set_cursor(database, day: dt.date) -> None:
    with database.connect() as conn:
        database.ensure_table(conn, CURSOR_TABLE, CURSOR_COLUMNS, None)
        conn.execute(
            f'insert into "{database.db_schema}".{CURSOR_TABLE} (name, synced_through, updated_at, pending_months) '
            "values (%s, %s, now(), '{}') on conflict (name) do update set synced_through = excluded.synced_through",
            (CURSOR_NAME, day),
        )


def test_movies_unverified_for_longer_than_the_bound_are_named(database):
    store_raw(
        database,
        {
            1: ("2024-01-01", T0 - dt.timedelta(days=30)),
            2: ("2024-01-01", T0 - dt.timedelta(days=10)),
            3: ("2024-02-01", T0 - dt.timedelta(days=9)),
            4: ("2024-02-01", T0 - dt.timedelta(days=1)),
        },
    )
    with clock.clock_at(T0):
        result = source_verified_recently(database, WINDOW, clock.now(), WEEK)
    assert not result.passed and result.severity == dg.AssetCheckSeverity.WARN
    assert result.metadata["stale_movies"].value == 3
    assert result.metadata["stale_movie_ids"].value == "[1, 2, 3]", "movie 4, fetched yesterday, is not named"
    assert result.metadata["stale_per_month"].value == "{'2024-01': 2, '2024-02': 1}"

    # A change sync that read TMDB's list through yesterday confirmed every unchanged movie: nothing stale.
    set_cursor(database, (T0 - dt.timedelta(days=1)).date())
    assert source_verified_recently(database, WINDOW, T0, WEEK).passed
    # ... until the sync stops: a week and a day later, the movies not fetched since are named again.
    later = T0 + dt.timedelta(days=8)
    again = source_verified_recently(database, WINDOW, later, WEEK)
    assert not again.passed and again.metadata["stale_movie_ids"].value == "[1, 2, 3, 4]"


def test_the_check_is_wired_on_movies_raw_as_a_warning():
    keys = {(c.check_key.asset_key.to_user_string(), c.check_key.name) for c in STORAGE_CHECKS}
    assert ("movies_raw", "source_verified_recently") in keys
    (check,) = [c for c in STORAGE_CHECKS if c.check_key.name == "source_verified_recently"]
    assert not next(iter(check.check_specs)).blocking
