"""Postgres IO manager write/read vs pandas.to_sql/read_sql and psql \\copy, on the same rows in one process run.

    .venv/bin/movie-platform up && .venv/bin/python benchmarks/postgres_io.py --rows 100000 1000000

Each path runs --rounds times (>= 3), the paths of a comparison taking turns; every write goes
into an emptied table. Prints the median seconds with min..max, and the per-round ratios the
project promises at the largest row count (write >= 0.6x psql \\copy into the same table, read
>= 3x read_sql of the same table) and write >= 4x to_sql (run up to --to-sql-max rows: 18k rows/s).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import tempfile

import numpy as np
import pandas as pd
import sqlalchemy
from harness import (
    Samples,
    add_goals_argument,
    add_rounds_argument,
    goal_from,
    interleaved,
    ratio,
    record_goals,
)

from movie_assets.domain.movie_records import RAW_COLUMNS
from movie_assets.resources.postgres import PostgresDatabase
from movie_assets.settings import dagster_storage_url
from movie_platform.local_stack import Stack

# The typed columns of movies_raw without the JSON payload: what the baselines can load too.
TYPED_COLUMNS = (
    "movie_id title original_language release_date release_month popularity vote_average vote_count budget revenue "
    "runtime overview"
).split()
COLUMNS = {name: RAW_COLUMNS[name] for name in TYPED_COLUMNS}
WINDOW = (dt.date(1990, 1, 1), dt.date(2100, 1, 1))


def movie_rows(n: int, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    release = pd.to_datetime("2000-01-01") + pd.to_timedelta(rng.integers(0, 9000, n), unit="D")
    frame = pd.DataFrame(
        {
            "movie_id": np.arange(1, n + 1, dtype=np.int64),
            "title": pd.Series(rng.integers(0, 10**9, n)).map("Movie {}".format),
            "original_language": rng.choice(["en", "fr", "ja", "es", "ko"], n),
            "release_date": release.date,
            "release_month": release.to_period("M").to_timestamp().date,
            "popularity": rng.exponential(10, n),
            "vote_average": rng.uniform(0, 10, n).round(3),
            "vote_count": rng.integers(0, 20_000, n),
            "budget": rng.integers(0, 200_000_000, n),
            "revenue": rng.integers(0, 900_000_000, n),
            "runtime": rng.integers(60, 200, n),
            "overview": pd.Series(rng.integers(0, 10**6, n)).map("A story about number {} and its friends.".format),
        }
    )
    return frame


def run(db_url: str, n: int, rounds: int, to_sql_max: int) -> dict[str, Samples]:
    """Seconds per path over `rounds` interleaved rounds; every write goes into an emptied table."""
    frame = movie_rows(n)
    schema = f"bench_{n}"
    database = PostgresDatabase(url=db_url, db_schema=schema)
    engine = sqlalchemy.create_engine(dagster_storage_url(db_url))
    psql = shutil.which("psql") or _bundled_psql()
    with database.connect() as conn:
        conn.execute(f"drop schema if exists {schema} cascade")
    # Warm both paths (imports, first connections) on a few rows, so neither pays start-up costs.
    database.replace_rows("movies", COLUMNS, frame.head(100), "release_month", WINDOW)
    database.read_rows("movies", COLUMNS, "release_month", WINDOW)
    frame.head(100).to_sql("movies_to_sql", engine, schema=schema, index=False, if_exists="replace")
    pd.read_sql(f"select * from {schema}.movies_to_sql", engine)
    with database.connect() as conn:
        # The same table definition (and index) the platform writes into: the same work.
        conn.execute(f"create table {schema}.movies_copy (like {schema}.movies including all)")
        conn.execute(f"create table {schema}.movies_copy_bare (like {schema}.movies)")
    empties = {
        "platform_write": "movies",
        "psql_copy": "movies_copy",
        "psql_copy_no_index": "movies_copy_bare",
    }

    def empty(path: str) -> None:
        if path in empties:
            with database.connect() as conn:
                conn.execute(f"truncate {schema}.{empties[path]}")

    with tempfile.NamedTemporaryFile(suffix=".csv") as csv:
        frame.to_csv(csv.name, index=False, header=False)

        def psql_copy(table: str) -> None:
            copy = f"\\copy {schema}.{table} ({', '.join(COLUMNS)}) from '{csv.name}' with (format csv)"
            subprocess.run([psql, db_url, "-q", "-c", copy], check=True)

        writes = {
            "platform_write": lambda: database.replace_rows("movies", COLUMNS, frame, "release_month", WINDOW),
            "psql_copy": lambda: psql_copy("movies_copy"),
            "psql_copy_no_index": lambda: psql_copy("movies_copy_bare"),
        }
        if n <= to_sql_max:  # 18k rows/s: a 1M-row to_sql alone is a minute per round
            writes["to_sql"] = lambda: frame.to_sql(
                "movies_to_sql", engine, schema=schema, index=False, if_exists="replace"
            )
        results = interleaved(writes, rounds, before_each=empty)
    results |= interleaved(
        {
            "platform_read": lambda: database.read_rows("movies", COLUMNS, "release_month", WINDOW),
            # read_sql reads the platform's own table: the same rows, types and pages.
            "read_sql": lambda: pd.read_sql(f"select {', '.join(COLUMNS)} from {schema}.movies", engine),
        },
        rounds,
    )
    with database.connect() as conn:
        conn.execute(f"drop schema {schema} cascade")
    return results


def _bundled_psql() -> str:
    from movie_platform.local_stack import _pgserver_commands

    return str(_pgserver_commands().POSTGRES_BIN_PATH / "psql")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    add_rounds_argument(parser)
    parser.add_argument("--to-sql-max", type=int, default=100_000, help="run to_sql only up to this many rows")
    add_goals_argument(parser)
    args = parser.parse_args()
    db_url = os.environ.get("MOVIE_DB_URL") or Stack().env().get("MOVIE_DB_URL")
    if not db_url:
        raise SystemExit("no PostgreSQL: run `movie-platform up` or set MOVIE_DB_URL")
    print(f"{'rows':>9} | {'path':<18} | {'seconds median (min..max)':>27} | {'rows/s':>10}")
    goals, to_sql_goal = [], None
    for n in sorted(args.rows):
        results = run(db_url, n, args.rounds, args.to_sql_max)
        for path, samples in results.items():
            print(f"{n:>9,} | {path:<18} | {samples.describe():>27} | {n / samples.median:>10,.0f}")
        write, read = results["platform_write"], results["platform_read"]
        ratios = {
            "write vs psql \\copy, same table": ratio(results["psql_copy"], write),
            "write vs psql \\copy, no index": ratio(results["psql_copy_no_index"], write),
            "read vs read_sql": ratio(results["read_sql"], read),
        }
        if "to_sql" in results:
            ratios["write vs to_sql"] = ratio(results["to_sql"], write)
        for label, samples in ratios.items():
            print(f"{n:>9,} | {label:<34} | {samples.describe()}x (per-round ratios)")
        if "write vs to_sql" in ratios:  # the goal row of the largest size to_sql ran at
            to_sql_goal = goal_from(f"Postgres write {n:,} rows vs to_sql", ratios["write vs to_sql"], 4.0, "x", True)
        if n != max(args.rows):
            continue
        goals += [
            goal_from(
                f"Postgres write {n:,} rows vs psql \\copy (same table)",
                ratios["write vs psql \\copy, same table"],
                0.6,
                "x",
                True,
            ),
            goal_from(f"Postgres read {n:,} rows vs read_sql", ratios["read vs read_sql"], 3.0, "x", True),
        ]
    print()
    record_goals(args.goals, goals + ([to_sql_goal] if to_sql_goal else []))


if __name__ == "__main__":
    main()
