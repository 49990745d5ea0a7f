"""The local Dagster instance's dagster.yaml: storage in PostgreSQL, its password read from the environment.

The file names the server, role and database, and takes the password from MOVIE_DAGSTER_PG_PASSWORD
(`movie-platform env` exports it): no secret is written to dagster.yaml, and the UI's instance
page, which shows the file's config, shows `env: MOVIE_DAGSTER_PG_PASSWORD` rather than a password.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

import yaml

PASSWORD_VAR = "MOVIE_DAGSTER_PG_PASSWORD"


def dagster_env(db_url: str) -> dict[str, str]:
    """The variables dagster.yaml reads: the password of MOVIE_DB_URL, decoded (none when it has none)."""
    password = urlsplit(db_url).password
    return {PASSWORD_VAR: unquote(password)} if password else {}


def storage_yaml(db_url: str, database: str) -> str:
    """`storage:` for the server and role of `db_url`, database `database`; strings JSON-quoted (valid YAML)."""
    parts = urlsplit(db_url)
    lines = [
        "storage:",
        "  postgres:",
        "    postgres_db:",
        f"      hostname: {json.dumps(parts.hostname or '127.0.0.1')}",
        f"      port: {parts.port or 5432}",
        f"      username: {json.dumps(unquote(parts.username or 'postgres'))}",
        f"      db_name: {json.dumps(database)}",
        # Dagster runs fail on `NOTIFY run_events, $1` with psycopg 3; psycopg2 is what they expect.
        "      scheme: postgresql+psycopg2",
    ]
    if parts.password:
        lines += ["      password:", f"        env: {PASSWORD_VAR}"]
    params = dict(parse_qsl(parts.query))
    if params:
        lines.append(f"      params: {json.dumps(params)}")
    return "\n".join(lines) + "\n"


INSTANCE_TEMPLATE = Path(__file__).resolve().parents[1] / "dagster.yaml"  # the one instance config (compose's too)
MONITOR_INTERVALS = ("poll_interval_seconds", "free_slots_after_run_end_seconds")


def instance_config(db_url: str, database: str = "dagster", monitor_interval_s: int | None = None) -> dict:
    """The repository's dagster.yaml with its documented substitutions: this stack's storage, and (for tests)
    shorter run-monitoring intervals. Everything else (run launcher, monitoring, concurrency) is the file's."""
    config = yaml.safe_load(INSTANCE_TEMPLATE.read_text())
    config["storage"] = yaml.safe_load(storage_yaml(db_url, database))["storage"]
    if monitor_interval_s is not None:
        config["run_monitoring"].update(dict.fromkeys(MONITOR_INTERVALS, monitor_interval_s))
    return config


def write_dagster_home(
    home: Path, db_url: str, database: str = "dagster", monitor_interval_s: int | None = None
) -> None:
    """The local instance: the repository's dagster.yaml, storage in this stack's PostgreSQL (like compose's).

    Run monitoring (in the daemon of `make dev`) fails a run whose worker died, which the launcher
    `RunWorkerCheckingLauncher` detects, and frees the pool slots of ended runs.
    """
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(
        f"# Written by `movie-platform up` from {INSTANCE_TEMPLATE.name} in the repository root: its storage is\n"
        "# this stack's PostgreSQL (password from MOVIE_DAGSTER_PG_PASSWORD); edit that file, not this one.\n"
        + yaml.safe_dump(instance_config(db_url, database, monitor_interval_s), sort_keys=False)
    )
