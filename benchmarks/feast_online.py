"""Feast online store: materialization into Redis vs pipelined HSET, and online reads vs pipelined HGETALL.

    .venv/bin/movie-platform up && .venv/bin/python benchmarks/feast_online.py --rows 1000000

Same rows, same Redis, one process run, each path --rounds times (>= 3) in turn. Goals:
`materialize_parallel` >= 0.9x of pipelined HSET of the same rows (batches of 1,000); the
platform's online read (`OnlineReader.read_values`, what serving calls) p99 <= 1.2x of a raw
pipelined HGETALL of the same Feast keys, for 1 and 100 movies. `OnlineReader.read` (the same
values as a DataFrame), the Feast SDK's read (and, with --stock-feast, its materialize) are
printed beside them for reference.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import redis
from harness import (
    Samples,
    add_goals_argument,
    add_rounds_argument,
    goal_from,
    interleaved,
    ratio,
    record_goals,
)

from movie_assets.domain.feature_engineering import FEATURE_NAMES, FLOAT_FEATURES
from movie_assets.feature_definitions import FEATURE_SERVICE
from movie_assets.object_layout import FEATURES_OBJECT_PATH
from movie_assets.resources.feast import FeastStore
from movie_assets.resources.object_store import ObjectStore, write_atomically
from movie_assets.resources.online_materialize import materialize_parallel
from movie_assets.resources.online_writer import OnlineReader
from movie_platform.local_stack import Stack

# A recent event time, as a fresh materialization has (the view has no TTL: any age would be written).
EVENT = pd.Timestamp.now(tz="UTC").floor("D") - pd.Timedelta(days=1)
HSET_BATCH = 1_000


def feature_rows(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"movie_id": np.arange(1, n + 1, dtype=np.int64), "event_timestamp": EVENT, "created": EVENT})
    for name in FEATURE_NAMES:
        frame[name] = rng.random(n) * 100 if name in FLOAT_FEATURES else rng.integers(0, 2, n)
    return frame


def p99_ms(samples: list[float]) -> float:
    return float(np.percentile(np.array(samples) * 1000, 99))


def p50_ms(samples: list[float]) -> float:
    return float(np.percentile(np.array(samples) * 1000, 50))


def delete_matching(client: redis.Redis, pattern: bytes) -> None:
    with client.pipeline(transaction=False) as pipe:
        for key in client.scan_iter(match=pattern, count=10_000):
            pipe.unlink(key)
            if len(pipe) >= 10_000:
                pipe.execute()
        pipe.execute()


def drop_project(feast: FeastStore) -> None:
    """Delete one benchmark project: its Redis keys (they end with the project name) and its registry rows.

    Not `FeatureStore.teardown()`: with the shared SQL registry that deletes every project, the
    stack's own `movie_platform` too.
    """
    delete_matching(redis.Redis.from_url(feast.redis_url), b"*" + feast.project.encode())
    feast.store().registry.delete_project(feast.project)


class Materializations:
    """The write paths; each round writes into a fresh project / key prefix, the last round's keys are dropped."""

    def __init__(self, env: dict, storage_url: str, rows: pd.DataFrame, client: redis.Redis):
        self.env, self.storage_url, self.rows, self.client = env, storage_url, rows, client
        self.feast: FeastStore | None = None
        self.stock: FeastStore | None = None
        self.hset_prefix = b""

    def fresh_project(self) -> FeastStore:
        feast = FeastStore(
            db_url=self.env["MOVIE_DB_URL"],
            redis_url=self.env["MOVIE_REDIS_URL"],
            storage_url=self.storage_url,
            project=f"bench_{uuid.uuid4().hex[:8]}",
        )
        feast.store().apply(list(feast.definitions().values()))
        return feast

    def before(self, path: str) -> None:
        """Untimed: drop what the previous round of `path` wrote (Redis holds one copy at a time) and set up."""
        if path == "parallel_materialize":
            if self.feast is not None:
                drop_project(self.feast)
            self.feast = self.fresh_project()
        elif path == "feast_materialize":
            if self.stock is not None:
                drop_project(self.stock)
            self.stock = self.fresh_project()
        else:
            if self.hset_prefix:
                delete_matching(self.client, self.hset_prefix + b"*")
            self.hset_prefix = f"bench{uuid.uuid4().hex[:6]}:".encode()

    def parallel(self) -> None:
        assert self.feast is not None
        materialize_parallel(self.feast, *window())

    def stock_feast(self) -> None:
        assert self.stock is not None
        start, end = window()
        self.stock.store().materialize(start_date=start, end_date=end, feature_views=["movie_features"])

    def hset(self) -> None:
        """The baseline: the same rows as plain hashes, pipelined HSET in batches of 1,000."""
        values = self.rows[FEATURE_NAMES].astype("float64").to_numpy()
        ids = self.rows["movie_id"].to_numpy()
        with self.client.pipeline(transaction=False) as pipe:
            for i, movie_id in enumerate(ids):
                pipe.hset(
                    self.hset_prefix + str(movie_id).encode(),
                    mapping=dict(zip(FEATURE_NAMES, values[i].tolist(), strict=True)),
                )
                if i % HSET_BATCH == HSET_BATCH - 1:
                    pipe.execute()
            pipe.execute()

    def cleanup(self) -> None:
        for feast in (self.feast, self.stock):
            if feast is not None:
                drop_project(feast)
        if self.hset_prefix:
            delete_matching(self.client, self.hset_prefix + b"*")


