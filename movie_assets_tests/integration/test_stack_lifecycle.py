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
    assert healthy.stdout.count("OK  ") == 6  # five services and the Dagster instance's runs

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


def test_doctor_and_status_work_in_a_fresh_shell(test_stack, stack_env):
    """No `eval "$(movie-platform env)"`: doctor read the Dagster instance without the password its
    dagster.yaml takes from the environment, and failed it blaming PostgreSQL, which was running."""
    fresh = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("MOVIE_", "DAGSTER_", "MLFLOW_", "AWS_", "TMDB_"))
    }
    fresh.update(MOVIE_PLATFORM_STATE_DIR=str(test_stack.state_dir))
    fresh.update({name: value for name, value in stack_env.items() if name.endswith("_PORT")})  # its own ports
    doctor = movie_platform_cli("doctor", env=fresh)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert doctor.stdout.count("OK  ") == 6, doctor.stdout
    assert "OK  dagster" in doctor.stdout, doctor.stdout
    status = movie_platform_cli("status", env=fresh)
    assert status.returncode == 0, status.stdout + status.stderr
    for service in ("postgres", "redis", "mlflow"):
        assert any(row.startswith(service) and "running" in row for row in status.stdout.splitlines()), status.stdout


def test_doctor_names_the_postgres_port_another_process_holds(tmp_path):
    """`up` refuses a taken port and sets nothing: doctor must say so, not "MOVIE_DB_URL is not set"."""
    import socket

    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MOVIE_", "MLFLOW_", "DAGSTER_", "FEAST_", "TMDB_"))
    }
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env.update(MOVIE_PLATFORM_STATE_DIR=str(tmp_path / "never_started"), MOVIE_PG_PORT=str(port))
        result = movie_platform_cli("doctor", env=env)
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    line = next(line for line in result.stdout.splitlines() if " postgres " in line)
    assert line.startswith("FAIL") and f"port {port} on 127.0.0.1" in line and "MOVIE_PG_PORT" in line, line
    redis = next(line for line in result.stdout.splitlines() if " redis " in line)
    assert "MOVIE_REDIS_URL is not set" in redis and "taken" not in redis, redis


def test_doctor_reports_a_run_stuck_in_started_and_its_fix_frees_the_pool(stack_env, tmp_path):
    """A STARTED run whose code server is gone holds tmdb_api: doctor names it and a command that works."""
    import json
    import socket
    import uuid
    from pathlib import Path

    import dagster as dg
    import psycopg
    from dagster._core.storage.tags import GRPC_INFO_TAG
    from psycopg import sql

    from movie_platform.local_stack import write_dagster_home

    name = f"dagster_doctor_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(stack_env["MOVIE_DB_URL"], autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    try:
        home = tmp_path / "dagster_home"
        write_dagster_home(home, stack_env["MOVIE_DB_URL"], database=name)
        with socket.socket() as probe:  # a port nobody listens on: the code server that ran the crawl is gone
            probe.bind(("127.0.0.1", 0))
            dead_port = probe.getsockname()[1]
        with dg.DagsterInstance.from_config(str(home)) as instance:
            run = instance.create_run_for_job(
                dg.GraphDefinition("crawl").to_job(),
                status=dg.DagsterRunStatus.STARTED,
                tags={
                    GRPC_INFO_TAG: json.dumps({"host": "127.0.0.2", "port": dead_port}),
                    "dagster/partition": "2024-03-01",
                },
            )
            instance.event_log_storage.claim_concurrency_slot("tmdb_api", run.run_id, "movies_raw")
            assert run.run_id in instance.event_log_storage.get_concurrency_run_ids()

            env = {**os.environ, **stack_env, "DAGSTER_HOME": str(home)}
            report = movie_platform_cli("doctor", env=env)
            assert report.returncode == 1 and "Traceback" not in report.stdout + report.stderr, report.stderr
            line = next(line for line in report.stdout.splitlines() if " dagster " in line)
            assert line.startswith("FAIL") and run.run_id in line and "crawl 2024-03-01" in line, line
            assert f"127.0.0.2:{dead_port} that ran this run is gone" in line and "make dev" in line, line
            fix = f"dagster run delete -f {run.run_id}"
            assert fix in line, line

            dagster = str(Path(sys.executable).with_name("dagster"))
            done = subprocess.run([dagster, *fix.split()[1:]], env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stdout + done.stderr
            assert not instance.event_log_storage.get_concurrency_run_ids(), "the offered fix frees the tmdb_api slot"
            again = movie_platform_cli("doctor", env=env)
            line = next(line for line in again.stdout.splitlines() if " dagster " in line)
            assert line.startswith("OK") and "no run stuck" in line, line
    finally:
        with psycopg.connect(stack_env["MOVIE_DB_URL"], autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
