"""`up` is idempotent, `status`/`env` tell the truth, `doctor` explains a dead service."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

from movie_assets_tests.conftest import movie_platform_cli
from movie_platform.local_stack import _alive


def processes_of(state_dir) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(state_dir) in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def test_up_twice_starts_no_duplicates(test_stack, stack_env):
    before = {row["name"]: row["pid"] for row in test_stack.status()}
    count_before = len(processes_of(test_stack.state_dir))
    messages = []
    assert test_stack.up(log=messages.append) == stack_env
    after = {row["name"]: row["pid"] for row in test_stack.status()}
    assert after == before
    assert len(processes_of(test_stack.state_dir)) == count_before
    assert sum("already running" in m for m in messages) == 3, messages


def test_env_configures_a_shell(test_stack, stack_env):
    env = {**os.environ, "MOVIE_PLATFORM_STATE_DIR": str(test_stack.state_dir)}
    script = (
        f'eval "$({sys.executable} -m movie_platform.cli env)" && '
        "python -c \"import os; print(os.environ['MOVIE_DB_URL'], os.environ['DAGSTER_HOME'])\" && "
        "dagster instance info"
    )
    clean = {k: v for k, v in env.items() if not k.startswith(("MOVIE_DB", "DAGSTER_HOME", "MLFLOW", "MOVIE_REDIS"))}
    clean["PATH"] = f"{os.path.dirname(sys.executable)}:{clean['PATH']}"
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=clean, timeout=120)
    assert result.returncode == 0, result.stderr
    assert stack_env["MOVIE_DB_URL"] in result.stdout
    assert "PostgresRunStorage" in result.stdout, "the Dagster instance must store runs in PostgreSQL"


def test_doctor_all_green_then_explains_dead_postgres(test_stack, stack_env):
    env = {**os.environ, **stack_env}
    healthy = movie_platform_cli("doctor", env=env)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert healthy.stdout.count("OK  ") == 5

    pg_pid = next(row["pid"] for row in test_stack.status() if row["name"] == "postgres")
    if pg_pid is None:  # PostgreSQL is external here: point doctor at a dead one instead of killing it
        env = {**env, "MOVIE_DB_URL": "postgresql://movie:pw@127.0.0.1:9/movies"}
        pg_pid = os.getpid() + 10**7  # never alive
    else:
        os.kill(pg_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _alive(pg_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        broken = movie_platform_cli("doctor", env=env)
        assert broken.returncode == 1
        assert "Traceback" not in broken.stdout + broken.stderr
        line = next(line for line in broken.stdout.splitlines() if "postgres" in line)
        assert line.startswith("FAIL") and "movie-platform up" in line and "MOVIE_DB_URL" in line, line
        if _alive(pg_pid) is False and env["MOVIE_DB_URL"] == stack_env["MOVIE_DB_URL"]:
            status = movie_platform_cli("status", env={**env, "MOVIE_PLATFORM_STATE_DIR": str(test_stack.state_dir)})
            assert any(row.startswith("postgres") and "stopped" in row for row in status.stdout.splitlines()), (
                status.stdout
            )
    finally:
        # `up` recovers from the crash: it removes the stale postmaster.pid and restarts postgres.
        assert test_stack.up(log=print) == stack_env
    assert movie_platform_cli("doctor", env=env).returncode == 0