def window():
    start, end = EVENT - pd.Timedelta(days=1), EVENT + pd.Timedelta(days=1)
    return start.to_pydatetime(), end.to_pydatetime()


def read_latencies(feast: FeastStore, ids: np.ndarray, reads: int, seed: int) -> dict[str, list[float]]:
    """Seconds per read of each path; the paths take turns on the same random movies."""
    store = feast.store()
    service = store.get_feature_service(FEATURE_SERVICE)
    reader = OnlineReader(store, store.get_feature_view("movie_features"))
    client = reader.client
    keys_of = reader.layout.keys
    rng = np.random.default_rng(seed)

    def hgetall(movies: list[int]) -> None:
        with client.pipeline(transaction=False) as pipe:
            for key in keys_of(np.asarray(movies, dtype="int64")):
                pipe.hgetall(key)
            pipe.execute()

    paths = {
        "platform": lambda movies: reader.read_values(movies),  # the serving path: values, no DataFrame
        "platform_frame": lambda movies: reader.read(movies),
        "hgetall": hgetall,
        "feast_sdk": lambda movies: store.get_online_features(
            features=service, entity_rows=[{"movie_id": m} for m in movies]
        ),
    }
    names = list(paths)
    latency: dict[str, list[float]] = {f"{name}_{size}": [] for size in (1, 100) for name in names}
    for turn in range(reads):
        shift = turn % len(names)
        for size in (1, 100) if turn % 10 == 0 else (1,):
            movies = [int(i) for i in rng.choice(ids, size, replace=False)]
            for name in names[shift:] + names[:shift]:
                started = time.perf_counter()
                paths[name](movies)
                latency[f"{name}_{size}"].append(time.perf_counter() - started)
    return latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reads", type=int, default=2_000, help="1-movie reads per round (a tenth for 100 movies)")
    add_rounds_argument(parser)
    parser.add_argument("--stock-feast", action="store_true", help="also time FeatureStore.materialize (slow)")
    add_goals_argument(parser)
    args = parser.parse_args()
    env = {**Stack().env(), **os.environ}
    client = redis.Redis.from_url(env["MOVIE_REDIS_URL"])
    rows = feature_rows(args.rows)
    with tempfile.TemporaryDirectory() as folder:
        objects = ObjectStore(storage_url=Path(folder).as_uri())
        for month in range(1, 13):  # spread over 12 monthly objects like the real dataset
            part = rows[rows["movie_id"] % 12 == month - 1]
            write_atomically(
                objects.path_for(FEATURES_OBJECT_PATH, f"2024-{month:02d}-01"), part.to_parquet(index=False)
            )
        writes = Materializations(env, objects.storage_url, rows, client)
        paths = {"parallel_materialize": writes.parallel, "redis_hset": writes.hset}
        if args.stock_feast:
            paths["feast_materialize"] = writes.stock_feast
        try:
            seconds = interleaved(paths, args.rounds, before_each=writes.before)
            assert writes.feast is not None
            rounds = [
                read_latencies(writes.feast, rows["movie_id"].to_numpy(), args.reads, seed)
                for seed in range(args.rounds)
            ]
        finally:
            writes.cleanup()

    n = args.rows
    print(f"{n:,} movies x {len(FEATURE_NAMES)} features; {args.rounds} interleaved rounds")
    print(f"{'path':<22} | {'seconds median (min..max)':>27} | {'rows/s':>9} | per-round ratio to pipelined HSET")
    for label, samples in seconds.items():
        print(
            f"{label:<22} | {samples.describe():>27} | {n / samples.median:>9,.0f} | "
            f"{ratio(seconds['redis_hset'], samples).describe()}x"
        )
    print()
    print(f"{'online read':<14} | {'p50 ms median of rounds':>24} | {'p99 ms median (min..max)':>26} | reads per round")
    p99 = {label: Samples([p99_ms(r[label]) for r in rounds]) for label in rounds[0]}
    for label in rounds[0]:
        p50 = Samples([p50_ms(r[label]) for r in rounds]).median
        print(f"{label:<14} | {p50:>24.3f} | {p99[label].describe('.3f'):>26} | {len(rounds[0][label])}")
    print()
    record_goals(
        args.goals,
        [
            goal_from(
                f"Online materialize {n:,} rows vs pipelined HSET",
                ratio(seconds["redis_hset"], seconds["parallel_materialize"]),
                0.9,
                "x",
                True,
            ),
            goal_from(
                "Online read_values p99, 1 movie, vs pipelined HGETALL",
                ratio(p99["platform_1"], p99["hgetall_1"]),
                1.2,
                "x",
                False,
            ),
            goal_from(
                "Online read_values p99, 100 movies, vs pipelined HGETALL",
                ratio(p99["platform_100"], p99["hgetall_100"]),
                1.2,
                "x",
                False,
            ),
        ],
    )


if __name__ == "__main__":
    main()
