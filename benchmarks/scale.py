"""Scale: the sample catalogue grown to N movies through raw -> clean -> features -> online store.

    .venv/bin/movie-platform up && .venv/bin/python benchmarks/scale.py --movies 100000 1000000

The same generator as the sample (`TmdbSampleSource(movies_per_month=N/24)`), the same assets.
Each stage runs in a process of its own, a few release months per run (BATCH_MONTHS: no stage
holds the whole catalogue), with the crawl split over one worker per core. The
parent samples every stage's memory (PSS of its processes and their children, so pages forked
workers share count once) every 0.2 s.
Prints seconds and peak memory per stage and how both grow from the smallest to the largest N.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil

from movie_assets.resources.tmdb_sample import SAMPLE_MONTHS, sample_months
from movie_platform.local_stack import Stack

STAGES = ("raw", "clean", "features", "online")
ASSET_OF = {"raw": "movies_raw", "clean": "movies_clean", "features": "movie_features"}
# Release months per run: the crawl holds every TMDB document of its months, so one; the
# later stages hold typed rows only and save run overhead with three.
BATCH_MONTHS = {"raw": 1, "clean": 3, "features": 3}


def run_stage(stage: str, months: list[str], config: dict) -> None:
    """Inside a stage process: materialize the stage's asset for `months` in batches of `batch` months."""
    import dagster as dg

    from movie_assets.assets import features, ingest, prepare
    from movie_assets.resources.feast import FeastStore
    from movie_assets.resources.object_store import ObjectStore, ObjectStoreIOManager
    from movie_assets.resources.postgres import PostgresDatabase, PostgresIOManager
    from movie_assets.resources.tmdb_sample import TmdbSampleSource

    database = PostgresDatabase(url=config["db_url"], db_schema=config["schema"])
    store = ObjectStore(storage_url=config["storage_url"])
    resources = {
        "tmdb": TmdbSampleSource(movies_per_month=config["movies_per_month"]),
        "database": database,
        "postgres_io_manager": PostgresIOManager(database=database),
        "object_store": store,
        "object_store_io_manager": ObjectStoreIOManager(store=store),
        "feast": FeastStore(
            db_url=config["db_url"],
            redis_url=config["redis_url"],
            storage_url=config["storage_url"],
            project=config["project"],
        ),
    }
    every = dg.load_assets_from_modules([ingest, prepare, features])
    instance = dg.DagsterInstance.ephemeral()
    if stage == "online":
        for selection in (["feast_definitions"], ["online_features"]):
            assert dg.materialize(every, selection=selection, resources=resources, instance=instance).success
        return
    size = config["batch"][stage]
    for first in range(0, len(months), size):
        batch = months[first : first + size]
        tags = {"dagster/asset_partition_range_start": batch[0], "dagster/asset_partition_range_end": batch[-1]}
        assert dg.materialize(
            every, selection=[ASSET_OF[stage]], resources=resources, tags=tags, instance=instance
        ).success


def measure(stage: str, config: dict, workers: int) -> tuple[float, float]:
    """Run a stage in `workers` processes (months split between them); return seconds and peak RSS in GiB."""
    months = [m.isoformat() for m in sample_months()]
    shares = [months[i::workers] for i in range(workers)] if workers > 1 else [months]
    started, peak = time.perf_counter(), 0
    logs = [tempfile.TemporaryFile() for _ in shares]  # Dagster's run logs; a pipe would fill up and block the run
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--stage",
                stage,
                "--months",
                ",".join(sorted(share)),
                "--config",
                json.dumps(config),
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        for share, log in zip(shares, logs, strict=True)
    ]
    while any(p.poll() is None for p in procs):
        rss = 0
        for proc in procs:
            try:
                family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
                rss += sum(p.memory_full_info().pss for p in family)  # PSS: forked workers' shared pages once
            except psutil.Error:
                pass
        peak = max(peak, rss)
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    for proc, log in zip(procs, logs, strict=True):
        if proc.returncode:
            log.seek(0)
            raise SystemExit(f"stage {stage} failed:\n{log.read().decode(errors='replace')[-3000:]}")
    return seconds, peak / 2**30


def scale_run(movies: int, env: dict) -> dict:
    folder = tempfile.mkdtemp(prefix="scale-")
    config = {
        "db_url": env["MOVIE_DB_URL"],
        "redis_url": env["MOVIE_REDIS_URL"],
        "schema": f"scale_{uuid.uuid4().hex[:6]}",
        "storage_url": Path(folder).as_uri(),
        "project": f"scale{uuid.uuid4().hex[:6]}",
        "movies_per_month": round(movies / SAMPLE_MONTHS),
        "batch": BATCH_MONTHS,
    }
    results = {}
    for stage in STAGES:
        results[stage] = measure(stage, config, workers=(os.cpu_count() or 1) if stage == "raw" else 1)
        print(
            f"  {movies:>9,} movies | {stage:<8} | {results[stage][0]:>7.1f} s | peak {results[stage][1]:.2f} GiB",
            flush=True,
        )
    import psycopg

    from movie_assets.resources.feast import FeastStore

    # Leave nothing behind: the project's Redis keys and registry entries, the schema, the folder.
    FeastStore(
        db_url=env["MOVIE_DB_URL"],
        redis_url=env["MOVIE_REDIS_URL"],
        storage_url=config["storage_url"],
        project=config["project"],
    ).store().teardown()
    shutil.rmtree(folder, ignore_errors=True)
    with psycopg.connect(env["MOVIE_DB_URL"], autocommit=True) as conn:
        results["rows"] = {
            table: conn.execute(f'select count(*) from "{config["schema"]}"."{table}"').fetchone()[0]
            for table in ("movies_raw", "movies_clean", "features")
        }
        conn.execute(f'drop schema "{config["schema"]}" cascade')
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--movies", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--stage")
    parser.add_argument("--months")
    parser.add_argument("--config")
    args = parser.parse_args()
    if args.stage:  # a stage process started by measure()
        run_stage(args.stage, args.months.split(","), json.loads(args.config))
        return
    env = Stack().env()
    if not env:
        raise SystemExit("start the embedded stack first: movie-platform up")
    runs = {}
    for movies in args.movies:
        runs[movies] = scale_run(movies, env)
    print(
        f"\n{'movies':>10} | "
        + " | ".join(f"{s:>16}" for s in STAGES)
        + " |    total | peak GiB | rows raw/clean/features"
    )
    for movies, result in runs.items():
        total = sum(result[s][0] for s in STAGES)
        cells = " | ".join(f"{result[s][0]:>6.1f}s {result[s][1]:>5.2f}GiB" for s in STAGES)
        rows = result["rows"]
        print(
            f"{movies:>10,} | {cells} | {total:>7.1f}s | {max(result[s][1] for s in STAGES):>8.2f} | "
            f"{rows['movies_raw']:,}/{rows['movies_clean']:,}/{rows['features']:,}"
        )
    if len(runs) > 1:
        small, large = min(runs), max(runs)
        print(
            f"\ngrowth {small:,} -> {large:,} movies ({large / small:.0f}x): "
            + ", ".join(
                f"{s} time {runs[large][s][0] / runs[small][s][0]:.1f}x, memory "
                f"{runs[large][s][1] / runs[small][s][1]:.1f}x"
                for s in STAGES
            )
        )


if __name__ == "__main__":
    main()
