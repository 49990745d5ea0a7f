"""The local Dagster instance's dagster.yaml: storage in PostgreSQL, its password read from the environment.

The file names the server, role and database, and takes the password from MOVIE_DAGSTER_PG_PASSWORD
(`movie-platform env` exports it): no secret is written to dagster.yaml, and the UI's instance
page, which shows the file's config, shows `env: MOVIE_DAGSTER_PG_PASSWORD` rather than a password.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

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


def write_dagster_home(home: Path, db_url: str, database: str = "dagster", monitor_interval_s: int = 15) -> None:
    """The local instance keeps runs, events and schedules in PostgreSQL, like compose.

    Run monitoring (in the daemon of `make dev`) fails a run whose worker died, which the launcher
    `RunWorkerCheckingLauncher` detects, and frees the pool slots of ended runs, every `monitor_interval_s`.
    """
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(
        "# Written by `movie-platform up`; the compose twin is docker/dagster.yaml.\n"
        + storage_yaml(db_url, database)
        + "run_coordinator:\n"
        "  module: dagster.core.run_coordinator\n"
        "  class: QueuedRunCoordinator\n"
        "run_launcher:\n"
        "  module: movie_assets.automation.run_launcher\n"
        "  class: RunWorkerCheckingLauncher\n"
        "run_monitoring:  # a killed run must not keep its tmdb_api slot: see the compose twin\n"
        "  enabled: true\n"
        "  start_timeout_seconds: 180\n"
        "  cancel_timeout_seconds: 180\n"
        f"  poll_interval_seconds: {monitor_interval_s}\n"
        "  max_resume_run_attempts: 0\n"
        f"  free_slots_after_run_end_seconds: {monitor_interval_s}\n"
        "concurrency:\n"
        "  pools:\n"
        "    default_limit: 1  # the only pool is tmdb_api: one crawl at a time shares TMDB's rate limit\n"
        "telemetry:\n"
        "  enabled: false\n"
    )
