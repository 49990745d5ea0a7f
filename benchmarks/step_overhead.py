"""Step overhead of a range run: the time after the crawl step ends, and the process tree's memory, per start method.

    .venv/bin/movie-platform up && .venv/bin/python benchmarks/step_overhead.py [--months 72] [--rounds 3]

Each round launches the same run once per start method of Dagster's multiprocess executor, in turn:
`dg launch -m movie_assets --assets movies_raw,movies_raw_backup --partition-range ...` (the CLI twin of
a UI backfill, no daemon) over the offline sample (TMDB_SOURCE=sample: the crawl is not the subject),
each run on a fresh schema, folder and Dagster instance database. The start methods:

- `spawn`: Dagster's default, a fresh interpreter per step that imports the code location again;
- `forkserver`: the code location's default (`automation/executor.py`), steps forked from a server
  that imported `movie_assets.definitions` once;
- `in_process`: every step in the run's own process (the reference: no step start at all).

Measured per run: seconds from the crawl step's STEP_SUCCESS to the run's end (the five storage checks
and the backup: "the time after the crawl step ends" of issue 27), the run's wall time, and the peak of
the process tree's memory, as the sum of RSS and the sum of PSS (PSS counts a page that forked
processes share once; RSS counts it in each). Medians (min..max) of the interleaved rounds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import dagster as dg
from dagster_runs import dg_launch, scratch_instance, stack_env, start
from harness import Samples, add_goals_argument, add_rounds_argument, goal_from, ratio, record_goals

from movie_assets.partitions import add_months
from movie_assets.resources.tmdb_sample import sample_months
from movie_platform.local_stack import tail

METHODS = {
    "spawn": {"multiprocess": {"start_method": {"spawn": {}}}},
    "forkserver": {"multiprocess": {"start_method": {"forkserver": {"preload_modules": ["movie_assets.definitions"]}}}},
    "in_process": {"in_process": {}},
}
CRAWL_STEP = "movies_raw"


def launch(method: str, months: int, stack: dict[str, str], scratch: Path) -> dict[str, float]:
    """One run on its own schema, folder and instance database; its timings and memory peaks."""
    last = sample_months()[-1]
    first = add_months(last, -(months - 1))
    variables = {"TMDB_SOURCE": "sample", "MOVIE_PARTITION_START": first.isoformat()}
    with scratch_instance(stack, scratch, "bench_steps", **variables) as run:
        command = dg_launch(
            "movies_raw,movies_raw_backup",
            first.isoformat(),
            last.isoformat(),
            {"execution": {"config": METHODS[method]}},
        )
        log = scratch / f"{run.name}.log"
        started = time.perf_counter()
        process, peaks = start(command, run.env, log)
        process.wait()
        wall = time.perf_counter() - started
        peaks.stop()
        if process.returncode != 0:
            raise SystemExit(f"{method}: dg launch failed:\n{tail(log, 60)}")
        with dg.DagsterInstance.from_config(str(run.home)) as instance:
            (dagster_run,) = instance.get_runs()
            events = instance.all_logs(dagster_run.run_id)
    success = dg.DagsterEventType.STEP_SUCCESS
    crawl_done = next(e.timestamp for e in events if e.step_key == CRAWL_STEP and e.dagster_event_type == success)
    run_end = max(e.timestamp for e in events if e.dagster_event_type == dg.DagsterEventType.RUN_SUCCESS)
    return {"after_crawl": run_end - crawl_done, "wall": wall, "rss": peaks.rss / 2**20, "pss": peaks.pss / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--months", type=int, default=72)
    add_rounds_argument(parser)
    add_goals_argument(parser)
    args = parser.parse_args()
    stack = stack_env()
    names = list(METHODS)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="bench-steps-") as scratch:
        for round_no in range(args.rounds):  # interleaved, the order rotating
            shift = round_no % len(names)
            for name in names[shift:] + names[:shift]:
                row = launch(name, args.months, stack, Path(scratch))
                runs[name].append(row)
                print(
                    f"round {round_no + 1} {name:>10}: after the crawl step {row['after_crawl']:6.1f} s, run "
                    f"{row['wall']:6.1f} s, peak RSS {row['rss']:7.0f} MiB, peak PSS {row['pss']:7.0f} MiB",
                    flush=True,
                )
    figures = {name: {key: Samples([r[key] for r in rows]) for key in rows[0]} for name, rows in runs.items()}
    print(f"\n{args.months}-month range run of movies_raw + movies_raw_backup (5 storage checks), sample source")
    for name in names:
        f = figures[name]
        print(
            f"{name:>10}: after the crawl step {f['after_crawl'].describe('.1f')} s; "
            f"run {f['wall'].describe('.1f')} s; "
            f"peak RSS {f['rss'].describe('.0f')} MiB; peak PSS {f['pss'].describe('.0f')} MiB"
        )
    for key in ("after_crawl", "pss"):
        print(f"forkserver / spawn, {key}: {ratio(figures['forkserver'][key], figures['spawn'][key]).describe('.2f')}x")
    fork = figures["forkserver"]
    record_goals(
        args.goals,
        [
            goal_from(f"{args.months}-month crawl run: time after the crawl step", fork["after_crawl"], 10, "s", False),
            goal_from(
                f"{args.months}-month crawl run: peak PSS, forkserver vs spawn",
                ratio(fork["pss"], figures["spawn"]["pss"]),
                1.0,
                "x",
                False,
                note="below 1: memory dropped",
            ),
        ],
    )


if __name__ == "__main__":
    main()
