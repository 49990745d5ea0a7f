"""Feast online store: materialization into Redis vs pipelined HSET, and online read latency vs HGETALL.

    .venv/bin/movie-platform up && .venv/bin/python benchmarks/feast_online.py --rows 50000

Same rows, same Redis, one process run. Goals: materialization >= 0.5x of pipelined
HSET; online read p99 <= 1 ms for 1 movie and <= 8 ms for 100 movies.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import redis

from movie_assets.domain.feature_engineering import FEATURE_NAMES, FLOAT_FEATURES
from movie_assets.feature_definitions import FEATURE_SERVICE
from movie_assets.object_layout import FEATURES_OBJECT_PATH
from movie_assets.resources.feast import FeastStore
from movie_assets.resources.object_store import ObjectStore, write_atomically
from movie_assets.resources.online_materialize import materialize_parallel
from movie_assets.resources.online_writer import OnlineReader
from movie_platform.local_stack import Stack

# Within the view's 90-day TTL: older rows are not written (their Redis keys would expire at once).
EVENT = pd.Timestamp.now(tz="UTC").floor("D") - pd.Timedelta(days=1)


def feature_rows(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"movie_id": np.arange(1, n + 1, dtype=np.int64), "event_timestamp": EVENT, "created": EVENT})
    for name in FEATURE_NAMES:
        frame[name] = rng.random(n) * 100 if name in FLOAT_FEATURES else rng.integers(0, 2, n)
    return frame


def percentile(samples: list[float], q: float) -> float:
    return float(np.percentile(np.array(samples) * 1000, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--reads", type=int, default=2_000)
    args = parser.parse_args()
    env = {**Stack().env(), **os.environ}
    redis_url = env["MOVIE_REDIS_URL"]
    client = redis.Redis.from_url(redis_url)
    rows = feature_rows(args.rows)
    with tempfile.TemporaryDirectory() as folder:
        objects = ObjectStore(storage_url=Path(folder).as_uri())
        for month in range(1, 13):  # spread over 12 monthly objects like the real dataset
            part = rows[rows["movie_id"] % 12 == month - 1]
            write_atomically(
                objects.path_for(FEATURES_OBJECT_PATH, f"2024-{month:02d}-01"), part.to_parquet(index=False)
            )
        results = {}
        projects = []
        for label, parallel in (("feast_materialize", False), ("parallel_materialize", True)):
            feast = FeastStore(
                db_url=env["MOVIE_DB_URL"],
                redis_url=redis_url,
                storage_url=objects.storage_url,
                project=f"bench_{uuid.uuid4().hex[:8]}",
            )
            projects.append(feast.project)
            store = feast.store()
            store.apply(list(feast.definitions().values()))
            start, end = EVENT - pd.Timedelta(days=1), EVENT + pd.Timedelta(days=1)
            started = time.perf_counter()
            if parallel:
                materialize_parallel(feast, start.to_pydatetime(), end.to_pydatetime())
            else:
                store.materialize(
                    start_date=start.to_pydatetime(), end_date=end.to_pydatetime(), feature_views=["movie_features"]
                )
            results[label] = time.perf_counter() - started
        # Baseline: the same rows as plain hashes, pipelined HSET in batches of 1,000.
        started = time.perf_counter()
        values = rows[FEATURE_NAMES].astype("float64").to_numpy()
        pipe = client.pipeline(transaction=False)
        for i, movie_id in enumerate(rows["movie_id"].to_numpy()):
            pipe.hset(f"bench:{movie_id}", mapping=dict(zip(FEATURE_NAMES, values[i].tolist(), strict=True)))
            if i % 1000 == 999:
                pipe.execute()
        pipe.execute()
        results["redis_hset"] = time.perf_counter() - started

        service = store.get_feature_service(FEATURE_SERVICE)
        ids = rows["movie_id"].to_numpy()
        rng = np.random.default_rng(5)
        latency: dict[str, list[float]] = {
            "feast_1": [],
            "feast_100": [],
            "direct_1": [],
            "direct_100": [],
            "hgetall_1": [],
            "hgetall_100": [],
        }
        reader = OnlineReader(store, store.get_feature_view("movie_features"))
        for _ in range(args.reads):
            one = int(rng.choice(ids))
            hundred = [int(i) for i in rng.choice(ids, 100, replace=False)]
            t = time.perf_counter()
            store.get_online_features(features=service, entity_rows=[{"movie_id": one}])
            latency["feast_1"].append(time.perf_counter() - t)
            t = time.perf_counter()
            reader.read([one])
            latency["direct_1"].append(time.perf_counter() - t)
            t = time.perf_counter()
            client.hgetall(f"bench:{one}")
            latency["hgetall_1"].append(time.perf_counter() - t)
            if _ % 10 == 0:
                t = time.perf_counter()
                store.get_online_features(features=service, entity_rows=[{"movie_id": i} for i in hundred])
                latency["feast_100"].append(time.perf_counter() - t)
                t = time.perf_counter()
                reader.read(hundred)
                latency["direct_100"].append(time.perf_counter() - t)
                t = time.perf_counter()
                pipe = client.pipeline(transaction=False)
                for i in hundred:
                    pipe.hgetall(f"bench:{i}")
                pipe.execute()
                latency["hgetall_100"].append(time.perf_counter() - t)
        for key in client.scan_iter("bench:*", count=5000):
            client.delete(key)
        for project in projects:  # the materialized keys too (they would live for the view's TTL)
            for key in client.scan_iter(match=f"*{project}".encode(), count=5000):
                client.delete(key)

    n = args.rows
    print(f"{'path':<22} | {'seconds':>8} | {'rows/s':>9} | ratio to pipelined HSET (goal >= 0.5x)")
    for label in ("feast_materialize", "parallel_materialize", "redis_hset"):
        print(
            f"{label:<22} | {results[label]:>8.2f} | {n / results[label]:>9,.0f} | "
            f"{results['redis_hset'] / results[label]:.2f}x"
        )
    print()
    print(f"{'online read':<14} | {'p50 ms':>7} | {'p99 ms':>7} | goal p99")
    for label, goal in (
        ("feast_1", "<= 1 ms"),
        ("direct_1", "<= 1 ms"),
        ("hgetall_1", ""),
        ("feast_100", "<= 8 ms"),
        ("direct_100", "<= 8 ms"),
        ("hgetall_100", ""),
    ):
        samples = latency[label]
        print(
            f"{label:<14} | {percentile(samples, 50):>7.2f} | {percentile(samples, 99):>7.2f} | {goal}  "
            f"(n={len(samples)})"
        )
    print(f"\nmean feast_1 {statistics.mean(latency['feast_1']) * 1000:.2f} ms over {len(latency['feast_1'])} reads")


if __name__ == "__main__":
    main()
