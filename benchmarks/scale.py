"""Scale: the sample catalogue grown to N movies through raw -> clean -> features -> online store.

    .venv/bin/movie-platform up && .venv/bin/python benchmarks/scale.py --movies 100000 1000000

The same generator as the sample (`TmdbSampleSource(movies_per_month=N/24)`), the same assets.
Each stage runs in a process of its own, a few release months per run (BATCH_MONTHS: no stage
holds the whole catalogue), with the crawl split over one worker per core. The
parent samples every stage's memory (PSS of its processes and their children, so pages forked
workers share count once) every 0.2 s.
Each size runs --rounds times (>= 3), the sizes taking turns; a figure is the median with its
min..max. Prints seconds and peak memory per stage, how both grow from the smallest to the largest
N, and beside the total the physical floor of the largest N: COPY-in of the tables the pipeline
wrote (movies_raw, movies_clean, features) + Parquet write of the feature objects + pipelined HSET
of the online hashes' bytes (the same fields and values, into fresh keys).
Goals at the largest N: total <= 120 s, peak <= 2 GiB, every stage's time and memory growing at
most linearly (<= the size ratio).
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
from harness import MIN_ROUNDS, Samples, add_goals_argument, goal_from, ratio, record_goals

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


def scale_run(movies: int, env: dict, floor: bool) -> dict:
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
    from feast_online import drop_project

    from movie_assets.resources.feast import FeastStore

    feast = FeastStore(
        db_url=env["MOVIE_DB_URL"],
        redis_url=env["MOVIE_REDIS_URL"],
        storage_url=config["storage_url"],
        project=config["project"],
    )
    if floor:
        results["floor"] = physical_floor(env["MOVIE_DB_URL"], config["schema"], Path(folder), feast)
    # Leave nothing behind: the project's Redis keys and registry entries, the schema, the folder.
    drop_project(feast)
    shutil.rmtree(folder, ignore_errors=True)
    with psycopg.connect(env["MOVIE_DB_URL"], autocommit=True) as conn:
        results["rows"] = {
            table: conn.execute(f'select count(*) from "{config["schema"]}"."{table}"').fetchone()[0]
            for table in ("movies_raw", "movies_clean", "features")
        }
        conn.execute(f'drop schema "{config["schema"]}" cascade')
    return results


def physical_floor(db_url: str, schema: str, folder: Path, feast) -> dict[str, float]:
    """Seconds of the bare writes of what the pipeline produced: COPY-in, Parquet write, pipelined HSET."""
    import io

    import psycopg
    import pyarrow.parquet as pq
    import redis

    floor = {"copy_in": 0.0, "parquet_write": 0.0, "hset": 0.0}
    with psycopg.connect(db_url, autocommit=True) as conn:
        for table in ("movies_raw", "movies_clean", "features"):
            data = io.BytesIO()
            with conn.cursor().copy(f'copy "{schema}"."{table}" to stdout') as copy:
                for chunk in copy:
                    data.write(chunk)
            conn.execute(f'create table "{schema}"."floor_{table}" (like "{schema}"."{table}" including all)')
            started = time.perf_counter()
            with conn.cursor().copy(f'copy "{schema}"."floor_{table}" from stdin') as copy:
                view = data.getbuffer()
                for offset in range(0, len(view), 1 << 20):
                    copy.write(view[offset : offset + (1 << 20)])
            floor["copy_in"] += time.perf_counter() - started
    with tempfile.TemporaryDirectory() as scratch:
        for number, path in enumerate(sorted(folder.rglob("*.parquet"))):
            table = pq.read_table(path)
            started = time.perf_counter()
            pq.write_table(table, Path(scratch, f"{number}.parquet"))
            floor["parquet_write"] += time.perf_counter() - started
    client = redis.Redis.from_url(feast.redis_url)
    pattern = b"*" + feast.project.encode()
    copies = []
    keys = list(client.scan_iter(match=pattern, count=10_000))
    for start in range(0, len(keys), 1_000):
        batch = keys[start : start + 1_000]
        with client.pipeline(transaction=False) as pipe:
            for key in batch:
                pipe.hgetall(key)
            hashes = pipe.execute()
        started = time.perf_counter()
        with client.pipeline(transaction=False) as pipe:
            for key, fields in zip(batch, hashes, strict=True):
                pipe.hset(b"floor:" + key, mapping=fields)
            pipe.execute()
        floor["hset"] += time.perf_counter() - started
        copies += [b"floor:" + key for key in batch]
    for start in range(0, len(copies), 10_000):
        client.unlink(*copies[start : start + 10_000])
    floor["total"] = sum(floor.values())
    return floor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--movies", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--rounds", type=int, default=MIN_ROUNDS)
    parser.add_argument("--stage")
    parser.add_argument("--months")
    parser.add_argument("--config")
    add_goals_argument(parser)
    args = parser.parse_args()
    if args.stage:  # a stage process started by measure()
        run_stage(args.stage, args.months.split(","), json.loads(args.config))
        return
    if args.rounds < MIN_ROUNDS:
        raise SystemExit(f"at least {MIN_ROUNDS} rounds")
    env = Stack().env()
    if not env:
        raise SystemExit("start the embedded stack first: movie-platform up")
    sizes = sorted(args.movies)
    largest = sizes[-1]
    runs: dict[int, list[dict]] = {movies: [] for movies in sizes}
    for round_no in range(args.rounds):
        shift = round_no % len(sizes)
        for movies in sizes[shift:] + sizes[:shift]:  # the sizes take turns, like every benchmark's paths
            runs[movies].append(scale_run(movies, env, floor=movies == largest))

    def stage(movies: int, name: str, index: int) -> Samples:
        return Samples([result[name][index] for result in runs[movies]])

    def total(movies: int) -> Samples:
        return Samples([sum(result[s][0] for s in STAGES) for result in runs[movies]])

    def peak(movies: int) -> Samples:
        return Samples([max(result[s][1] for s in STAGES) for result in runs[movies]])

    print(f"\nmedians (min..max) of {args.rounds} rounds")
    print(f"{'movies':>10} | {'stage':<8} | {'seconds':>24} | {'peak GiB':>24}")
    for movies in sizes:
        for name in STAGES:
            print(
                f"{movies:>10,} | {name:<8} | {stage(movies, name, 0).describe('.1f'):>24} | "
                f"{stage(movies, name, 1).describe('.2f'):>24}"
            )
        rows = runs[movies][-1]["rows"]
        print(
            f"{movies:>10,} | {'total':<8} | {total(movies).describe('.1f'):>24} | {peak(movies).describe('.2f'):>24}"
            f" | rows raw/clean/features {rows['movies_raw']:,}/{rows['movies_clean']:,}/{rows['features']:,}"
        )
    floors = {part: Samples([r["floor"][part] for r in runs[largest]]) for part in runs[largest][0]["floor"]}
    print(
        f"\nphysical floor at {largest:,} movies: "
        + ", ".join(f"{part} {samples.describe('.1f')} s" for part, samples in floors.items())
        + f"; the pipeline's total {total(largest).describe('.1f')} s is "
        f"{total(largest).median / floors['total'].median:.1f}x the floor"
    )
    goals = [
        goal_from(
            f"Scale {largest:,} movies raw -> online, total",
            total(largest),
            120,
            "s",
            False,
            note=f"physical floor {floors['total'].median:.1f} s",
        ),
        goal_from(f"Scale {largest:,} movies, peak memory", peak(largest), 2.0, "GiB", False),
    ]
    if len(sizes) > 1:
        small = sizes[0]
        factor = largest / small
        growth = {
            (name, what): ratio(stage(largest, name, index), stage(small, name, index))
            for name in STAGES
            for index, what in ((0, "time"), (1, "memory"))
        }
        print(
            f"\ngrowth {small:,} -> {largest:,} movies ({factor:.0f}x), per-round medians: "
            + ", ".join(f"{name} {what} {samples.median:.1f}x" for (name, what), samples in growth.items())
        )
        (worst_stage, worst_what), worst = max(growth.items(), key=lambda item: item[1].median)
        goals.append(
            goal_from(
                f"Scale {small:,} -> {largest:,}: worst stage growth ({worst_stage} {worst_what})",
                worst,
                factor,
                "x",
                False,
            )
        )
    print()
    record_goals(args.goals, goals)


if __name__ == "__main__":
    main()
