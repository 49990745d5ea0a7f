"""Scale: the sample catalogue grown to N movies through raw -> clean -> features -> online store.

    .venv/bin/movie-platform up && .venv/bin/python benchmarks/scale.py --movies 100000 1000000

The same generator as the sample (`TmdbSampleSource(movies_per_month=N/24)`), the same assets.
A scale run is one interpreter that imports the code location once and forks each stage's workers
(`pipeline`), as the platform's steps fork from a preloaded server; the month-parallel stages run one
worker per core, a few release months per run (BATCH_MONTHS: no stage holds the whole catalogue).
The total is that interpreter's wall time, its start and imports included. The parent samples
memory (PSS of the interpreter and its workers, so pages forked workers share count once) every 0.2 s.
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
import threading
import time
import uuid
from pathlib import Path

import psutil
from harness import Samples, add_goals_argument, add_rounds_argument, goal_from, ratio, record_goals

from movie_assets.resources.tmdb_sample import SAMPLE_MONTHS, sample_months
from movie_platform.local_stack import Stack

STAGES = ("raw", "clean", "features", "online")
ASSET_OF = {"raw": "movies_raw", "clean": "movies_clean", "features": "movie_features"}
# Release months per run: a range crawl stores and drops each month as it goes, so all of a worker's
# months in one run; the later stages hold their range's rows, so three.
BATCH_MONTHS = {"raw": SAMPLE_MONTHS, "clean": 3, "features": 3}


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


CONFIG_VAR = "SCALE_PIPELINE_CONFIG"
PRELOAD = ("movie_assets.definitions", "feast")  # what the code location's forkserver preloads, and Feast


def pipeline(config: dict) -> None:
    """One scale run's only interpreter: import once, then fork each stage's workers from here.

    As the platform's steps fork from a server that preloaded the code location (`automation/executor.py`),
    no stage pays an interpreter start and its imports. The month-parallel stages (raw, clean, features)
    run one worker per core on contiguous halves of the months (as two runs of a backfill would); the
    online stage is one worker that writes with all cores itself. A line per stage start and end on
    stdout lets the parent attribute its memory samples.
    """
    import importlib
    import multiprocessing

    started = time.perf_counter()
    for module in PRELOAD:
        importlib.import_module(module)
    print(json.dumps({"import": time.perf_counter() - started}), flush=True)
    fork = multiprocessing.get_context("fork")
    months = [m.isoformat() for m in sample_months()]
    workers = os.cpu_count() or 1
    for stage in STAGES:
        size = -(-len(months) // workers)
        shares = [months[i : i + size] for i in range(0, len(months), size)] if stage != "online" else [months]
        print(json.dumps({"start": stage}), flush=True)
        began = time.perf_counter()
        processes = [fork.Process(target=run_stage, args=(stage, share, config)) for share in shares]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
        if any(process.exitcode for process in processes):
            raise SystemExit(f"stage {stage} failed (exit codes {[p.exitcode for p in processes]})")
        print(json.dumps({"end": stage, "seconds": time.perf_counter() - began}), flush=True)


def measure(config: dict) -> dict:
    """Run `pipeline` in a fresh interpreter; its wall time, import time, and per stage seconds and peak PSS (GiB)."""
    log = tempfile.TemporaryFile()  # Dagster's run logs; a pipe would fill up and block the run
    started = time.perf_counter()
    process = subprocess.Popen(  # the config holds the database password: in the environment, not argv (`ps`)
        [sys.executable, __file__, "--pipeline"],
        env={**os.environ, CONFIG_VAR: json.dumps(config)},
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    events: list[dict] = []
    reader = threading.Thread(target=lambda: events.extend(json.loads(line) for line in process.stdout), daemon=True)
    reader.start()
    peaks: dict[str, float] = {}
    while process.poll() is None:
        stage = next((e["start"] for e in reversed(events) if "start" in e), "import")
        try:
            family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
            pss = sum(p.memory_full_info().pss for p in family)  # PSS: forked workers' shared pages once
        except psutil.Error:
            pss = 0
        peaks[stage] = max(peaks.get(stage, 0.0), pss / 2**30)
        time.sleep(0.2)
    total = time.perf_counter() - started
    reader.join()
    if process.returncode:
        log.seek(0)
        raise SystemExit(f"the scale pipeline failed:\n{log.read().decode(errors='replace')[-3000:]}")
    results = {"total": total, "import": next(e["import"] for e in events if "import" in e)}
    for event in events:
        if "end" in event:
            results[event["end"]] = (event["seconds"], peaks.get(event["end"], 0.0))
    results["peak"] = max(peaks.values())
    return results


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
    results = measure(config)
    for stage in STAGES:
        print(
            f"  {movies:>9,} movies | {stage:<8} | {results[stage][0]:>7.1f} s | peak {results[stage][1]:.2f} GiB",
            flush=True,
        )
    print(
        f"  {movies:>9,} movies | total    | {results['total']:>7.1f} s (imports {results['import']:.1f} s)", flush=True
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
    add_rounds_argument(parser)
    parser.add_argument("--pipeline", action="store_true", help=argparse.SUPPRESS)  # the process measure() starts
    add_goals_argument(parser)
    args = parser.parse_args()
    if args.pipeline:
        pipeline(json.loads(os.environ[CONFIG_VAR]))
        return
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
        return Samples([result["total"] for result in runs[movies]])

    def peak(movies: int) -> Samples:
        return Samples([result["peak"] for result in runs[movies]])

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
