"""Which release months a crawl has stored, so a crawl of the same range resumes instead of starting over.

A crawl of a range of months commits each month as soon as it is crawled (its rows, its rejects and
its row here, in one transaction). Each crawl also records an attempt: its run, its range, when it
started, and when it finished. A crawl that finds an unfinished attempt of the same range (the run
was killed, failed, or its step is being retried) resumes it: it skips the months stored since that
attempt (or the one it resumed) started, and marks it as resumed. A finished crawl, or one older
than `max_age`, is never resumed: the same range crawled again later is crawled in full.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd
from psycopg import sql

from movie_assets.resources.postgres import PostgresDatabase, TableRows, existing_tables

ATTEMPTS_TABLE = "movies_raw_crawls"
ATTEMPT_COLUMNS = {
    "run_id": "text",
    "range_start": "date",
    "range_end": "date",  # exclusive: the first day after the range
    "started_at": "timestamp with time zone",
    "since": "timestamp with time zone",  # months stored after this count as done (the resumed chain's start)
    "finished_at": "timestamp with time zone",
    "resumed_by": "text",
}
MONTHS_TABLE = "movies_raw_crawled_months"
MONTH_COLUMNS = {
    "release_month": "date",
    "run_id": "text",
    "crawled_at": "timestamp with time zone",
    "movies": "integer",
    "rejected": "integer",
    "requests": "integer",
}


@dataclass(frozen=True)
class Attempt:
    """This crawl: where it resumes from (None: from scratch) and the months already stored."""

    since: dt.datetime
    resumed_run: str | None
    done: frozenset[dt.date]


def start(
    database: PostgresDatabase,
    run_id: str,
    window: tuple[dt.date, dt.date],
    now: dt.datetime,
    resume: bool = True,
    max_age: dt.timedelta = dt.timedelta(days=7),
) -> Attempt:
    """Record this crawl's attempt; resume the newest unfinished one of the same range when there is one."""
    with database.connect(f"starting the crawl of {window[0]}..{window[1]}") as conn:
        database.ensure_table(conn, ATTEMPTS_TABLE, ATTEMPT_COLUMNS, None)
        database.ensure_table(conn, MONTHS_TABLE, MONTH_COLUMNS, "release_month")
        attempts = database.ident(ATTEMPTS_TABLE)
        with conn.transaction():
            conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"{database.db_schema}.{ATTEMPTS_TABLE}",))
            found = conn.execute(
                sql.SQL(
                    "select run_id, since from {} where range_start = %s and range_end = %s "
                    "and finished_at is null and since >= %s order by started_at desc limit 1"
                ).format(attempts),
                (window[0], window[1], now - max_age),
            ).fetchone()
            # The chain counts from its first attempt: months older than max_age are crawled again. The run's own
            # earlier attempt (a step retry) is resumed even with resume: false.
            resumed_run, since = (found[0], found[1]) if found and (resume or found[0] == run_id) else (None, now)
            if found:  # resumed or crawled again in full: either way no later crawl resumes those attempts
                conn.execute(
                    sql.SQL(
                        "update {} set finished_at = %s, resumed_by = %s "
                        "where range_start = %s and range_end = %s and finished_at is null"
                    ).format(attempts),
                    (now, run_id, window[0], window[1]),
                )
            conn.execute(
                sql.SQL(
                    "insert into {} (run_id, range_start, range_end, started_at, since) values (%s, %s, %s, %s, %s)"
                ).format(attempts),
                (run_id, window[0], window[1], now, since),
            )
            done = (
                frozenset(
                    row[0]
                    for row in conn.execute(
                        sql.SQL(
                            "select release_month from {} where release_month >= %s and release_month < %s "
                            "and crawled_at >= %s"
                        ).format(database.ident(MONTHS_TABLE)),
                        (window[0], window[1], since),
                    )
                )
                if resumed_run is not None
                else frozenset()
            )
    return Attempt(since=since, resumed_run=resumed_run, done=done)


def month_row(month: dt.date, run_id: str, crawled_at: dt.datetime, movies: int, rejected: int, requests: int):
    """The ledger's row of a stored month: written in the month's own transaction, beside its rows."""
    frame = pd.DataFrame(
        {
            "release_month": [month],
            "run_id": [run_id],
            "crawled_at": [crawled_at],
            "movies": [movies],
            "rejected": [rejected],
            "requests": [requests],
        }
    )
    return TableRows(MONTHS_TABLE, MONTH_COLUMNS, frame)


def finish(database: PostgresDatabase, run_id: str, window: tuple[dt.date, dt.date], now: dt.datetime) -> None:
    """Every month of the range is stored: the attempt is done, and no later crawl resumes it."""
    with database.connect("finishing the crawl's attempt") as conn:
        if not existing_tables(conn, database.db_schema, [ATTEMPTS_TABLE]):
            return
        conn.execute(
            sql.SQL(
                "update {} set finished_at = %s where run_id = %s and range_start = %s and range_end = %s "
                "and finished_at is null"
            ).format(database.ident(ATTEMPTS_TABLE)),
            (now, run_id, window[0], window[1]),
        )
