"""A wrong TMDB setting (base URL, key) fails a CLI run in seconds, with no step retry, and says the fix last.

A refused connection was retried 7 times per attempt over 3 step attempts (181 s), and the fix sat
about 65 lines above the end, among four tracebacks. The run (RUN_START to RUN_FAILURE, Dagster's own
timestamps) must end within 15 s, and so must the whole CLI command: it loads the code location twice
(the command and the executor's forkserver), which took 15-20 s on 2 busy cores while loading it imported
Feast, scikit-learn and MLflow, and takes about 6 s now that the steps import them.
"""

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from movie_assets.resources.tmdb_sample import movies_for_month
from movie_assets_tests.conftest import free_port
from movie_assets_tests.tmdb_server import FakeTmdb, TmdbTestServer

PARTITION = "2024-03-01"
KEY = "tmdb-key-not-this-one-5c1e"
RUN_LIMIT_S = 15
WALL_LIMIT_S = 15
EVENT = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}) - dagster - \w+ - \S+ - \S+ - \d+ - (?:\S+ - )?([A-Z_]+) - "
)


def materialize_with(tmdb_env: dict, stack_env: dict, database, tmp_path) -> tuple[int, str, float]:
    """`dagster asset materialize` of one movies_raw month: exit code, stderr and seconds taken.

    A run still going after WALL_LIMIT_S is killed (with its step process) and reported as such.
    """
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **os.environ,
        **stack_env,
        "MOVIE_DB_SCHEMA": database.db_schema,
        "MOVIE_STORAGE_URL": (tmp_path / "objects").as_uri(),
        "DAGSTER_HOME": str(home),
        "TMDB_SOURCE": "api",
        **tmdb_env,
    }
    dagster = os.path.join(os.path.dirname(sys.executable), "dagster")
    command = [
        dagster,
        "asset",
        "materialize",
        "-m",
        "movie_assets",
        "--select",
        "movies_raw",
        "--partition",
        PARTITION,
    ]
    started = time.monotonic()
    run = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        _, stderr = run.communicate(timeout=WALL_LIMIT_S)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        _, stderr = run.communicate()
        pytest.fail(f"still running after {WALL_LIMIT_S} s: {stderr[-2000:]}")
    return run.returncode, stderr, time.monotonic() - started


def last_lines(stderr: str, count: int = 5) -> str:
    return "\n".join(stderr.rstrip().splitlines()[-count:])


def run_seconds(stderr: str) -> float:
    """RUN_START to RUN_FAILURE, from the timestamps of Dagster's console log."""
    times = {
        event: dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S %z")
        for line in stderr.splitlines()
        if (match := EVENT.match(line))
        for stamp, event in [match.groups()]
    }
    return (times["RUN_FAILURE"] - times["RUN_START"]).total_seconds()


def assert_fails_fast(code: int, stderr: str, took: float) -> None:
    assert code != 0 and "RUN_FAILURE" in stderr, stderr[-2000:]
    assert "STEP_UP_FOR_RETRY" not in stderr and "STEP_RESTARTED" not in stderr, "no step retry"
    assert run_seconds(stderr) < RUN_LIMIT_S, f"run took {run_seconds(stderr):.0f} s: {stderr[-2000:]}"
    assert took < WALL_LIMIT_S, f"the CLI took {took:.1f} s: {stderr[-2000:]}"


@pytest.mark.parametrize(
    "base_url, reason",
    [
        (f"http://127.0.0.1:{free_port()}/3", "Connection refused"),
        ("http://tmdb.invalid/3", "Failed to resolve 'tmdb.invalid'"),
    ],
    ids=["refused", "unknown-host"],
)
def test_an_unreachable_tmdb_fails_the_cli_run_in_seconds_with_the_fix_last(
    base_url, reason, stack_env, database, tmp_path
):
    code, stderr, took = materialize_with(
        {"TMDB_BASE_URL": base_url, "TMDB_API_KEY": KEY}, stack_env, database, tmp_path
    )
    tail = last_lines(stderr)
    assert_fails_fast(code, stderr, took)
    assert "TmdbUnreachableError" in tail and reason in tail, tail
    assert f"TMDB is unreachable at {base_url} (TMDB_BASE_URL)" in tail, tail
    assert "Fix: set TMDB_BASE_URL" in tail and "TMDB_SOURCE=sample" in tail, tail
    assert KEY not in stderr


def test_a_401_fails_the_cli_run_in_seconds_with_the_fix_last(stack_env, database, tmp_path):
    with TmdbTestServer(FakeTmdb(movies_for_month(dt.date.fromisoformat(PARTITION)), api_key=KEY)) as server:
        wrong = "tmdb-key-revoked-last-week-77"
        code, stderr, took = materialize_with(
            {"TMDB_BASE_URL": server.base_url, "TMDB_API_KEY": wrong}, stack_env, database, tmp_path
        )
        asked = server.fake.requests["401"]
    tail = last_lines(stderr)
    assert_fails_fast(code, stderr, took)
    assert asked == 1, "a 401 is asked once: neither the client nor the step retries it"
    assert "TmdbAuthError" in tail and "Set TMDB_API_KEY to a valid v3 key" in tail, tail
    assert wrong not in stderr
