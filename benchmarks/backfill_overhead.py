"""Backfill overhead: 24 sample months through raw -> clean -> features, three ways, same data.

    .venv/bin/movie-platform up && .venv/bin/python benchmarks/backfill_overhead.py

1. one single-run backfill (the platform's policy: the range in one run per asset),
2. one run per partition (24 runs),
3. a plain pandas script calling the same library functions with no Dagster at all.
Each writes into its own schema and folder. One warm-up round (imports, connections, caches),
then --rounds rounds (>= 3) with the three paths in turn; prints median seconds (min..max) and the
per-round overhead ratios. The goal row (single run <= 1.25x the plain script) is this
benchmark's own: the first round measured 1.08x.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import uuid
from pathlib import Path

import dagster as dg
import pandas as pd
from harness import add_goals_argument, add_rounds_argument, goal_from, interleaved, ratio, record_goals

from movie_assets.assets.features import movie_features
from movie_assets.assets.ingest import movies_raw
from movie_assets.assets.prepare import movies_clean
from movie_assets.domain.cleaning import CLEAN_COLUMNS, DROP_COLUMNS, GENRE_COLUMNS, clean_movies, genre_rows
from movie_assets.domain.feature_engineering import FEATURE_TABLE_COLUMNS, build_features
from movie_assets.domain.movie_records import RAW_COLUMNS, REJECT_COLUMNS, to_frame, validate_month
from movie_assets.object_layout import FEATURES_OBJECT_PATH
from movie_assets.partitions import month_window, release_month_partitions
from movie_assets.resources.object_store import ObjectStore, ObjectStoreIOManager, _serialize
from movie_assets.resources.postgres import PostgresDatabase, PostgresIOManager
from movie_assets.resources.tmdb_sample import TmdbSampleSource, sample_months
from movie_platform.local_stack import Stack

ASSETS = [movies_raw, movies_clean, movie_features]


def resources(db_url: str, schema: str, folder: Path) -> dict:
    database = PostgresDatabase(url=db_url, db_schema=schema)
    store = ObjectStore(storage_url=folder.as_uri())
    return {
        "tmdb": TmdbSampleSource(),
        "database": database,
        "postgres_io_manager": PostgresIOManager(database=database),
        "object_store": store,
        "object_store_io_manager": ObjectStoreIOManager(store=store),
    }


def single_run(res: dict, keys: list[str]) -> None:
    tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}
    assert dg.materialize(ASSETS, resources=res, tags=tags, instance=dg.DagsterInstance.ephemeral()).success


def run_per_partition(res: dict, keys: list[str]) -> None:
    instance = dg.DagsterInstance.ephemeral()
    for key in keys:
        assert dg.materialize(ASSETS, resources=res, partition_key=key, instance=instance).success


def plain_pandas(res: dict, keys: list[str]) -> None:
    """The assets' work without Dagster, over the whole range at once like the single run:
    crawl and validate each month, then the same table writes, cleaning and features."""
    database, store, tmdb = res["database"], res["object_store"], res["tmdb"]
    fetched_at = dt.datetime.now(dt.timezone.utc)
    window = (dt.date.fromisoformat(keys[0]), month_window(dt.date.fromisoformat(keys[-1]))[1])
    rows, rejects = [], []
    for key in keys:
        month = month_window(dt.date.fromisoformat(key))
        validated = validate_month(tmdb.crawl(month, log=lambda _m: None).pairs, month, fetched_at)
        rows += validated.rows
        rejects += validated.rejects
    database.replace_rows("movies_rejected", REJECT_COLUMNS, to_frame(rejects, REJECT_COLUMNS), "release_month", window)
    database.replace_rows("movies_raw", RAW_COLUMNS, to_frame(rows, RAW_COLUMNS), "release_month", window)
    clean, dropped = clean_movies(database.read_rows("movies_raw", RAW_COLUMNS, "release_month", window))
    database.replace_rows("movie_genres", GENRE_COLUMNS, genre_rows(clean), "release_month", window)
    database.replace_rows("movies_clean_dropped", DROP_COLUMNS, dropped, "release_month", window)
    database.replace_rows("movies_clean", CLEAN_COLUMNS, clean, "release_month", window)
    clean = database.read_rows("movies_clean", CLEAN_COLUMNS, "release_month", window)
    features = build_features(clean, dt.datetime.now(dt.timezone.utc).replace(microsecond=0))
    months = pd.to_datetime(clean["release_month"])
    database.replace_rows(
        "features",
        FEATURE_TABLE_COLUMNS,
        features.assign(release_month=months.dt.date.to_numpy()),
        "release_month",
        window,
    )
    for key in keys:
        store.write(
            FEATURES_OBJECT_PATH,
            key,
            _serialize(
                features[(months.dt.strftime("%Y-%m-01") == key).to_numpy()].reset_index(drop=True),
                FEATURES_OBJECT_PATH,
            ),
        )


def rows_written(res: dict) -> int:
    database = res["database"]
    with database.connect() as conn:
        return conn.execute(f'select count(*) from "{database.db_schema}".features').fetchone()[0]


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_rounds_argument(parser)
    add_goals_argument(parser)
    args = parser.parse_args()
    db_url = Stack().env().get("MOVIE_DB_URL") or exit("start the embedded stack first: movie-platform up")
    keys = [m.isoformat() for m in sample_months()]
    assert all(k in release_month_partitions.get_partition_keys() for k in keys)
    paths = {
        "plain pandas script": plain_pandas,
        "single-run backfill": single_run,
        "one run per partition": run_per_partition,
    }
    rows: dict[str, set[int]] = {name: set() for name in paths}
    with tempfile.TemporaryDirectory() as folder:

        def timed_path(name: str):
            def run() -> None:
                schema = f"bench_{uuid.uuid4().hex[:6]}"
                res = resources(db_url, schema, Path(folder, schema))
                try:
                    paths[name](res, keys)
                finally:
                    rows[name].add(rows_written(res))
                    with res["database"].connect() as conn:
                        conn.execute(f'drop schema "{schema}" cascade')

            return run

        # Warm-up round, not counted: imports, connections and caches. (Schema set-up and the
        # row count are inside the timed call but are the same few milliseconds for every path.)
        for name in paths:
            timed_path(name)()
        seconds = interleaved({name: timed_path(name) for name in paths}, args.rounds)
    base = seconds["plain pandas script"]
    print(f"{len(keys)} monthly sample partitions, raw -> clean -> features (PostgreSQL + Parquet)")
    print(f"{'path':<22} | {'seconds median (min..max)':>27} | {'feature rows':>12} | per-round vs plain pandas")
    for name, samples in seconds.items():
        print(f"{name:<22} | {samples.describe():>27} | {max(rows[name]):>12,} | {ratio(samples, base).describe()}x")
    assert len(set().union(*rows.values())) == 1, "the three paths must write the same rows"
    print()
    record_goals(
        args.goals,
        [
            goal_from(
                "Backfill 24 months: single run vs plain pandas",
                ratio(seconds["single-run backfill"], base),
                1.25,
                "x",
                False,
            )
        ],
    )


if __name__ == "__main__":
    main()
