"""Object-store IO manager vs direct boto3 (S3 API server on loopback) and plain pyarrow (a folder).

    .venv/bin/python benchmarks/object_store.py --rows 200000

The same movie_features-shaped frame (movie_id, event_timestamp, 40 float features) each time.
S3: the platform's write/read of the Parquet object (one PutObject/GetObject through the S3
resource's client) vs boto3 put_object/get_object of the same bytes (goal >= 0.8x). Folder: the IO
manager's DataFrame -> Parquet -> atomic file and back vs `pyarrow.parquet.write_table` / `read_table().to_pandas()`.
Each pair runs --rounds times (>= 3), interleaved; medians with min..max and per-round ratios.
The S3 API server is moto, started here on its own port.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster_aws.s3 import S3Resource
from harness import add_goals_argument, add_rounds_argument, goal_from, interleaved, ratio, record_goals

from movie_assets.object_layout import FEATURES_OBJECT_PATH
from movie_assets.resources.object_store import ObjectStore, ObjectStoreIOManager, _serialize
from movie_platform.local_stack import S3_TEST_CREDENTIALS, _port_open, _terminate

PORT = 19100
BUCKET = "bench-objects"
KEY = "2024-03-01"


def features_frame(rows: int, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, 40)), columns=[f"f{i:02d}" for i in range(40)])
    frame.insert(0, "movie_id", np.arange(rows, dtype=np.int64))
    frame.insert(1, "event_timestamp", pd.Timestamp("2024-03-01", tz="UTC"))
    return frame


def s3_rows(frame: pd.DataFrame, rounds: int) -> list[tuple]:
    credentials = {k.lower(): v for k, v in S3_TEST_CREDENTIALS.items() if k != "AWS_DEFAULT_REGION"}
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not _port_open(PORT) and time.monotonic() < deadline:
            time.sleep(0.2)
        url = f"http://127.0.0.1:{PORT}"
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1", **credentials)
        client.create_bucket(Bucket=BUCKET)
        store = ObjectStore(
            storage_url=f"s3://{BUCKET}/platform",
            s3=S3Resource(endpoint_url=url, region_name="us-east-1", **credentials),
        )
        data = _serialize(frame, FEATURES_OBJECT_PATH)
        path = store.path_for(FEATURES_OBJECT_PATH, KEY)
        store.write(FEATURES_OBJECT_PATH, KEY, data)  # warm both paths (connections, s3fs caches)
        client.put_object(Bucket=BUCKET, Key="direct/part.parquet", Body=data)
        writes = interleaved(
            {
                "write": lambda: store.write(FEATURES_OBJECT_PATH, KEY, data),
                "put": lambda: client.put_object(Bucket=BUCKET, Key="direct/part.parquet", Body=data),
            },
            rounds,
        )
        reads = interleaved(
            {
                "read": lambda: store.read(FEATURES_OBJECT_PATH, KEY),
                "get": lambda: client.get_object(Bucket=BUCKET, Key="direct/part.parquet")["Body"].read(),
            },
            rounds,
        )
        assert path.read_bytes() == data  # what the platform wrote, as s3fs (and Feast) read it
    finally:
        _terminate(server.pid)
    mb = len(data) / 1e6
    return [
        ("S3 write", "platform ObjectStore", writes["write"], "boto3 put_object", writes["put"], mb),
        ("S3 read", "platform ObjectStore", reads["read"], "boto3 get_object", reads["get"], mb),
    ]


def folder_rows(frame: pd.DataFrame, rounds: int) -> list[tuple]:
    with tempfile.TemporaryDirectory() as folder:
        store = ObjectStore(storage_url=Path(folder, "platform").as_uri())
        plain = Path(folder, "plain.parquet")
        path = store.path_for(FEATURES_OBJECT_PATH, KEY)
        writes = interleaved(
            {
                "write": lambda: store.write(FEATURES_OBJECT_PATH, KEY, _serialize(frame, FEATURES_OBJECT_PATH)),
                "arrow": lambda: pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), plain),
            },
            rounds,
        )
        io_manager = ObjectStoreIOManager(store=store)
        reads = interleaved(
            {
                "read": lambda: io_manager.load_object(FEATURES_OBJECT_PATH, KEY),
                "arrow": lambda: pq.read_table(plain).to_pandas(),
            },
            rounds,
        )
        mb = path.stat().st_size / 1e6
    return [
        ("folder write", "platform (IO manager)", writes["write"], "pyarrow write_table", writes["arrow"], mb),
        ("folder read", "platform (IO manager)", reads["read"], "pyarrow read_table", reads["arrow"], mb),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    add_rounds_argument(parser, default=5)
    add_goals_argument(parser)
    args = parser.parse_args()
    frame = features_frame(args.rows)
    rows = s3_rows(frame, args.rounds) + folder_rows(frame, args.rounds)
    print(f"{args.rows:,} rows x {frame.shape[1]} columns; seconds are medians (min..max) of {args.rounds} rounds")
    print(
        f"{'operation':<13} | {'MB':>5} | {'platform':>22} {'s':>20} | {'baseline':>20} {'s':>20} | per-round ratio "
        "(baseline s / platform s)"
    )
    goals = []
    for op, name, seconds, base_name, base_seconds, mb in rows:
        per_round = ratio(base_seconds, seconds)
        print(
            f"{op:<13} | {mb:>5.1f} | {name:>22} {seconds.describe('.3f'):>20} | {base_name:>20} "
            f"{base_seconds.describe('.3f'):>20} | {per_round.describe()}x"
        )
        if op.startswith("S3"):
            goals.append(goal_from(f"Object store {op} {mb:.0f} MB vs boto3", per_round, 0.8, "x", True))
    print()
    record_goals(args.goals, goals)


if __name__ == "__main__":
    main()
