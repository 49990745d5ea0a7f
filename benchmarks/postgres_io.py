"""Postgres IO manager write/read vs pandas.to_sql/read_sql and psql \\copy, on the same rows in one process run.

    .venv/bin/movie-platform up && .venv/bin/python benchmarks/postgres_io.py --rows 100000 1000000

Prints rows/s for each path and the ratios the project promises (write >= 4x to_sql,
>= 0.6x psql \\copy; read >= 3x read_sql).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import tempfile
import time

import numpy as np
import pandas as pd
import sqlalchemy

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


def timed(fn, repeat: int = 1) -> float:
    """Best of `repeat` runs (reads are repeated; writes run once into an empty table)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def run(db_url: str, n: int) -> dict[str, float]:
    frame = movie_rows(n)
    schema = f"bench_{n}"
    database = PostgresDatabase(url=db_url, db_schema=schema)
    engine = sqlalchemy.create_engine(dagster_storage_url(db_url))
    psql = shutil.which("psql") or _bundled_psql()
    with database.connect() as conn:
        conn.execute(f"drop schema if exists {schema} cascade")
    # Warm both paths (imports, first connections) on a few rows, so neither pays start-up costs.
    database.replace_rows("warmup", COLUMNS, frame.head(100), "release_month", WINDOW)
    database.read_rows("warmup", COLUMNS, "release_month", WINDOW)
    frame.head(100).to_sql("warmup_to_sql", engine, schema=schema, index=False, if_exists="replace")
    pd.read_sql(f"select * from {schema}.warmup_to_sql", engine)
    results = {}
    results["platform_write"] = timed(lambda: database.replace_rows("movies", COLUMNS, frame, "release_month", WINDOW))
    results["platform_read"] = timed(lambda: database.read_rows("movies", COLUMNS, "release_month", WINDOW), repeat=3)
    results["to_sql"] = timed(
        lambda: frame.to_sql("movies_to_sql", engine, schema=schema, index=False, if_exists="replace")
    )
    results["read_sql"] = timed(lambda: pd.read_sql(f"select * from {schema}.movies_to_sql", engine), repeat=3)
    with tempfile.NamedTemporaryFile(suffix=".csv") as csv:
        frame.to_csv(csv.name, index=False, header=False)
        with database.connect() as conn:
            # The same table definition (and index) the platform writes into: the same work.
            conn.execute(f"create table {schema}.movies_copy (like {schema}.movies including all)")
            conn.execute(f"create table {schema}.movies_copy_bare (like {schema}.movies)")
        for table, key in (("movies_copy", "psql_copy"), ("movies_copy_bare", "psql_copy_no_index")):
            copy = f"\\copy {schema}.{table} ({', '.join(COLUMNS)}) from '{csv.name}' with (format csv)"
            results[key] = timed(lambda copy=copy: subprocess.run([psql, db_url, "-q", "-c", copy], check=True))
    with database.connect() as conn:
        conn.execute(f"drop schema {schema} cascade")
    return results


def _bundled_psql() -> str:
    from movie_platform.local_stack import _pgserver_commands

    return str(_pgserver_commands().POSTGRES_BIN_PATH / "psql")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    db_url = os.environ.get("MOVIE_DB_URL") or Stack().env().get("MOVIE_DB_URL")
    if not db_url:
        raise SystemExit("no PostgreSQL: run `movie-platform up` or set MOVIE_DB_URL")
    print(f"{'rows':>9} | {'path':<18} | {'seconds':>8} | {'rows/s':>10}")
    ratios = []
    for n in args.rows:
        results = run(db_url, n)
        for path, seconds in results.items():
            print(f"{n:>9,} | {path:<18} | {seconds:>8.2f} | {n / seconds:>10,.0f}")
        write = results["platform_write"]
        ratios.append(
            (
                n,
                results["to_sql"] / write,
                results["psql_copy"] / write,
                results["psql_copy_no_index"] / write,
                results["read_sql"] / results["platform_read"],
            )
        )
    print()
    print(
        f"{'rows':>9} | write vs to_sql (goal >= 4x) | write vs psql \\copy, same table (goal >= 0.6x) | "
        f"write vs psql \\copy, no index | read vs read_sql (goal >= 3x)"
    )
    for n, vs_to_sql, vs_copy, vs_bare, vs_read in ratios:
        print(f"{n:>9,} | {vs_to_sql:>27.1f}x | {vs_copy:>45.2f}x | {vs_bare:>29.2f}x | {vs_read:>27.1f}x")


if __name__ == "__main__":
    main()
