"""The whole catalogue in one backfill: request rate against the limit, memory against 12 months, resume after a kill.

    .venv/bin/movie-platform up && .venv/bin/python benchmarks/catalogue_backfill.py \\
        [--months 408] [--movies 204000] [--limit 600] [--rounds 3]

The local TMDB server (TMDB's wire format, `movie_assets_tests/tmdb_server.py`) holds `--movies` movies
over `--months` release months from 1990-01, each month holding more than the one before (a linear
ramp, as TMDB's catalogue grows: the last months hold about 1.8x the mean). Its limit is raised to
`--limit` requests/s (a 429 for each request over it) and the client's to 95% of that, as 38 is of
TMDB's 40; answers come without added latency, so the machine, not the network, bounds the rate.

Each round runs two backfills, interleaved (the order rotates), each on a fresh schema, folder and
Dagster instance, with `dg launch --assets movies_raw,movies_raw_backup --partition-range ...` (the
CLI twin of a UI backfill, no daemon; the code location's default executor):

- `twelve`: the last 12 months, the densest: the memory baseline of issue 27's goal 2;
- `catalogue`: every month, SIGKILLed (its process group, which this benchmark started) once the
  server has answered half the requests a full crawl makes, then the same command again, which
  resumes and completes. Every movie must then be stored exactly once.

Printed per round and as medians (min..max): requests/s against the limit (requests answered over the
span from a run's first request to its last, retries and the range estimate included), the peak RSS
and PSS of each backfill's process tree (for the catalogue, the larger of the killed run and the
resume), the catalogue's peak RSS over the twelve months', and the resume overhead: requests the
resume made over the requests the full crawl still needed at the kill.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psycopg
from dagster_runs import MemoryPeaks, Scratch, dg_launch, scratch_instance, stack_env, start
from harness import Samples, add_goals_argument, add_rounds_argument, goal_from, record_goals
from psycopg import sql

from movie_platform.local_stack import REPO_ROOT, tail

sys.path.insert(0, str(REPO_ROOT))  # the local TMDB server lives with the tests
from movie_assets_tests.tmdb_server import FakeTmdb, Faults, TmdbTestServer, months_of_movies  # noqa: E402

FIRST_MONTH = dt.date(1990, 1, 1)
BASELINE_MONTHS = 12
ASSETS = "movies_raw,movies_raw_backup"
RUN_DEADLINE_S = 3600
GIB = 2**30


def ramp(months: int, movies: int) -> list[int]:
    """Movies per month rising linearly from about a fifth of the mean to about 1.8x, summing to `movies`."""
    weights = [1 + 8 * n / max(months - 1, 1) for n in range(months)]
    counts = [math.floor(movies * w / sum(weights)) for w in weights]
    counts[-1] += movies - sum(counts)
    return counts


def crawl_requests(counts: list[int]) -> int:
    """What one crawl of these months asks: a discover page per 20 movies (at least one) and one details each."""
    return sum(max(1, math.ceil(n / 20)) + n for n in counts)


class Served:
    """The server's requests from a point on: how many, and the span from the first to the last."""

    def __init__(self, fake: FakeTmdb):
        self.fake, self.mark = fake, len(fake.seen_at)

    @property
    def count(self) -> int:
        return len(self.fake.seen_at) - self.mark

    def rate(self) -> tuple[int, float]:
        arrivals = self.fake.seen_at[self.mark :]
        return len(arrivals), (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 else 0.0


def run_config(limit: float, base_url: str) -> dict:
    """The client's limit raised; run config replaces the resource's whole config, so the rest is given again."""
    config = {"base_url": base_url, "api_key": {"env": "TMDB_API_KEY"}, "requests_per_second": 0.95 * limit}
    return {"resources": {"tmdb": {"config": config}}}


def launch(
    run: Scratch, first: dt.date, last: dt.date, limit: float, log: Path
) -> tuple[subprocess.Popen, MemoryPeaks]:
    """The backfill of first..last started, in its own process group, its memory watched."""
    command = dg_launch(ASSETS, first.isoformat(), last.isoformat(), run_config(limit, run.env["TMDB_BASE_URL"]))
    return start(command, run.env, log)


def launch_to_end(run: Scratch, first: dt.date, last: dt.date, limit: float, log: Path) -> tuple[float, int, int]:
    """The backfill of first..last to its end; its seconds and the peak RSS and PSS of its process tree."""
    started = time.perf_counter()
    process, peaks = launch(run, first, last, limit, log)
    try:
        process.wait(timeout=RUN_DEADLINE_S)
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    finally:
        peaks.stop()
    if process.returncode != 0:
        raise SystemExit(f"dg launch {first}...{last} failed:\n{tail(log, 60)}")
    return time.perf_counter() - started, peaks.rss, peaks.pss


def twelve(stack: dict, scratch: Path, fake: FakeTmdb, windows: list, limit: float, base_url: str) -> dict:
    """The last 12 months, whole: the memory baseline."""
    first, last = windows[-BASELINE_MONTHS][0], windows[-1][0]
    variables = {"TMDB_SOURCE": "api", "TMDB_BASE_URL": base_url, "TMDB_API_KEY": "bench"}
    with scratch_instance(stack, scratch, "bench_twelve", MOVIE_PARTITION_START=first.isoformat(), **variables) as run:
        served = Served(fake)
        seconds, rss, pss = launch_to_end(run, first, last, limit, scratch / f"{run.name}.log")
        requests, span = served.rate()
        stored_once(run, stack)
    return {"seconds": seconds, "rss": rss, "pss": pss, "rate": requests / span / limit}


def catalogue(stack: dict, scratch: Path, fake: FakeTmdb, windows: list, counts: list, limit: float, base_url: str):
    """Every month: killed at half, then the same command again to the end."""
    first, last = windows[0][0], windows[-1][0]
    total = crawl_requests(counts)
    variables = {"TMDB_SOURCE": "api", "TMDB_BASE_URL": base_url, "TMDB_API_KEY": "bench"}
    with scratch_instance(
        stack, scratch, "bench_catalogue", MOVIE_PARTITION_START=first.isoformat(), **variables
    ) as run:
        log = scratch / f"{run.name}.log"
        served = Served(fake)
        started = time.perf_counter()
        killed, killed_peaks = launch(run, first, last, limit, log)
        try:
            while served.count < total / 2:
                if killed.poll() is not None:
                    raise SystemExit(f"the backfill ended before half:\n{tail(log, 60)}")
                if time.perf_counter() - started > RUN_DEADLINE_S:
                    raise SystemExit(f"the backfill made too few requests:\n{tail(log, 60)}")
                time.sleep(0.05)
        finally:
            os.killpg(killed.pid, signal.SIGKILL)  # the group this benchmark started: the CLI and its steps
            killed.wait(timeout=60)
            killed_peaks.stop()
        killed_s = time.perf_counter() - started
        before_kill, killed_span = served.rate()
        stored_at_kill = count(run, stack, "select count(*) from {}.movies_raw")
        resumed = Served(fake)
        resume_s, resume_rss, resume_pss = launch_to_end(run, first, last, limit, log)
        repeated, resume_span = resumed.rate()
        stored_once(run, stack, expected=len(fake.movies))
    remaining = total - before_kill
    return {
        "killed_s": killed_s,
        "resume_s": resume_s,
        "stored_at_kill": stored_at_kill,
        "before_kill": before_kill,
        "repeated": repeated,
        "overhead": repeated / remaining,
        "rss": max(killed_peaks.rss, resume_rss),
        "pss": max(killed_peaks.pss, resume_pss),
        "rate": (before_kill + repeated) / (killed_span + resume_span) / limit,
    }


def count(run: Scratch, stack: dict, query: str) -> int:
    with psycopg.connect(stack["MOVIE_DB_URL"]) as conn:
        return conn.execute(sql.SQL(query).format(sql.Identifier(run.name))).fetchone()[0]


def stored_once(run: Scratch, stack: dict, expected: int | None = None) -> None:
    """Every movie stored exactly once (and, for the catalogue, every movie of the server)."""
    rows = count(run, stack, "select count(*) from {}.movies_raw")
    distinct = count(run, stack, "select count(distinct movie_id) from {}.movies_raw")
    rejected = count(run, stack, "select count(*) from {}.movies_rejected")
    if rows != distinct or rejected or (expected is not None and rows != expected):
        raise SystemExit(
            f"{run.name}: {rows} rows, {distinct} distinct movies, {rejected} rejected; expected {expected}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--months", type=int, default=408, help="release months from 1990-01")
    parser.add_argument("--movies", type=int, default=204_000)
    parser.add_argument("--limit", type=float, default=600, help="the server's requests/s (the client: 95%%)")
    add_rounds_argument(parser)
    add_goals_argument(parser)
    args = parser.parse_args()
    stack = stack_env()
    counts = ramp(args.months, args.movies)
    movies, windows = months_of_movies(FIRST_MONTH, counts)
    fake = FakeTmdb(movies, api_key="bench", faults=Faults(max_requests_per_second=args.limit))
    print(
        f"local TMDB: {len(movies):,} movies in {len(windows)} months ({windows[0][0]:%Y-%m}..{windows[-1][0]:%Y-%m}), "
        f"{counts[0]}..{counts[-1]} a month; a full crawl is {crawl_requests(counts):,} requests; limit "
        f"{args.limit:g} req/s, client {0.95 * args.limit:g}",
        flush=True,
    )
    rows: dict[str, list[dict]] = {"twelve": [], "catalogue": []}
    with TmdbTestServer(fake) as server, tempfile.TemporaryDirectory(prefix="bench-catalogue-") as scratch_dir:
        scratch = Path(scratch_dir)
        for round_no in range(args.rounds):  # interleaved, the order rotating
            order = ["twelve", "catalogue"] if round_no % 2 == 0 else ["catalogue", "twelve"]
            for name in order:
                if name == "twelve":
                    row = twelve(stack, scratch, fake, windows, args.limit, server.base_url)
                    print(
                        f"round {round_no + 1}    twelve: {row['seconds']:6.0f} s, {row['rate']:.2f}x of the limit, "
                        f"peak RSS {row['rss'] / GIB:.2f} GiB, PSS {row['pss'] / GIB:.2f} GiB",
                        flush=True,
                    )
                else:
                    row = catalogue(stack, scratch, fake, windows, counts, args.limit, server.base_url)
                    print(
                        f"round {round_no + 1} catalogue: killed after {row['killed_s']:.0f} s ({row['before_kill']:,} "
                        f"requests, {row['stored_at_kill']:,} movies stored), resumed in {row['resume_s']:.0f} s with "
                        f"{row['repeated']:,} requests ({row['overhead']:.3f}x of what was left); "
                        f"{row['rate']:.2f}x of the limit; peak RSS {row['rss'] / GIB:.2f} GiB, "
                        f"PSS {row['pss'] / GIB:.2f} GiB",
                        flush=True,
                    )
                rows[name].append(row)
    print(f"server answered: {dict(Counter(fake.requests))}")
    figures = {name: {key: Samples([r[key] for r in runs]) for key in runs[0]} for name, runs in rows.items()}
    memory = Samples([c["rss"] / t["rss"] for c, t in zip(rows["catalogue"], rows["twelve"], strict=True)])
    memory_pss = Samples([c["pss"] / t["pss"] for c, t in zip(rows["catalogue"], rows["twelve"], strict=True)])
    cat, base = figures["catalogue"], figures["twelve"]
    print(f"\ncatalogue peak RSS {Samples([v / GIB for v in cat['rss'].values]).describe()} GiB")
    print(f"   twelve peak RSS {Samples([v / GIB for v in base['rss'].values]).describe()} GiB")
    print(f"catalogue / twelve: RSS {memory.describe()}x, PSS {memory_pss.describe()}x")
    print(f"rate of the limit: catalogue {cat['rate'].describe()}x, twelve {base['rate'].describe()}x")
    print(f"resume overhead: {cat['overhead'].describe('.3f')}x of the requests left")
    record_goals(
        args.goals,
        [
            goal_from(
                f"Catalogue backfill ({len(movies):,} movies, {len(windows)} months): peak RSS vs 12 months",
                memory,
                1.2,
                "x",
                False,
                note=f"PSS {memory_pss.median:.2f}x; catalogue {cat['rss'].median / GIB:.2f} GiB RSS",
            ),
            goal_from(
                "Catalogue backfill: request rate vs the raised limit",
                cat["rate"],
                0.9,
                "x",
                True,
                note=f"limit {args.limit:g} req/s, client {0.95 * args.limit:g}",
            ),
            goal_from(
                "Catalogue backfill: resume after SIGKILL at half, requests repeated", cat["overhead"], 1.1, "x", False
            ),
        ],
    )


if __name__ == "__main__":
    main()
