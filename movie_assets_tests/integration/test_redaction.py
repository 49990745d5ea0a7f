"""With real passwords on every service, none of them shows up where users and the UI look.

Runs after the session's demo (materializations, a training run in MLflow, a change sync),
so the stores below hold real runs. Each password is searched for as it is and in the encodings
a URL gives it (`%40`-style, and Dagster's own quoting that keeps `/`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from movie_assets.settings import database_url
from movie_assets_tests.conftest import movie_platform_cli
from movie_platform.stack_secrets import secrets_file


def secret_forms(state_dir: Path) -> dict[str, str]:
    """Every form in which a stored password could leak, named for the failure message (never the value)."""
    forms = {}
    for name, password in json.loads(secrets_file(state_dir).read_text()).items():
        for how, text in (("clear", password), ("url-encoded", quote(password, safe="")), ("quoted", quote(password))):
            forms[f"{name} password ({how})"] = text
    return forms


def leaks(text: str, forms: dict[str, str]) -> list[str]:
    return [name for name, secret in forms.items() if secret in text]


def database_text(db_url: str, database: str) -> dict[str, str]:
    """Every row of every table of `database`, as text: Dagster's runs, run configs, tags and events; MLflow's runs."""
    found = {}
    with psycopg.connect(database_url(db_url, database)) as conn:
        tables = conn.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_type = 'BASE TABLE' and table_schema not in ('pg_catalog', 'information_schema')"
        ).fetchall()
        for schema, table in tables:
            query = sql.SQL("select coalesce(string_agg(t::text, E'\\n'), '') from {} t").format(
                sql.Identifier(schema, table)
            )
            found[f"{database}.{schema}.{table}"] = conn.execute(query).fetchone()[0]
    return found


def test_no_password_in_event_logs_run_configs_compute_logs_mlflow_or_cli_output(demo_run, test_stack, stack_env):
    assert demo_run.returncode == 0, demo_run.stdout[-3000:] + demo_run.stderr[-3000:]
    forms = secret_forms(test_stack.state_dir)
    places: dict[str, str] = {}
    # The Dagster instance: runs (their run config, shown by the UI's launchpad and run page), tags, event log.
    # MLflow's backend store: params, tags, metrics of every run of the suite so far.
    for database in ("dagster", "mlflow"):
        places.update(database_text(stack_env["MOVIE_DB_URL"], database))
    assert places["dagster.public.event_logs"] and places["mlflow.public.params"], "no runs to search"
    # Compute logs (stdout/stderr of steps), the demo's event-log file and the services' own logs.
    for root in (test_stack.dagster_home, test_stack.state_dir):
        for path in root.rglob("*"):
            if path.is_file() and path.suffix in (".log", ".out", ".err", ".txt", ".complete", ""):
                if path.name not in ("secrets.json", "redis.conf") and "postgres" not in path.parts:
                    places[str(path)] = path.read_text(errors="replace")
    event_file = next(line for line in demo_run.stdout.splitlines() if line.startswith("full Dagster event log: "))
    places["demo event log"] = Path(event_file.split(": ", 1)[1]).read_text()
    places["demo output"] = demo_run.stdout + demo_run.stderr
    # What a user prints or pastes.
    env = {**os.environ, "MOVIE_PLATFORM_STATE_DIR": str(test_stack.state_dir)}
    for args in (("status",), ("env", "--redacted")):
        result = movie_platform_cli(*args, env=env, timeout=60)
        assert result.returncode == 0, result.stderr
        places[f"movie-platform {' '.join(args)}"] = result.stdout + result.stderr
    assert "MOVIE_DB_URL=" in places["movie-platform env --redacted"]

    found = {place: hits for place, text in places.items() if (hits := leaks(text, forms))}
    assert not found, f"passwords found in: {found}"
