"""A CLI backfill killed at about half resumes: the same command completes, each movie once, little repeated.

No daemon runs. The backfill is `dg launch` (as the README teaches it) over 24 months of the local TMDB server,
in its own process group, SIGKILLed (the whole group, which the test started) once the server has
answered about half of the requests a full crawl makes. Then the same command again:

- `movie-platform doctor` names the dead run that holds the `tmdb_api` slot;
- the command does not wait for that slot (the executor fails the dead run, naming its process, and
  frees the slot);
- while the killed run ran, each month it stored showed up as materialized, with progress in requests
  against an estimate from TMDB's own count;
- it skips the months the killed run had stored (each month was committed as it was crawled);
- every movie is stored once, and it asks the server at most 1.1x the requests that were left.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from movie_assets.resources.tmdb_sample import movies_for_month, sample_months
from movie_assets_tests.conftest import movie_platform_cli
from movie_assets_tests.integration.dagster_instance import daemon_env, own_instance_home
from movie_assets_tests.integration.test_change_sync import query
from movie_assets_tests.tmdb_server import FakeTmdb, TmdbTestServer
from movie_platform.local_stack import REPO_ROOT, tail

MOVIES_PER_MONTH = 60  # x 24 months: a lost month at the kill is a few percent of what is left
RERUN_DEADLINE_S = 300


@pytest.fixture
def instance_home(stack_env, tmp_path):
    """A Dagster instance as `movie-platform up` writes it (tmdb_api pool of 1), and no daemon."""
    with own_instance_home(stack_env["MOVIE_DB_URL"], tmp_path / "dagster_home", "dagster_resume") as home:
        yield home


def full_crawl_requests(fake: FakeTmdb, months: int) -> int:
    """What one crawl of every month asks: its discover pages (20 a page) and one details request per movie."""
    by_month: dict[str, int] = {}
    for movie_id in fake.catalogue():
        month = fake.truth(movie_id)["release_date"][:7]
        by_month[month] = by_month.get(month, 0) + 1
    assert len(by_month) == months
    return sum(math.ceil(n / 20) + n for n in by_month.values())


def backfill(env: dict, log_file: Path) -> subprocess.Popen:
    first, last = sample_months()[0].isoformat(), sample_months()[-1].isoformat()
    command = [str(Path(sys.executable).with_name("dg")), "launch", "-m", "movie_assets"]  # as the README says
    with open(log_file, "ab") as out:
        return subprocess.Popen(
            [*command, "--assets", "movies_raw", "--partition-range", f"{first}...{last}"],
            env=env,
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def test_a_killed_cli_backfill_resumes_with_the_same_command(
    database, object_store, stack_env, instance_home, tmp_path
):
    movies = [m for month in sample_months() for m in movies_for_month(month, MOVIES_PER_MONTH)]
    with TmdbTestServer(FakeTmdb(movies)) as server:
        fake = server.fake
        total = full_crawl_requests(fake, len(sample_months()))
        env = daemon_env(instance_home, database, object_store, server.base_url)
        log_file = tmp_path / "backfill.log"
        killed = backfill(env, log_file)
        deadline = time.monotonic() + RERUN_DEADLINE_S
        while sum(fake.requests.values()) < total / 2:
            assert killed.poll() is None, f"the backfill ended before half:\n{tail(log_file, 40)}"
            assert time.monotonic() < deadline, f"the backfill made too few requests:\n{tail(log_file, 40)}"
            time.sleep(0.05)
        os.killpg(killed.pid, signal.SIGKILL)  # the group the test started: CLI and its step process
        killed.wait(timeout=30)
        before_kill = sum(fake.requests.values())
        stored_at_kill = query(database, "select count(*) from {schema}.movies_raw")[0][0]
        print(f"killed after {before_kill} of {total} requests, {stored_at_kill} movies stored")
        assert stored_at_kill > 0, "the killed run committed no month"
        stored_months = {str(r[0]) for r in query(database, "select distinct release_month from {schema}.movies_raw")}
        with dg.DagsterInstance.from_config(str(instance_home)) as instance:
            (killed_run,) = instance.get_runs()
            records = instance.fetch_materializations(dg.AssetKey("movies_raw"), limit=1000).records
            messages = [e.message or "" for e in instance.all_logs(killed_run.run_id)]
        # The UI filled in while the run ran: each stored month is materialized (the last one may have been
        # committed a moment before the kill and before its event), with the range's progress in requests.
        shown = {r.partition_key for r in records}
        assert shown <= stored_months and len(shown) >= len(stored_months) - 1, (shown, stored_months)
        estimate = next(m for m in messages if m.startswith("TMDB lists "))
        listed = len(fake.catalogue())
        assert f"TMDB lists {listed:,} movies in the {len(sample_months())} months" in estimate, estimate
        last = max(records, key=lambda r: r.storage_id).asset_materialization.metadata
        assert 0 < last["range_requests_done"].value < last["range_requests_estimated"].value
        assert abs(last["range_requests_estimated"].value - total) <= 0.05 * total, (last, total)
        report = movie_platform_cli("doctor", env=env)
        line = next(line for line in report.stdout.splitlines() if " dagster " in line)
        assert line.startswith("FAIL") and killed_run.run_id in line and "run the same command again" in line, line

        fake.requests.clear()
        rerun = backfill(env, log_file)
        try:
            rerun.wait(timeout=RERUN_DEADLINE_S)
        except subprocess.TimeoutExpired:
            os.killpg(rerun.pid, signal.SIGKILL)
            rerun.wait(timeout=30)
            pytest.fail(f"the same command did not complete in {RERUN_DEADLINE_S}s:\n{tail(log_file, 60)}")
        assert rerun.returncode == 0, tail(log_file, 60)
        repeated = sum(fake.requests.values())
        remaining = total - before_kill
        print(f"rerun: {repeated} requests for the {remaining} left ({repeated / remaining:.2f}x)")
        assert repeated <= 1.1 * remaining, (repeated, remaining)

        stored = query(database, "select movie_id, count(*) from {schema}.movies_raw group by movie_id")
        rejected = {r[0] for r in query(database, "select movie_id from {schema}.movies_rejected")}
        assert all(n == 1 for _, n in stored), "a movie stored twice"
        assert {m for m, _ in stored} | rejected == set(fake.catalogue()), "a movie neither stored nor rejected"
        assert not {m for m, _ in stored} & rejected

        with dg.DagsterInstance.from_config(str(instance_home)) as instance:
            runs = instance.get_runs()
            dead = [r for r in runs if r.status == dg.DagsterRunStatus.FAILURE]
            assert len(runs) == 2 and len(dead) == 1, [(r.run_id, r.status) for r in runs]
            failure = instance.all_logs(dead[0].run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
            assert "has exited without reporting an end" in failure[-1].message
            done = instance.get_latest_materialization_event(dg.AssetKey("movies_raw"))
            metadata = done.asset_materialization.metadata
            assert metadata["months_resumed"].value > 0 and metadata["resumed_from_run"].value == dead[0].run_id
