"""Event-log weight of one 24-month `eda_stats` run: the bytes it adds to Dagster's event log.

    .venv/bin/movie-platform up && .venv/bin/python benchmarks/event_log.py --goals FILE

Sets up the 24 sample months of `movies_raw` and `movies_clean` once (one single-run backfill, in
a schema of its own on the embedded stack's PostgreSQL), then runs `eda_stats` over the 24 months
`--rounds` times (>= 3). Each run's size is the sum of its serialized events: the bytes the `event`
column of Dagster's `event_logs` table stores for that run. Goal: at most 1 MB a run.

The old layout (the report's summary and four base64 PNGs on each of the 24 partition
materializations) can no longer run; its weight is printed beside, computed from this run: the
report metadata of the last partition's materialization, stored 24 times instead of once.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import dagster as dg
from backfill_overhead import resources
from dagster_shared.serdes import serialize_value
from harness import Samples, add_goals_argument, add_rounds_argument, goal_from, record_goals

from movie_assets.assets.ingest import movies_raw
from movie_assets.assets.prepare import eda_stats, movies_clean
from movie_assets.partitions import RANGE_END_TAG, RANGE_START_TAG
from movie_assets.resources.tmdb_sample import sample_months
from movie_platform.local_stack import Stack

MB = 1_000_000
REPORT_KEYS = ("summary", "plots")  # the report metadata, once per run


def eda_run(res: dict, tags: dict, instance: dg.DagsterInstance) -> dict:
    """One 24-month eda_stats run: its event-log bytes, and those of the report metadata on its last partition."""
    started = time.perf_counter()
    result = dg.materialize(
        [movies_raw, movies_clean, eda_stats], selection=[eda_stats], resources=res, tags=tags, instance=instance
    )
    seconds = time.perf_counter() - started
    assert result.success
    entries = instance.all_logs(result.run_id)
    materializations = sorted(result.asset_materializations_for_node("eda_stats"), key=lambda m: m.partition or "")
    report = sum(len(serialize_value(materializations[-1].metadata[key])) for key in REPORT_KEYS)
    return {
        "bytes": sum(len(serialize_value(entry)) for entry in entries),
        "events": len(entries),
        "partitions": len(materializations),
        "report": report,
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_rounds_argument(parser)
    add_goals_argument(parser)
    args = parser.parse_args()
    db_url = Stack().env().get("MOVIE_DB_URL") or exit("start the embedded stack first: movie-platform up")
    keys = [m.isoformat() for m in sample_months()]
    tags = {RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]}
    schema = f"bench_{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as folder:
        res = resources(db_url, schema, Path(folder))
        instance = dg.DagsterInstance.ephemeral()
        try:
            assert dg.materialize([movies_raw, movies_clean], resources=res, tags=tags, instance=instance).success
            runs = [eda_run(res, tags, instance) for _ in range(args.rounds)]
        finally:
            with res["database"].connect() as conn:
                conn.execute(f'drop schema if exists "{schema}" cascade')

    print(f"eda_stats over {len(keys)} sample months ({keys[0]}..{keys[-1]}), one run each round")
    print(f"{'round':>5} | {'events':>6} | {'materializations':>16} | {'event log':>9} | {'report once':>11} | seconds")
    for number, run in enumerate(runs, 1):
        print(
            f"{number:>5} | {run['events']:>6} | {run['partitions']:>16} | {run['bytes'] / MB:>6.3f} MB | "
            f"{run['report'] / MB:>8.3f} MB | {run['seconds']:.1f}"
        )
    size = Samples([run["bytes"] / MB for run in runs])
    report = Samples([run["report"] / MB for run in runs])
    copied = Samples([(run["bytes"] + (run["partitions"] - 1) * run["report"]) / MB for run in runs])
    print(f"event log per run: {size.describe('.3f')} MB")
    print(
        f"old layout, computed (the report on each of the {runs[0]['partitions']} materializations): "
        f"{copied.describe('.3f')} MB, {copied.median / size.median:.1f}x this run"
    )
    print()
    record_goals(
        args.goals,
        [
            goal_from(
                "Event log: one 24-month eda_stats run",
                size,
                1.0,
                "MB",
                False,
                note=f"report {report.median:.3f} MB stored once; per partition it was {copied.median:.2f} MB",
            )
        ],
    )


if __name__ == "__main__":
    main()
